"""Fixed-window counters: `hit(scope, client, rate)` counts one request and says whether it is allowed.

Where the count lives:
- `REDIS_URL` set: Redis `INCR` + `EXPIRE` in one MULTI/EXEC (atomic on the server, no database write).
- otherwise: the `ratelimit_ratecounter` table, one `INSERT … ON CONFLICT DO UPDATE … RETURNING` per hit
  (with the purge of ended windows in the same statement on PostgreSQL), or per lease of up to LEASE_MAX
  counts for a busy key.

Not Django's cache API: `cache.incr` is a read then a write on the database cache (two workers can both
read 41 and both write 42), and on Redis it can recreate an expired key without a TTL.
"""

from __future__ import annotations

import hashlib
import math
import threading
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


# Leases (database counters): a process that expects many hits in a window claims a run of counts with
# one upsert (`count + n`) and hands them out locally, so a busy key costs one statement per LEASE_MAX
# requests instead of one per request, and its counter row stops being a hot row that serialises every
# request. A lease is at most 1/LEASE_SHARE of what the process last saw left in the window (so with
# little left, or a small limit, every hit is counted in the database: exact, as without leases). Every
# count is still handed out once across all processes and a count above the limit is refused, so the
# limit is never exceeded; counts leased by a process and not used by the window's end are lost, so a
# key near its limit may be refused up to a few requests early.
LEASE_MAX = 64
LEASE_SHARE = 64
_LEASES_MAX = 4096
_leases: dict[str, list[int]] = {}  # bucket -> [next count to hand out, last count of the lease, last seen]
_leases_lock = threading.Lock()
_lease_fetch_lock = threading.Lock()


def _lease_take(bucket: str) -> int | None:
    """The next leased count of `bucket` in this process, or None (no lease, or it is used up)."""
    with _leases_lock:
        lease = _leases.get(bucket)
        if lease is None or lease[0] > lease[1]:
            return None
        lease[0] += 1
        return lease[0] - 1


def _lease_size(bucket: str, limit: int) -> int:
    with _leases_lock:
        lease = _leases.get(bucket)
    seen = lease[2] if lease else 0
    return max(1, min(LEASE_MAX, (limit - seen) // LEASE_SHARE))


def _db_hit(bucket: str, window_end: int, now: float, limit: int) -> int:
    count = _lease_take(bucket)
    if count is not None:
        return count
    if _lease_size(bucket, limit) == 1:  # little left, or a small limit: count this hit alone
        return _db_lease(bucket, window_end, now, 1)
    with _lease_fetch_lock:  # one thread of the process takes the next lease; the others then use it
        count = _lease_take(bucket)
        if count is not None:
            return count
        return _db_lease(bucket, window_end, now, _lease_size(bucket, limit))


def _db_lease(bucket: str, window_end: int, now: float, size: int) -> int:
    """Claim `size` counts in the database; this hit takes the first, the rest are left for this process."""
    # Ended windows are dropped by every upsert rather than now and then, so a request costs the same
    # statements whenever it comes (query counts are pinned by tests).
    last = queries.counter_hit_and_purge(bucket=bucket, window_end=window_end, now=int(now), hits=size)
    with _leases_lock:
        if len(_leases) >= _LEASES_MAX:
            _leases.clear()
        _leases[bucket] = [last - size + 2, last, last]
    return last - size + 1


def leases_clear() -> None:
    """Forget this process's leases (their counts are then simply unused)."""
    with _leases_lock:
        _leases.clear()


def hit(scope: str, client: str, rate: Rate, *, now: float | None = None) -> Verdict:
    """Count one request of `client` under `scope` and decide it against `rate`."""
    now = time.time() if now is None else now
    window = int(now // rate.period_s)
    window_end = (window + 1) * rate.period_s
    bucket = _bucket(scope, client, window)
    if uses_redis():
        count = _redis_hit(bucket, window_end - int(now) + 1)
    else:
        count = _db_hit(bucket, window_end, now, rate.limit)
    return Verdict(allowed=count <= rate.limit, count=count, retry_after_s=max(1, math.ceil(window_end - now)))


def reset(scope: str, client: str, rate: Rate, *, now: float | None = None) -> None:
    """Forget the current window's count (e.g. after a successful login)."""
    now = time.time() if now is None else now
    bucket = _bucket(scope, client, int(now // rate.period_s))
    if uses_redis():
        cache._cache.get_client(write=True).delete(cache.make_key(f"rate:{bucket}"))
    else:
        with _leases_lock:
            _leases.pop(bucket, None)
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
