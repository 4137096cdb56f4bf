"""Fixed-window counters: `hit(scope, client, rate)` counts one request and says whether it is allowed.

Where the count lives:
- `REDIS_URL` set: Redis `INCR` + `EXPIRE` in one MULTI/EXEC (atomic on the server, no database write).
- otherwise: the `ratelimit_ratecounter` table, one `INSERT … ON CONFLICT DO UPDATE … RETURNING` per hit
  (with the purge of ended windows in the same statement on PostgreSQL).

Not Django's cache API: `cache.incr` is a read then a write on the database cache (two workers can both
read 41 and both write 42), and on Redis it can recreate an expired key without a TTL.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import SimpleRateThrottle

from signaldash.ratelimit import queries


@dataclass(frozen=True, slots=True)
class Rate:
    limit: int
    period_s: int

    @classmethod
    def parse(cls, rate: str) -> Rate:
        """DRF rate syntax: `N/s`, `N/min`, `N/hour`, `N/day` (also `N/15min`: a multiple of the unit)."""
        num, _, period = rate.partition("/")
        digits = "".join(ch for ch in period if ch.isdigit())
        unit = period[len(digits) :]
        seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit[:1]]
        return cls(limit=int(num), period_s=seconds * int(digits or 1))


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    count: int
    retry_after_s: int  # seconds until the window ends


def client_id(value: str) -> str:
    """A fixed-length, charset-safe id for a client value (a user name, an address)."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _bucket(scope: str, client: str, window: int) -> str:
    return f"{scope}:{client}:{window}"


def _redis_hit(bucket: str, ttl_s: int) -> int:
    client = cache._cache.get_client(write=True)  # django.core.cache.backends.redis.RedisCacheClient
    key = cache.make_key(f"rate:{bucket}")
    with client.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, ttl_s)
        count, _ = pipe.execute()
    return int(count)


def uses_redis() -> bool:
    return bool(getattr(settings, "REDIS_URL", None))


def hit(scope: str, client: str, rate: Rate, *, now: float | None = None) -> Verdict:
    """Count one request of `client` under `scope` and decide it against `rate`."""
    now = time.time() if now is None else now
    window = int(now // rate.period_s)
    window_end = (window + 1) * rate.period_s
    bucket = _bucket(scope, client, window)
    if uses_redis():
        count = _redis_hit(bucket, window_end - int(now) + 1)
    else:
        # Ended windows are dropped by every hit rather than now and then, so a request costs the same
        # statements whenever it comes (query counts are pinned by tests).
        count = queries.counter_hit_and_purge(bucket=bucket, window_end=window_end, now=int(now))
    return Verdict(allowed=count <= rate.limit, count=count, retry_after_s=max(1, math.ceil(window_end - now)))


def reset(scope: str, client: str, rate: Rate, *, now: float | None = None) -> None:
    """Forget the current window's count (e.g. after a successful login)."""
    now = time.time() if now is None else now
    bucket = _bucket(scope, client, int(now // rate.period_s))
    if uses_redis():
        cache._cache.get_client(write=True).delete(cache.make_key(f"rate:{bucket}"))
    else:
        queries.counter_delete(bucket=bucket)


class FixedWindowThrottle(SimpleRateThrottle):
    """DRF throttle on `hit()`: constant work per request at any rate, one limit across all workers.

    Subclasses set `scope` (a key of `DEFAULT_THROTTLE_RATES`) and `client_key(request)` (None: not throttled).
    """

    def get_rate(self) -> str | None:
        from rest_framework.settings import api_settings

        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)  # read per request: overrides take effect

    def client_key(self, request) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def allow_request(self, request, view) -> bool:
        client = self.client_key(request)
        if self.rate is None or client is None:
            return True
        verdict = hit(self.scope, client, Rate.parse(self.rate))
        self._wait = verdict.retry_after_s
        return verdict.allowed

    def wait(self) -> float:
        return self._wait
