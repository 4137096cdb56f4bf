"""Property: no request body, however malformed, makes the tracking API answer 5xx."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.django_db

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Any text, including lone surrogates, NUL and other control characters.
any_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=40)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4), max_leaves=12
)
extreme_times = st.datetimes(  # the default range is year 1 to 9999
    timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=14)), dt.timezone(dt.timedelta(hours=-12))]),
).map(lambda d: d.isoformat())


def field(valid):
    return st.one_of(valid, json_values)


event_like = st.fixed_dictionaries(
    {},
    optional={
        "experiment": field(st.sampled_from(["checkout", "stopped", "nope", ""])),
        "variant": field(st.sampled_from(["control", "treatment", "ghost"])),
        "user_key": field(any_text),
        "event_type": field(st.sampled_from(["exposure", "conversion"])),
        "metric": field(st.sampled_from(["purchase", "signup", "", "not a slug"]) | any_text),
        "value": field(st.floats() | st.integers()),
        "occurred_at": field(extreme_times | any_text),
        "props": field(st.dictionaries(any_text, json_values, max_size=5)),
        "event_id": field(st.sampled_from(["o-1", "a:b.c_d-e", ""]) | any_text),
        "covariates": field(
            st.dictionaries(st.sampled_from(["revenue", "a b", ""]) | any_text, json_values, max_size=3)
        ),
        "unexpected": json_values,
    },
)


@pytest.fixture
def stopped(owner):
    from tests.tracking.conftest import make_experiment

    return make_experiment(owner, "stopped", status="readout")


def _post(api, path: str, body) -> None:
    response = api.post(path, data=json.dumps(body), content_type="application/json")
    assert response.status_code < 500, (response.status_code, body)
    payload = response.json()
    assert ("errors" in payload) == (response.status_code == 400)


@FUZZ
@given(body=event_like | json_values)
def test_track__any_body__never_5xx(api, experiment, stopped, body):
    _post(api, "/api/track", body)


@FUZZ
@given(body=st.fixed_dictionaries({"events": st.lists(event_like | json_values, max_size=8)}) | json_values)
def test_batch__any_body__never_5xx(api, experiment, stopped, body):
    _post(api, "/api/track/batch", body)


@FUZZ
@given(
    body=st.fixed_dictionaries(
        {}, optional={"experiment": field(st.sampled_from(["checkout", "stopped"])), "user_key": json_values}
    )
    | json_values
)
def test_assign__any_body__never_5xx(api, experiment, stopped, body):
    _post(api, "/api/assign", body)


@FUZZ
@given(raw=st.binary(max_size=200))
def test_track__any_bytes__never_5xx(api, experiment, raw):
    response = api.post("/api/track", data=raw, content_type="application/json")
    assert response.status_code < 500


# Times the fast path must parse exactly as the serializer does, or leave to it.
ODD_TIMES = [
    "2026-01-01T00:00:00Z", "2026-01-01T00:00:00", "2026-01-01 00:00:00Z", "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00+01:00", "2026-02-30T00:00:00Z", "2026-01-01T00:00:60Z", "2999-01-01T00:00:00Z",
    "2026-01-01T00:00:00.1234567Z", "2026-01-01T00:00:00+0100", "2026-01-01T00:00:00.5+05:30",
]  # fmt: skip
recent_times = st.datetimes(
    min_value=dt.datetime(2025, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive; the zone comes from timezones
    max_value=dt.datetime(2030, 1, 1),  # noqa: DTZ001
    timezones=st.just(dt.UTC),
).map(lambda d: d.isoformat().replace("+00:00", "Z"))

plain_like = st.fixed_dictionaries(
    {
        "experiment": st.sampled_from(["checkout", "", "x" * 101]) | st.text(max_size=3),
        "variant": st.sampled_from(["control", "treatment"]) | st.text(max_size=3),
        "user_key": st.text(max_size=5) | st.sampled_from(["u1", "x" * 255, "x" * 256, "a\x00b", "  ", " u1", "u1\n"]),
        "event_type": st.sampled_from(["exposure", "conversion", "Exposure"]),
    },
    optional={
        "metric": st.none() | st.sampled_from(["purchase", "", "a b", "é"]) | json_values,
        "value": st.none() | st.integers() | st.floats() | st.booleans() | st.text(max_size=2),
        "props": st.none()
        | st.sampled_from([{}, [], 0, "", False, 0.0])
        | st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
        "occurred_at": st.none() | st.sampled_from(ODD_TIMES) | extreme_times | recent_times,
        "event_id": st.none() | st.sampled_from(["o-1", "", "a b", "x" * 100, "x" * 101, "é"]) | json_values,
    },
)


@FUZZ
@given(item=plain_like | event_like | json_values)
def test_plain_event__any_item__agrees_with_serializer(item):
    # Given the batch fast path and the serializer
    from django.utils import timezone
    from rest_framework import serializers

    from tracking.api import EventInputSerializer
    from tracking.fast_validation import plain_event

    now = timezone.now()
    # When the fast path accepts an item
    fast = plain_event(item, now)
    if fast is None:
        return
    # Then the serializer accepts it too, with the same result
    try:
        slow = EventInputSerializer.to_event(EventInputSerializer().run_validation(item), now)
    except serializers.ValidationError as exc:  # pragma: no cover - the failure being looked for
        raise AssertionError(f"fast path accepted an invalid item {item!r}: {exc.detail}") from exc
    assert fast == slow


def test_plain_event__typical_item__takes_fast_path():
    from django.utils import timezone

    from tracking.fast_validation import plain_event

    item = {"experiment": "checkout", "variant": "control", "user_key": "u1", "event_type": "conversion", "value": 3}
    assert plain_event(item, timezone.now()).value == 3.0


@pytest.mark.parametrize(
    ("text", "fast"),
    [("2026-01-01T10:00:00Z", True), ("2026-01-01T12:00:00.000+02:00", True), ("2026-01-01T10:00:00", False),
     ("2999-01-01T00:00:00Z", False), ("2026-02-30T00:00:00Z", False)],
)  # fmt: skip
def test_plain_event__occurred_at__plain_spelling_fast_others_to_the_serializer(text, fast):
    from django.utils import timezone

    from tracking.api import event_validate
    from tracking.fast_validation import plain_event

    item = {"experiment": "checkout", "variant": "control", "user_key": "u1", "event_type": "exposure",
            "occurred_at": text}  # fmt: skip
    now = timezone.now()
    result = plain_event(item, now)
    assert (result is not None) == fast
    if fast:
        assert result == event_validate(item, now)
        assert result.occurred_at == dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC)
