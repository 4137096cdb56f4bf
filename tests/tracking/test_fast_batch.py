"""The msgspec fast path (tracking/fast_batch.py) against the parser + serializer path it stands in for.

Properties: on generated bodies (valid, invalid, odd spellings, duplicate keys) the fast decoders accept only what
the serializer accepts, with the same events; and a batch posted through the fast path gets the same answer and
leaves the same rows as the same batch posted through the DRF path, from the same stored state.
"""

from __future__ import annotations

import datetime as dt
import json

import hypothesis
import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework import serializers

from experiments.models import ExperimentMetric
from tests.tracking.conftest import event, make_experiment
from tracking import api as track_api
from tracking.api import TrackBatchApi, event_validate
from tracking.fast_batch import batch_decode, event_decode
from tracking.models import Assignment, Event, VariantConflict
from tracking.selectors import running_experiment_forget

pytestmark = pytest.mark.django_db

PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
STORED = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

any_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=6)
scalars = st.none() | st.booleans() | st.integers(-(10**25), 10**25) | st.floats(allow_nan=False) | any_text
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3), max_leaves=8
)
times = st.sampled_from(
    ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00", "2026-01-01T10:00:00.5+05:30", "2999-01-01T00:00:00Z",
     "2026-02-30T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-01-01t00:00:00z"]
)  # fmt: skip


def maybe(valid, invalid=json_values):
    """Mostly the valid values, sometimes anything."""
    return st.one_of(valid, valid, valid, invalid)


item_strategy = st.fixed_dictionaries(
    {
        "experiment": maybe(st.sampled_from(["checkout", "planned", "stopped", "nope"])),
        "variant": maybe(st.sampled_from(["control", "treatment", "ghost"])),
        "user_key": maybe(st.sampled_from(["u1", "u2", "u3", " u4", "u5\t", "x" * 256, "é", "a\x00"])),
        "event_type": maybe(st.sampled_from(["exposure", "conversion", "Exposure"])),
    },
    optional={
        "metric": maybe(st.sampled_from(["purchase", "revenue", "signup", "", "a b", None])),
        "value": maybe(st.none() | st.integers(-(10**20), 10**20) | st.floats(allow_nan=False, allow_infinity=False)),
        "occurred_at": maybe(st.none() | times),
        "props": maybe(st.none() | st.just({}) | st.dictionaries(any_text, json_values, max_size=3)),
        "event_id": maybe(st.none() | st.sampled_from(["o-1", "o-2", "a:b.c_d-e", "", "a b", "x" * 101])),
        "covariates": st.dictionaries(st.sampled_from(["revenue"]), st.floats(allow_nan=False), max_size=1),
        "unexpected": json_values,
    },
)


@st.composite
def encoded(draw, value) -> bytes:
    """`value` as JSON bytes: ASCII-escaped or raw UTF-8, sometimes with a duplicate key put before the others
    (the last one wins, in json.loads as in msgspec)."""
    text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    if isinstance(value, dict) and value and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(value)))
        text = "{" + json.dumps(key) + ":" + json.dumps(draw(json_values)) + "," + text[1:]
    return text.encode("utf-8", "surrogatepass")


def _serializer_events(body: bytes, now: dt.datetime):
    """What the DRF path makes of a batch body: its events, or None when it refuses the envelope or an item."""
    data = json.loads(body)
    envelope = TrackBatchApi.InputSerializer(data=data)
    if not envelope.is_valid():
        return None
    try:
        return [event_validate(item, now) for item in envelope.validated_data["events"]]
    except serializers.ValidationError:
        return None


@PROPERTY
@given(body=st.lists(item_strategy, max_size=6).map(lambda items: {"events": items}).flatmap(encoded))
def test_batch_decode__generated_bodies__accepts_only_what_the_serializer_accepts_with_the_same_events(body):
    # Given a generated body and one clock
    now = timezone.now()
    # When the fast path takes it whole
    fast = batch_decode(body, now)
    if fast is None:
        return
    # Then the serializer accepts every item, and makes the same events of them
    assert fast.events() == _serializer_events(body, now), body


@PROPERTY
@given(body=item_strategy.flatmap(encoded))
def test_event_decode__generated_bodies__accepts_only_what_the_serializer_accepts_with_the_same_event(body):
    now = timezone.now()
    fast = event_decode(body, now)
    if fast is None:
        return
    try:
        slow = event_validate(json.loads(body), now)
    except serializers.ValidationError as exc:  # pragma: no cover - the failure being looked for
        raise AssertionError(f"fast path accepted {body!r}: {exc.detail}") from exc
    assert fast == slow


@pytest.mark.parametrize(
    "body",
    [
        b'{"events": [{"experiment": "checkout", "variant": "control", "user_key": "u1", "event_type": "exposure"}]}',
        b'{"events": [{"experiment": "checkout", "variant": "control", "user_key": "u1", "event_type": "conversion",'
        b' "metric": "purchase", "value": 3, "occurred_at": "2026-01-01T10:00:00+02:00", "event_id": "o-1",'
        b' "props": {"plan": "pro", "n": [1, {"a": null}]}}]}',
        b'{"events": []}',
    ],
)
def test_batch_decode__plain_bodies__taken_whole(body):
    assert batch_decode(body, timezone.now()) is not None


@pytest.mark.parametrize(
    "body",
    [
        b'{"events": [{"experiment": "checkout", "variant": "control", "user_key": "u1", "event_type": "exposure",'
        b' "metric": "purchase"}]}',  # a metric on an exposure
        b'{"events": [{"experiment": "checkout", "variant": "control", "user_key": "u1", "event_type": "exposure",'
        b' "covariates": {"revenue": 1}}]}',  # covariates: the serializer's
        b'{"events": [{"experiment": "checkout", "variant": "control", "user_key": "\\u00e9",'
        b' "event_type": "exposure"}]}',
        b'{"events": [{"experiment": "checkout", "variant": "control", "user_key": "\\ud800",'
        b' "event_type": "exposure"}]}',
        b'{"events": [{"experiment": "checkout", "variant": "control", "user_key": "u1", "event_type": "exposure",'
        b' "props": {"deep": [[[[[1]]]]]}}]}',  # six levels of props
        b'{"events": [], "extra": 1}',
        b'{"events": [' + b"[" * 600 + b"]" * 600 + b"]}",
        b'\xef\xbb\xbf{"events": []}',
    ],
)
def test_batch_decode__bodies_with_anything_unusual__left_to_the_drf_path(body):
    assert batch_decode(body, timezone.now()) is None


# --- Same answers and rows through either path ----------------------------------------------------------------
@pytest.fixture
def experiments(owner, experiment):
    planned = make_experiment(owner, "planned")
    ExperimentMetric.objects.create(experiment=planned, key="purchase", kind="binary")
    ExperimentMetric.objects.create(experiment=planned, key="revenue", kind="mean")
    make_experiment(owner, "stopped", status="readout")
    running_experiment_forget()
    return experiment


def _state() -> dict:
    """The stored rows; an `occurred_at` of the last hour is the default time (the request's clock)."""
    recent = timezone.now() - dt.timedelta(hours=1)
    events = Event.objects.values_list(
        "experiment__slug", "variant__key", "user_key", "event_type", "metric", "value", "occurred_at", "props",
        "event_id",
    )  # fmt: skip
    return {
        "events": sorted(((*e[:6], "now" if e[6] > recent else e[6], *e[7:]) for e in events), key=repr),
        "assignments": sorted(Assignment.objects.values_list("experiment__slug", "user_key", "variant__key", "source")),
        "conflicts": sorted(
            VariantConflict.objects.values_list(
                "experiment__slug",
                "user_key",
                "event_type",
                "metric",
                "assigned_variant__key",
                "reported_variant__key",
            )
        ),  # fmt: skip
    }


def _post_from_seed(api, body: bytes) -> tuple[int, dict, dict]:
    """From the same stored state every time: user u1 assigned to control with an exposure and a purchase."""
    Event.objects.all().delete()
    VariantConflict.objects.all().delete()
    Assignment.objects.all().delete()
    seed = [event(user_key="u1"), event(user_key="u1", event_type="conversion", event_id="o-1")]
    assert api.post("/api/track/batch", {"events": seed}, format="json").status_code == 200
    response = api.post("/api/track/batch", data=body, content_type="application/json")
    return response.status_code, response.json(), _state()


plain_item = st.fixed_dictionaries(
    {
        "experiment": st.sampled_from(["checkout"] * 6 + ["planned"] * 3 + ["stopped", "nope"]),
        "variant": st.sampled_from(["control"] * 6 + ["treatment"] * 3 + ["ghost"]),
        "user_key": st.sampled_from(["u1", "u2", "u3"]),
        "event_type": st.sampled_from(["exposure", "conversion"]),
    },
    optional={
        "metric": st.sampled_from(["purchase", "revenue", "signup"]),
        "value": st.floats(-1e6, 1e6),
        "occurred_at": st.sampled_from(["2020-01-01T00:00:00Z", "2026-01-01T10:00:00.5+05:30"]),
        "props": st.sampled_from([{}, {"plan": "pro"}, {"n": [1, 2]}]),
        "event_id": st.sampled_from(["o-1", "o-2", "o-3"]),
    },
).map(lambda item: item if item["event_type"] == "conversion" else {k: v for k, v in item.items() if k != "metric"})


@STORED
@given(items=st.lists(plain_item, max_size=8) | st.lists(plain_item | item_strategy, max_size=8))
def test_batch__generated_batches__same_answer_and_rows_through_either_path(api, experiments, monkeypatch, items):
    # Given a generated batch (mostly plain events: repeats, conflicts, rejections; sometimes invalid items)
    body = json.dumps({"events": items}).encode()
    hypothesis.event("fast path" if batch_decode(body, timezone.now()) is not None else "DRF path")
    # When it is posted through the fast path, then from the same state through the DRF path
    fast = _post_from_seed(api, body)
    with monkeypatch.context() as patch:
        patch.setattr(track_api, "batch_decode", lambda body, now: None)
        slow = _post_from_seed(api, body)
    # Then the answers and the stored rows are the same
    assert fast == slow, items


def test_batch__plain_batch__takes_the_fast_path_in_one_statement_per_table(api, experiments, monkeypatch):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    # Given a plain batch of new users' exposures and conversions
    items = [event(user_key=f"n{i}", event_type=t) for i in range(50) for t in ("exposure", "conversion")]
    taken = []
    monkeypatch.setattr(track_api, "batch_decode", lambda body, now: taken.append(1) or batch_decode(body, now))
    # When it is posted
    with CaptureQueriesContext(connection) as seen:
        response = api.post("/api/track/batch", {"events": items}, format="json")
    # Then the fast path stores it: the experiments, the assignments, the events (plus the transaction's own)
    assert response.json() == {"accepted": 100, "duplicates": 0, "rejected": []}
    assert taken == [1]
    writes = [q["sql"] for q in seen if q["sql"].lstrip().upper().startswith(("INSERT", "WITH"))]
    assert sum("tracking_event" in sql for sql in writes) == 1
    assert sum("tracking_assignment" in sql for sql in writes) == 1
    assert Event.objects.filter(user_key__startswith="n").count() == 100


@pytest.mark.parametrize(
    "accept", [None, "", "*/*", "application/json", "text/html", "application/json; q=0.5", "*/*;q=0.1, text/html"]
)
@pytest.mark.parametrize("query", ["", "?format=json", "?format=xml"])
def test_plain_accept_negotiation__any_accept__same_choice_as_drf(accept, query):
    from rest_framework.negotiation import DefaultContentNegotiation
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from tracking.api import AsciiJSONRenderer, PlainAcceptNegotiation

    # Given a request with this Accept header and query
    headers = {"HTTP_ACCEPT": accept} if accept is not None else {}
    request = Request(APIRequestFactory().post(f"/api/track{query}", **headers))

    def choice(negotiation):
        try:
            renderer, media_type = negotiation.select_renderer(request, [AsciiJSONRenderer()])
        except Exception as exc:  # noqa: BLE001 - the refusal is part of the answer compared
            return type(exc).__name__
        return type(renderer).__name__, media_type

    # When the shortcut negotiates / Then it picks what DRF picks (or refuses as DRF does)
    assert choice(PlainAcceptNegotiation()) == choice(DefaultContentNegotiation())


# --- Array literals (PostgreSQL) -------------------------------------------------------------------------------
storable_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8)
odd_text = st.sampled_from(['"', "\\", "{a,b}", "NULL", "", " x ", "é"])


@pytest.mark.postgres_only
@settings(max_examples=80, deadline=None)
@given(
    texts=st.lists(st.none() | storable_text | odd_text, max_size=8),
    floats=st.lists(st.none() | st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(10**20), 10**20)),
    times=st.lists(
        st.none() | st.datetimes(timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30))]))
    ),
    ints=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=5),
)
def test_pg_array_literal__any_values__read_back_unchanged(texts, floats, times, ints):
    from django.db import connection

    from tracking.queries import pg_array_literal

    # Given columns of every type the inserts send (with quotes, backslashes, braces, NULL-looking text, -0.0)
    fits = [t for t in times if t is None or dt.datetime.min.replace(tzinfo=dt.UTC) + dt.timedelta(days=1) < t]
    # When each is sent as one array literal and read back by PostgreSQL
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT %s::text[], %s::float8[], %s::timestamptz[], %s::bigint[]",
            [pg_array_literal(texts, "text"), pg_array_literal(floats, "float8"), pg_array_literal(fits, "timestamptz"),
             pg_array_literal(ints, "bigint")],
        )  # fmt: skip
        got = cursor.fetchone()
    # Then every value is what was sent (floats to the bit, zero's sign included)
    assert got[0] == texts
    assert [None if f is None else repr(f) for f in got[1]] == [None if f is None else repr(float(f)) for f in floats]
    assert got[2] == fits
    assert got[3] == ints
