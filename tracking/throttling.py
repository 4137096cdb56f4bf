"""Per-API-key request throttling, one limit across every worker and app server."""

from __future__ import annotations

from signaldash.ratelimit.counters import FixedWindowThrottle
from tracking.models import ServiceAPIKey


class APIKeyRateThrottle(FixedWindowThrottle):
    """At most N requests per API key per fixed window, rate `DEFAULT_THROTTLE_RATES["api_key"]`
    (env `SIGNALDASH_THROTTLE_RATE`, DRF syntax such as `6000/min`).

    Counted by `signaldash.ratelimit.counters` (an atomic database upsert, or Redis INCR when `REDIS_URL`
    is set), so 4 workers or 4 app servers share one count. A batch counts as one request. Requests without
    an API key are not throttled here (they are refused by authentication first).
    """

    scope = "api_key"

    def client_key(self, request) -> str | None:
        return f"key-{request.auth.pk}" if isinstance(request.auth, ServiceAPIKey) else None
