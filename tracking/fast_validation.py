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
from datetime import datetime

from tracking.services import EventIn

_SLUG = re.compile(r"[-a-zA-Z0-9_]+")
_KEYS = frozenset({"experiment", "variant", "user_key", "event_type", "metric", "value", "props", "occurred_at"})
_LIMITS = (("experiment", 100), ("variant", 64), ("user_key", 255))


def _plain_text(value: object, max_length: int) -> bool:
    return type(value) is str and 0 < len(value) <= max_length and value.isascii() and "\x00" not in value


def plain_event(item: object, now: datetime) -> EventIn | None:
    """The validated event for a plainly valid item, else None (let the serializer decide)."""
    if type(item) is not dict or not _KEYS.issuperset(item):
        return None
    for name, max_length in _LIMITS:
        if not _plain_text(item.get(name), max_length):
            return None
    event_type = item.get("event_type")
    metric = item.get("metric")
    if event_type == "conversion":
        if metric is not None and not (type(metric) is str and len(metric) <= 100 and _SLUG.fullmatch(metric)):
            return None
    elif event_type != "exposure" or metric is not None:
        return None
    value = item.get("value")
    if value is not None:
        if type(value) not in (int, float) or abs(value) > 1e300 or not math.isfinite(value):
            return None
        value = float(value)
    if item.get("occurred_at") is not None or item.get("props"):
        return None  # parsing times and checking props is the serializer's job
    return EventIn(
        experiment=item["experiment"],
        variant=item["variant"],
        user_key=item["user_key"],
        event_type=event_type,
        metric=metric,
        value=value,
        occurred_at=now,
        props={},
    )
