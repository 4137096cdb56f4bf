"""Per-API-key request throttling, shared by every app server through the configured cache."""

from __future__ import annotations

from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from tracking.models import ServiceAPIKey


class APIKeyRateThrottle(SimpleRateThrottle):
    """At most N requests per API key per fixed window, rate `DEFAULT_THROTTLE_RATES["api_key"]`
    (env `SIGNALDASH_THROTTLE_RATE`, DRF syntax such as `6000/min`).

    A fixed-window counter (`cache.add` + `cache.incr`, atomic on Redis) instead of DRF's default
    timestamp history: constant work per request at any rate, and correct across app servers that
    share a Redis cache. A batch counts as one request. Requests without an API key are not throttled
    here (they are refused by authentication first).
    """

    scope = "api_key"

    def get_rate(self) -> str | None:
        # Read at request time so settings overrides (and tests) take effect.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request, view) -> bool:
        if self.rate is None or not isinstance(request.auth, ServiceAPIKey):
            return True
        now = self.timer()
        window = int(now // self.duration)
        key = f"throttle:{self.scope}:{request.auth.pk}:{window}"
        self.cache.add(key, 0, timeout=self.duration + 1)
        try:
            count = self.cache.incr(key)
        except ValueError:  # expired between add and incr
            self.cache.set(key, 1, timeout=self.duration + 1)
            count = 1
        self._wait = (window + 1) * self.duration - now
        return count <= self.num_requests

    def wait(self) -> float:
        return self._wait
