"""Deterministic weighted assignment: pure functions, no Django imports (see docs/metrics.md)."""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from fractions import Fraction

_SPACE = 1 << 64


def bucket_point(salt: str, user_key: str) -> int:
    """A uniform 64-bit integer from SHA-256(salt ":" user_key) (first 8 bytes, big-endian)."""
    digest = hashlib.sha256(f"{salt}:{user_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def assign_variant(salt: str, user_key: str, weights: Sequence[tuple[str, int]]) -> str:
    """The variant key for `user_key`, choosing among (key, weight) pairs in proportion to weight.

    Variants are ordered by key so the answer does not depend on the order they are passed in. The
    64-bit point is scaled to [0, total weight) with integer arithmetic (no float rounding) and the
    variant whose cumulative weight range contains it wins.
    """
    ordered = sorted((key, weight) for key, weight in weights if weight > 0)
    if not ordered:
        raise ValueError("at least one variant with a positive weight is required")
    total = sum(weight for _, weight in ordered)
    target = bucket_point(salt, user_key) * total // _SPACE
    upper = 0
    for key, weight in ordered:
        upper += weight
        if target < upper:
            return key
    raise AssertionError("unreachable: target < total")  # pragma: no cover


@functools.lru_cache(maxsize=4096)  # a few distinct range ends per process; Fraction arithmetic is not free
def unit_threshold(fraction: float) -> int:
    """ceil(fraction × 2^64), exactly: a double is a binary fraction, so Fraction(fraction) is exact."""
    return math.ceil(Fraction(fraction) * _SPACE)


def in_unit_range(point: int, start: float, end: float) -> bool:
    """True when the 64-bit `point` lies in [start, end) of the unit interval: ceil(start·2^64) ≤ point <
    ceil(end·2^64). With end = 1 every point below 2^64 is inside."""
    return unit_threshold(start) <= point < unit_threshold(end)
