"""A fast path for the common, plainly valid batch item; anything else goes to the DRF serializer.

Validating 1,000 batch items through `EventInputSerializer` costs more than storing them. Most items
are plain: four to six short ASCII strings and maybe a number. `plain_event` accepts exactly such
items and returns the same `EventIn` the serializer would; it returns None for anything it is not
sure about (including every invalid item), so error messages always come from the serializer. A
property test (tests/tracking/test_validation_fuzz.py) checks that it never disagrees.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

from tracking.fields import EVENT_ID_RE, USER_KEY_RE
from tracking.services import EventIn

_SLUG = re.compile(r"[-a-zA-Z0-9_]+")
_KEYS = frozenset(
    {"experiment", "variant", "user_key", "event_type", "metric", "value", "props", "occurred_at", "event_id"}
)
_LIMITS = (("experiment", 100), ("variant", 64), ("user_key", 255))
_NOT_PLAIN = object()
# The plain spelling of a time (what exporters write): UTC `Z` or a ±HH:MM offset, whole or fractional
# seconds. Anything else (no offset, other separators, leap seconds...) is the serializer's to judge.
_PLAIN_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")
_FUTURE_TOLERANCE = timedelta(minutes=5)  # tracking.api.FUTURE_TOLERANCE_S


def _plain_text(value: object, max_length: int) -> bool:
    return type(value) is str and 0 < len(value) <= max_length and value.isascii() and "\x00" not in value


def _plain_metric(event_type: object, metric: object) -> bool:
    if event_type == "conversion":
        return metric is None or (type(metric) is str and len(metric) <= 100 and _SLUG.fullmatch(metric) is not None)
    return event_type == "exposure" and metric is None


def _plain_value(value: object) -> object:
    """The value as the serializer stores it, or _NOT_PLAIN."""
    if value is None:
        return None
    if type(value) not in (int, float) or abs(value) > 1e300 or not math.isfinite(value):
        return _NOT_PLAIN
    return float(value)


def _plain_time(value: object, now: datetime) -> object:
    """None for absent/null (the default time), an aware datetime for a plainly spelled time that is not
    too far in the future and within datetime's range in UTC, else _NOT_PLAIN."""
    if value is None:
        return None
    if type(value) is not str or not _PLAIN_TIME.fullmatch(value):
        return _NOT_PLAIN
    try:
        parsed = datetime.fromisoformat(value)
        parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return _NOT_PLAIN
    if parsed - now > _FUTURE_TOLERANCE:
        return _NOT_PLAIN
    return parsed


def _plain_extras(item: dict) -> bool:
    """event_id absent/null or valid; props absent, null or exactly {} (any other value, even an empty
    list or false, is for the serializer)."""
    event_id = item.get("event_id")
    if event_id is not None and not (type(event_id) is str and len(event_id) <= 100 and EVENT_ID_RE.match(event_id)):
        return False
    props = item.get("props")
    return props is None or (type(props) is dict and not props)


def plain_event(item: object, now: datetime) -> EventIn | None:
    """The validated event for a plainly valid item, else None (let the serializer decide)."""
    if type(item) is not dict or not _KEYS.issuperset(item):
        return None
    for name, max_length in _LIMITS:
        if not _plain_text(item.get(name), max_length):
            return None
    if not USER_KEY_RE.match(item["user_key"]) or not _plain_metric(item.get("event_type"), item.get("metric")):
        return None
    value = _plain_value(item.get("value"))
    if value is _NOT_PLAIN or not _plain_extras(item):
        return None
    occurred_at = _plain_time(item.get("occurred_at"), now)
    if occurred_at is _NOT_PLAIN:
        return None
    return EventIn(
        experiment=item["experiment"],
        variant=item["variant"],
        user_key=item["user_key"],
        event_type=item["event_type"],
        metric=item.get("metric"),
        value=value,
        occurred_at=occurred_at or now,
        props={},
        event_id=item.get("event_id"),
    )
