"""The readout throttle (API, page, exports) and login attempt limits."""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from signaldash.ratelimit.counters import FixedWindowThrottle, Rate, hit

READOUT_SCOPE = "readout"


def _readout_client(request) -> str | None:
    """Per API key when one is used, otherwise per logged-in user."""
    from tracking.models import ServiceAPIKey

    auth = getattr(request, "auth", None)
    if isinstance(auth, ServiceAPIKey):
        return f"key-{auth.pk}"
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user-{user.pk}"
    return None


class ReadoutRateThrottle(FixedWindowThrottle):
    """Readout API: `DEFAULT_THROTTLE_RATES["readout"]` (env `SIGNALDASH_READOUT_THROTTLE_RATE`) per key or user."""

    scope = READOUT_SCOPE

    def client_key(self, request) -> str | None:
        return _readout_client(request)


def readout_throttled(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Function views (readout page, CSV, bundle, narrative): the same budget as the readout API, 429 beyond it."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        client = _readout_client(request)
        rate = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"].get(READOUT_SCOPE)
        if client is not None and rate:
            verdict = hit(READOUT_SCOPE, client, Rate.parse(rate))
            if not verdict.allowed:
                response = JsonResponse(
                    {"error": "throttled", "detail": f"Too many readout requests; retry in {verdict.retry_after_s} s."},
                    status=429,
                )
                response["Retry-After"] = str(verdict.retry_after_s)
                return response
        return view(request, *args, **kwargs)

    return wrapped
