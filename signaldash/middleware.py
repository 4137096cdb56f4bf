"""Request-level guards that turn two classes of failure into clear answers instead of 500s.

`RequestBodyGuardMiddleware` (early in MIDDLEWARE, before anything reads the body):
- a body sent with `Transfer-Encoding` and no `Content-Length` is answered 411: Django reads such a
  body as empty, so an API client would get a misleading answer about data it did send;
- a `charset` that is not an allowed text encoding (tracking/parsers.py `TEXT_CHARSETS`) is 415
  without decoding anything, and form posts must be UTF-8 (Django's own rule for urlencoded forms;
  it raises on anything else from inside the CSRF check, which used to end as a 500).

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

from django.core.signals import got_request_exception
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

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
        detail = "The database is unavailable; retry later."
        if _is_api(request):
            response = JsonResponse({"error": "database_unavailable", "detail": detail}, status=503)
            self._log_api(request, response, exc)
        else:
            # Rendered without the request: context processors would look up the user in the database.
            response = HttpResponse(render_to_string("503.html"), status=503)
            page_logger.warning("database unavailable: %s %s (%s)", request.method, request.path, type(exc).__name__)
        response["Retry-After"] = str(RETRY_AFTER_S)
        response["Cache-Control"] = "no-store"
        return response

    @staticmethod
    def _log_api(request: HttpRequest, response: HttpResponse, exc: Exception) -> None:
        api_request_log(
            request,
            response,
            request_id=request_id(request),
            started=getattr(request, "_signaldash_started", time.perf_counter()),
            outcome="database_unavailable",
            level=logging.WARNING,
            exception=type(exc).__name__,
        )
