"""The fast path of `POST /api/track` and `POST /api/track/batch`: the whole body decoded by msgspec into typed
structs that carry the strict rules, for bodies of plainly valid events; anything else is for the DRF path.

`batch_decode(body, now)` returns the events of a batch body as columns (`PlainEvents`), and `event_decode` the one
event of a `/api/track` body as an `EventIn`, or None when the body is not plainly valid in every part (then the
view parses it as before: `LimitedJSONParser`, `fast_validation.plain_event`, the serializer), so every error
message and every answer comes from the one implementation. A plain event is what `plain_event` accepts plus
`props` objects that `PropsField` accepts: short ASCII strings (experiment, variant, user key with no leading or
trailing whitespace), `exposure` or `conversion`, a slug metric on conversions only, a finite number, an RFC 3339
time with an offset no more than 5 minutes ahead, a plain `event_id`, no `covariates`, no unknown keys. The
property test (tests/tracking/test_fast_batch.py) checks that both paths give the same answers and rows.

Strings are checked by msgspec in C (lengths and patterns); a duplicate key keeps the last value, as `json.loads`
does. What is left per event in Python is the cross-field rule (a metric only on conversions), the time (parsed
once per distinct spelling) and non-empty `props`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from tracking.fields import PROPS_MAX_BYTES, props_problem
from tracking.services import EventIn

BATCH_MAX_EVENTS = 1000  # tracking.api.BATCH_MAX_EVENTS
_FUTURE_TOLERANCE = timedelta(minutes=5)  # tracking.api.FUTURE_TOLERANCE_S

# ASCII without NUL; a user key neither starts nor ends with whitespace (Python's \s on ASCII: \t-\r, \x1c-\x1f,
# space), the rule of tracking.fields.USER_KEY_RE.
_TEXT = r"\A[\x01-\x7f]+\Z"
_USER_KEY = r"\A[\x21-\x7f](?:[\x01-\x7f]*[\x21-\x7f])?\Z"
_SLUG = r"\A[-a-zA-Z0-9_]+\Z"
_EVENT_ID = r"\A[A-Za-z0-9._:-]+\Z"
# tracking.fast_validation._PLAIN_TIME: UTC `Z` or a ±HH:MM offset, whole or fractional seconds.
_TIME = r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})\Z"


class _Event(msgspec.Struct, forbid_unknown_fields=True):
    experiment: Annotated[str, Meta(min_length=1, max_length=100, pattern=_TEXT)]
    variant: Annotated[str, Meta(min_length=1, max_length=64, pattern=_TEXT)]
    user_key: Annotated[str, Meta(min_length=1, max_length=255, pattern=_USER_KEY)]
    event_type: Literal["exposure", "conversion"]
    metric: Annotated[str, Meta(max_length=100, pattern=_SLUG)] | None = None
    value: float | None = None  # an integer becomes a float, as StrictNumberField stores it; never a boolean
    occurred_at: Annotated[str, Meta(pattern=_TIME)] | None = None
    props: dict[str, Any] | None = None
    event_id: Annotated[str, Meta(min_length=1, max_length=100, pattern=_EVENT_ID)] | None = None


class _Batch(msgspec.Struct, forbid_unknown_fields=True):
    events: Annotated[list[_Event], Meta(max_length=BATCH_MAX_EVENTS)]


_batch_decoder = msgspec.json.Decoder(_Batch)
_event_decoder = msgspec.json.Decoder(_Event)
# What msgspec raises for a body it does not take whole (malformed, another shape, a broken rule, a lone
# surrogate, nesting beyond its stack): the body is then the DRF path's to judge.
_NOT_PLAIN_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError, ValueError)


@dataclass(frozen=True, slots=True)
class PlainEvents:
    """The events of a plainly valid batch as columns (index i is the body's i-th event). `props` holds the
    compact JSON text of each event's props (`"{}"` for none); `props_values` the decoded objects."""

    experiment: list[str]
    variant: list[str]
    user_key: list[str]
    event_type: list[str]
    metric: list[str | None]
    value: list[float | None]
    occurred_at: list[datetime]
    props: list[str]
    props_values: list[dict[str, Any]]
    event_id: list[str | None]

    def __len__(self) -> int:
        return len(self.user_key)

    def events(self) -> list[EventIn]:
        """The same events as `EventIn`s (for the general path)."""
        return [
            EventIn(
                experiment=self.experiment[i],
                variant=self.variant[i],
                user_key=self.user_key[i],
                event_type=self.event_type[i],
                metric=self.metric[i],
                value=self.value[i],
                occurred_at=self.occurred_at[i],
                props=self.props_values[i],
                event_id=self.event_id[i],
            )
            for i in range(len(self))
        ]


def _time(text: str, now: datetime) -> datetime | None:
    """The aware time of a plainly spelled `occurred_at`, or None when it is not plainly valid (out of range in
    UTC, or more than 5 minutes ahead of `now`)."""
    try:
        parsed = datetime.fromisoformat(text)
        parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return None if parsed - now > _FUTURE_TOLERANCE else parsed


def _props_text(props: dict[str, Any]) -> str | None:
    """The compact JSON text of a non-empty `props` that PropsField accepts, else None."""
    if props_problem(props):
        return None
    try:
        text = json.dumps(props, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError:  # pragma: no cover - msgspec never decodes NaN or Infinity
        return None
    return text if len(text.encode("utf-8")) <= PROPS_MAX_BYTES else None


def _columns(events: list[_Event], now: datetime) -> PlainEvents | None:
    times: dict[str | None, datetime | None] = {None: now}
    props: list[str] = []
    props_values: list[dict[str, Any]] = []
    for event in events:
        if event.metric is not None and event.event_type == "exposure":
            return None
        spelled = event.occurred_at
        if spelled not in times:
            times[spelled] = _time(spelled, now)
        if times[spelled] is None:
            return None
        if event.props:
            text = _props_text(event.props)
            if text is None:
                return None
            props.append(text)
            props_values.append(event.props)
        else:
            props.append("{}")
            props_values.append({})
    return PlainEvents(
        experiment=[e.experiment for e in events],
        variant=[e.variant for e in events],
        user_key=[e.user_key for e in events],
        event_type=[e.event_type for e in events],
        metric=[e.metric for e in events],
        value=[e.value for e in events],
        occurred_at=[times[e.occurred_at] for e in events],  # type: ignore[misc]
        props=props,
        props_values=props_values,
        event_id=[e.event_id for e in events],
    )


def batch_decode(body: bytes, now: datetime) -> PlainEvents | None:
    """The events of a `{"events": [...]}` body whose every part is plainly valid, else None."""
    try:
        batch = _batch_decoder.decode(body)
    except _NOT_PLAIN_ERRORS:
        return None
    return _columns(batch.events, now)


def event_decode(body: bytes, now: datetime) -> EventIn | None:
    """The one event of a plainly valid `/api/track` body, else None."""
    try:
        event = _event_decoder.decode(body)
    except _NOT_PLAIN_ERRORS:
        return None
    columns = _columns([event], now)
    return columns.events()[0] if columns is not None else None
