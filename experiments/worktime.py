"""Working-time arithmetic for review SLAs. Pure: no Django imports.

Saturdays and Sundays do not count; every weekday counts in full (24 hours), so "2 working days"
is 48 hours of weekday time. Public holidays are not modelled.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

WORKING_DAY = timedelta(days=1)


def working_time_between(start: datetime, end: datetime) -> timedelta:
    """Weekday time elapsed from `start` to `end` (both aware, same zone); zero if end <= start."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("working_time_between needs timezone-aware datetimes")
    end = end.astimezone(start.tzinfo)
    total = timedelta(0)
    cursor = start
    while cursor < end:
        next_midnight = datetime.combine(cursor.date() + timedelta(days=1), time.min, tzinfo=cursor.tzinfo)
        segment_end = min(next_midnight, end)
        if cursor.weekday() < 5:
            total += segment_end - cursor
        cursor = segment_end
    return total


def working_days_between(start: datetime, end: datetime) -> float:
    return working_time_between(start, end) / WORKING_DAY
