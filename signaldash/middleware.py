"""Request-level guards that turn two classes of failure into clear answers instead of 500s.

`RequestBodyGuardMiddleware` (early in MIDDLEWARE, before anything reads the body):
- a body sent with `Transfer-Encoding` and no `Content-Length` is answered 411: Django reads such a
  body as empty, so an API client would get a misleading answer about data it did send;
- a `charset` that is not an allowed text encoding (tracking/parsers.py `TEXT_CHARSETS`) is 415
  without decoding anything, and form posts must be UTF-8 (Django's own rule for urlencoded forms;
  it raises on anything else from inside the CSRF check, which used to end as a 500).

`ServiceAPIMiddleware` (right after the body guard): a request without cookies to a key-authenticated service
endpoint (`tracking.api.ServiceAPIView`: tracking and assignment) skips the browser middleware below it and
gets exactly the answer that middleware would have left (see the class).

`DatabaseUnavailableMiddleware` (outermost): when the database cannot be reached or gives up
(`OperationalError`, `InterfaceError`: refused, connect timeout, statement timeout, shutdown), the
API answers 503 JSON `{"error": "database_unavailable", ...}` and pages a 503 page, both with
`Retry-After`. API failures are logged as one structured `signaldash.api` line with the fields of
the request log (tracking/api.py), since the view's own log line is never reached.
"""

from __future__ import annotations

import logging
import sys
import time

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.exception import response_for_exception
from django.core.signals import got_request_exception
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.urls import Resolver404, ResolverMatch, get_resolver
from django.utils.cache import patch_vary_headers

from tracking.parsers import declared_charset, text_charset
from tracking.request_log import api_request_log, request_id

page_logger = logging.getLogger("signaldash.request")

API_PREFIX = "/api/"
RETRY_AFTER_S = 5
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_UNAVAILABLE = (OperationalError, InterfaceError)
_FAILURE_ATTR = "_signaldash_database_failure"


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


def _error(request: HttpRequest, status: int, code: str, detail: str) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"error": code, "detail": detail}, status=status)
    return HttpResponse(f"{detail}\n", status=status, content_type="text/plain; charset=utf-8")


class RequestBodyGuardMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        refusal = self._refusal(request)
        return refusal if refusal is not None else self.get_response(request)

    @staticmethod
    def _refusal(request: HttpRequest) -> HttpResponse | None:
        meta = request.META
        if meta.get("HTTP_TRANSFER_ENCODING") and not meta.get("CONTENT_LENGTH"):
            return _error(
                request, 411, "length_required", "Send the body with a Content-Length header (no chunked encoding)."
            )
        content_type = meta.get("CONTENT_TYPE", "")
        charset = declared_charset(content_type)
        if charset is None:
            return None
        canonical = text_charset(charset)
        if canonical is None:
            return _error(request, 415, "unsupported_media_type", f"Unsupported charset {charset[:40]!r}.")
        if content_type.split(";", 1)[0].strip().lower() in _FORM_TYPES and canonical != "utf-8":
            return _error(request, 415, "unsupported_media_type", "Form data must be UTF-8 encoded.")
        return None


def _remember_database_failure(sender, request=None, **kwargs) -> None:
    """Marks the request when an inner middleware or view failed on the database (see below)."""
    exc = sys.exc_info()[1]
    if request is not None and isinstance(exc, _UNAVAILABLE):
        setattr(request, _FAILURE_ATTR, exc)


class DatabaseUnavailableMiddleware:
    """503 instead of 500 when the database is unavailable.

    A view's exception arrives in `process_exception`. An exception raised inside another middleware
    (the session or user lookup) has already been turned into a 500 response by Django when it gets
    here, so the `got_request_exception` signal marks the request and `__call__` replaces the 500.
    """

    def __init__(self, get_response):
        self.get_response = get_response
        got_request_exception.connect(_remember_database_failure, dispatch_uid="signaldash-database-failure")

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request._signaldash_started = time.perf_counter()
        response = self.get_response(request)
        failure = getattr(request, _FAILURE_ATTR, None)
        if failure is not None and response.status_code >= 500:
            return self._unavailable(request, failure)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, _UNAVAILABLE):
            return self._unavailable(request, exception)
        return None

    def _unavailable(self, request: HttpRequest, exc: Exception) -> HttpResponse:
        return database_unavailable_response(request, exc)


def database_unavailable_response(request: HttpRequest, exc: Exception) -> HttpResponse:
    """The 503 answer (and its log line) for a request that failed on the database."""
    detail = "The database is unavailable; retry later."
    if _is_api(request):
        response = JsonResponse({"error": "database_unavailable", "detail": detail}, status=503)
        api_request_log(
            request,
            response,
            request_id=request_id(request),
            started=getattr(request, "_signaldash_started", time.perf_counter()),
            outcome="database_unavailable",
            level=logging.WARNING,
            exception=type(exc).__name__,
        )
    else:
        # Rendered without the request: context processors would look up the user in the database.
        response = HttpResponse(render_to_string("503.html"), status=503)
        page_logger.warning("database unavailable: %s %s (%s)", request.method, request.path, type(exc).__name__)
    response["Retry-After"] = str(RETRY_AFTER_S)
    response["Cache-Control"] = "no-store"
    return response


_MATCHES_MAX = 256


def _is_service_view(match: ResolverMatch) -> bool:
    from tracking.api import ServiceAPIView

    view = match.func
    cls = getattr(view, "cls", None)
    return (
        isinstance(cls, type)
        and issubclass(cls, ServiceAPIView)
        and getattr(view, "csrf_exempt", False)  # what CsrfViewMiddleware.process_view lets through
        and getattr(view, "login_required", True) is False  # what LoginRequiredMiddleware lets through
        and not match.args
        and not match.kwargs
    )


class ServiceAPIMiddleware:
    """The service API (API keys, JSON) without the browser middleware, for requests that carry no cookie.

    Sessions, messages, CSRF, the session user and the login redirect are for browser pages; a service endpoint
    (`tracking.api.ServiceAPIView`: csrf-exempt, `login_not_required`, authenticated by its API key) uses none of
    them, and for a request without cookies (no `Cookie` header, or an empty one) they change nothing but three
    response headers. Such a
    request is answered here: the view is called as Django's handler calls it (its exceptions answered as
    `DatabaseUnavailableMiddleware.process_exception` or Django's exception handling would), and the headers the
    skipped middleware adds are added in its order — `X-Frame-Options` (XFrameOptionsMiddleware), `Content-Length`
    (CommonMiddleware; a resolved path never gets its slash redirect) and `Vary: Cookie` (SessionMiddleware: the
    login middleware reads the session user on every resolved request). Everything else — another path, any
    cookie, a per-request urlconf, a Host that is not allowed — takes the whole chain. Middleware above this one
    (security headers, the body guard, the database-unavailable answer) applies to both.
    tests/tracking/test_service_middleware.py compares every answer with the whole chain's.
    """

    def __init__(self, get_response):
        self.get_response = get_response
        self._matches: dict[str, tuple[object, ResolverMatch | None]] = {}

    def __call__(self, request: HttpRequest) -> HttpResponse:
        match = self._service_match(request)
        if match is None:
            return self.get_response(request)
        request.resolver_match = match
        try:
            response = match.func(request)
            if hasattr(response, "render") and callable(response.render):
                response = response.render()
        except _UNAVAILABLE as exc:
            response = database_unavailable_response(request, exc)
        except Exception as exc:  # what convert_exception_to_response does below the skipped middleware
            response = response_for_exception(request, exc)
        return self._browser_headers(response)

    def _service_match(self, request: HttpRequest) -> ResolverMatch | None:
        path = request.path_info
        if not path.startswith(API_PREFIX) or request.META.get("HTTP_COOKIE") or hasattr(request, "urlconf"):
            return None
        resolver = get_resolver()
        cached = self._matches.get(path)
        if cached is None or cached[0] is not resolver:
            try:
                match = resolver.resolve(path)
            except Resolver404:
                match = None
            if match is not None and not _is_service_view(match):
                match = None
            if len(self._matches) >= _MATCHES_MAX:
                self._matches.clear()
            self._matches[path] = cached = (resolver, match)
        if cached[1] is None:
            return None
        try:
            request.get_host()  # CommonMiddleware's check; a refused Host gets the whole chain's 400
        except DisallowedHost:
            return None
        return cached[1]

    @staticmethod
    def _browser_headers(response: HttpResponse) -> HttpResponse:
        if response.get("X-Frame-Options") is None and not getattr(response, "xframe_options_exempt", False):
            response.headers["X-Frame-Options"] = getattr(settings, "X_FRAME_OPTIONS", "DENY").upper()
        if not response.streaming and not response.has_header("Content-Length"):
            response.headers["Content-Length"] = str(len(response.content))
        patch_vary_headers(response, ("Cookie",))
        return response
