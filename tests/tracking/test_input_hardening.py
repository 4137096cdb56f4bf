"""Issue 11 item 1, tracking input defects: each test failed before its fix."""

from __future__ import annotations

import datetime as dt
import json
from unittest import mock

import pytest
from django.utils import timezone
from rest_framework import serializers

from experiments.models import ExperimentMetric
from tests.tracking.conftest import event, set_status
from tracking.api import event_validate
from tracking.fast_validation import plain_event
from tracking.fields import PROPS_MAX_DEPTH
from tracking.models import Assignment, Event
from tracking.services import CLOCK_SKEW, EventIn, Outcome, events_ingest

pytestmark = pytest.mark.django_db


def post(client, body, url="/api/track"):
    return client.post(url, data=json.dumps(body), content_type="application/json")


def nested(levels: int) -> dict:
    """A props object `levels` containers deep (the object itself is level 1), built without recursion."""
    value: dict = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


# --- deep props: per item, without recursion --------------------------------------------------------
def test_track__props_at_max_depth__accepted(api, experiment):
    response = post(api, event(props=nested(PROPS_MAX_DEPTH)))
    assert response.status_code == 201


@pytest.mark.parametrize("props", [nested(PROPS_MAX_DEPTH + 1), {"a": [[[[["too deep"]]]]]}])
def test_track__props_too_deep__returns_400(api, experiment, props):
    response = post(api, event(props=props))
    assert response.status_code == 400
    assert response.json()["errors"]["props"] == [
        f"Must be nested at most {PROPS_MAX_DEPTH} levels deep (objects and arrays)."
    ]


@pytest.mark.parametrize("levels", [25, 314, 480])
def test_batch__999_valid_and_one_deeply_nested_item__item_rejected_999_stored(api, experiment, levels):
    # Given 999 valid events and one whose props nest deeper than allowed (the probe's 314 levels included;
    # within the body's 512-level limit, so the item is judged on its own)
    events = [event(user_key=f"u{i}") for i in range(999)]
    events.insert(500, event(user_key="deep", props=nested(levels)))
    # When the batch is sent
    response = post(api, {"events": events}, "/api/track/batch")
    # Then only that item is rejected, with a clear error, and the 999 are stored
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 999
    assert [(r["index"], r["error"], list(r["errors"])) for r in body["rejected"]] == [(500, "invalid", ["props"])]
    assert Event.objects.count() == 999


@pytest.mark.parametrize("levels", [300, 5000])
def test_event_validate__props_nested_thousands_deep__validation_error_not_recursion(levels):
    # Given an item nested deeper than Python's recursion limit (the body parser is bypassed)
    item = event(props=nested(levels))
    # When it is validated, Then it is a field error, not a RecursionError
    with pytest.raises(serializers.ValidationError) as exc:
        event_validate(item)
    assert "props" in exc.value.detail


def test_event_validate__deeply_nested_list_in_a_choice_field__validation_error_not_recursion():
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(serializers.ValidationError) as exc:
        event_validate(event(event_type=deep))
    assert "event_type" in exc.value.detail


# --- malformed items: always per item; one validator -------------------------------------------------
@pytest.mark.parametrize("item", [None, 0, False, "x", [], 1.5])
def test_batch__malformed_item__rejected_alone_others_stored(api, experiment, item):
    # Given a valid event around a malformed item
    events = [event(user_key="a"), item, event(user_key="b")]
    # When the batch is sent
    body = post(api, {"events": events}, "/api/track/batch").json()
    # Then the item is rejected on its own and both valid events are stored
    assert body["accepted"] == 2
    assert body["rejected"] == [
        {"index": 1, "errors": {"non_field_errors": ["Must be a JSON object."]}, "error": "invalid"}
    ]


@pytest.mark.parametrize("props", [[], 0, "", False, 0.0, [1]])
def test_batch__non_object_props__rejected_like_track(api, experiment, props):
    # Given an item /api/track refuses
    single = post(api, event(user_key="single", props=props))
    # When it is sent in a batch
    body = post(api, {"events": [event(props=props)]}, "/api/track/batch").json()
    # Then the batch refuses it the same way (the fast path no longer stores it as {})
    assert single.status_code == 400
    assert body["accepted"] == 0
    assert body["rejected"][0]["errors"] == single.json()["errors"]


@pytest.mark.parametrize("props", [None, {}])
def test_plain_event__null_or_empty_props__fast_path_stores_empty_object(props):
    fast = plain_event(event(props=props), timezone.now())
    assert fast is not None and fast.props == {}


@pytest.mark.parametrize("body", [None, 0, "x", []])
def test_track__body_not_an_object__returns_400_same_message_as_batch(api, experiment, body):
    response = post(api, body)
    assert response.status_code == 400
    assert response.json()["errors"] == {"non_field_errors": ["Must be a JSON object."]}


# --- occurred_at outside the running window ---------------------------------------------------------
def test_track__occurred_at_in_year_1__returns_400_occurred_before_start(api, experiment):
    response = post(api, event(occurred_at="0001-01-01T00:00:00Z"))
    assert response.status_code == 400
    assert response.json()["error"] == "occurred_before_start"
    assert "occurred_at" in response.json()["errors"]
    assert not Event.objects.exists() and not Assignment.objects.exists()


def test_track__occurred_at_within_clock_skew_before_start__accepted(api, experiment):
    at = experiment.started_at - CLOCK_SKEW + dt.timedelta(seconds=5)
    assert post(api, event(occurred_at=at.isoformat())).status_code == 201


def test_track__occurred_at_beyond_clock_skew_before_start__refused(api, experiment):
    at = experiment.started_at - CLOCK_SKEW - dt.timedelta(seconds=5)
    assert post(api, event(occurred_at=at.isoformat())).status_code == 400


def test_batch__event_before_start__that_item_rejected(api, experiment):
    events = [event(occurred_at="2000-01-01T00:00:00Z"), event(user_key="u2")]
    body = post(api, {"events": events}, "/api/track/batch").json()
    assert body["accepted"] == 1
    assert [(r["index"], r["error"]) for r in body["rejected"]] == [(0, "occurred_before_start")]


def test_events_ingest__allow_before_start__trusted_backfill_stored(experiment):
    at = experiment.started_at - dt.timedelta(days=3)
    event_in = EventIn(experiment="checkout", variant="control", user_key="u1", event_type="exposure", occurred_at=at)
    assert events_ingest(events=[event_in])[0].outcome == Outcome.OCCURRED_BEFORE_START
    assert events_ingest(events=[event_in], allow_before_start=True)[0].outcome == Outcome.CREATED


def test_events_ingest__experiment_read_inside_the_write_transaction__ended_one_refused(experiment):
    # Given an experiment that has just ended
    from django.db import connection

    from tracking import selectors

    set_status(experiment, "readout")
    reads: list[tuple[int, bool]] = []
    outside = len(connection.savepoint_ids)

    def spy(**kwargs):
        reads.append((len(connection.savepoint_ids) - outside, kwargs.get("lock", False)))
        return selectors.experiments_for_ingest(**kwargs)

    event_in = EventIn(
        experiment="checkout", variant="control", user_key="u1", event_type="exposure", occurred_at=timezone.now()
    )
    # When events are ingested
    with mock.patch("tracking.services.experiments_for_ingest", side_effect=spy):
        result = events_ingest(events=[event_in])[0]
    # Then the experiment was read once, inside the write transaction and share-locked (no earlier read whose
    # status could go stale), and the ended experiment refuses them: nothing lands after the end
    assert reads == [(1, True)]
    assert result.outcome == Outcome.EXPERIMENT_NOT_RUNNING
    assert "readout" in result.detail
    assert not Event.objects.exists() and not Assignment.objects.exists()


def test_assign__experiment_ended_after_it_was_read__refused_inside_the_transaction(api, experiment):
    from tracking import selectors

    stale = selectors.experiments_for_ingest(slugs=["checkout"])
    set_status(experiment, "killed")
    with mock.patch("tracking.services.experiments_for_ingest", return_value=stale):
        response = api.post("/api/assign", {"experiment": "checkout", "user_key": "u1"}, format="json")
    assert response.status_code == 409
    assert not Assignment.objects.exists()


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_events_write_transaction__holds_share_lock__end_transition_waits(experiment):
    # Given an ingest transaction that has re-checked the status (FOR SHARE) and not yet committed
    import threading

    from django.db import connection, transaction

    from tracking import queries

    outcome: dict = {}
    locked, release = threading.Event(), threading.Event()

    def ingest_transaction():
        with transaction.atomic():
            queries.experiments_running_lock([experiment.pk])
            locked.set()
            release.wait(10)
        connection.close()

    thread = threading.Thread(target=ingest_transaction)
    thread.start()
    assert locked.wait(10)
    # When the end transition's UPDATE of the row runs meanwhile (bounded by a lock timeout)
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '300ms'")
            cursor.execute("UPDATE experiments_experiment SET ended_at = now() WHERE id = %s", [experiment.pk])
        outcome["updated"] = True
    except Exception as exc:  # noqa: BLE001 - the lock timeout is the expected outcome
        outcome["error"] = type(exc).__name__
    finally:
        release.set()
        thread.join(10)
    # Then it had to wait for the ingest transaction (it could not commit in between)
    assert outcome == {"error": "OperationalError"}


# --- user keys --------------------------------------------------------------------------------------
@pytest.mark.parametrize("user_key", ["   ", " ", "\t", " u1", "u1 ", "\tu1", "u1\n", "\u00a0u1", "u1\u2003"])
def test_track__blank_or_untrimmed_user_key__returns_400(api, experiment, user_key):
    response = post(api, event(user_key=user_key))
    batch = post(api, {"events": [event(user_key=user_key)]}, "/api/track/batch").json()
    assign = api.post("/api/assign", {"experiment": "checkout", "user_key": user_key}, format="json")
    assert response.status_code == 400 and "user_key" in response.json()["errors"]
    assert batch["accepted"] == 0 and "user_key" in batch["rejected"][0]["errors"]
    assert assign.status_code == 400 and "user_key" in assign.json()["errors"]
    assert not Event.objects.exists() and not Assignment.objects.exists()


def test_track__user_key_with_inner_spaces__accepted(api, experiment):
    assert post(api, event(user_key="first last")).status_code == 201


# --- metric keys the plan does not name -------------------------------------------------------------
@pytest.fixture
def planned(experiment):
    ExperimentMetric.objects.create(experiment=experiment, key="purchase", role="primary", kind="binary")
    ExperimentMetric.objects.create(experiment=experiment, key="revenue", role="guardrail", kind="mean")
    return experiment


def test_track__unplanned_metric_with_a_plan__returns_400_unknown_metric(api, planned):
    response = post(api, event(event_type="conversion", metric="made-up"))
    assert response.status_code == 400
    assert response.json()["error"] == "unknown_metric"
    assert "purchase, revenue" in response.json()["errors"]["metric"][0]
    assert not Event.objects.exists()


def test_batch__unplanned_metric_with_a_plan__that_item_rejected(api, planned):
    events = [event(event_type="conversion", metric="made-up"), event(event_type="conversion")]
    body = post(api, {"events": events}, "/api/track/batch").json()
    assert body["accepted"] == 1
    assert [(r["index"], r["error"], list(r["errors"])) for r in body["rejected"]] == [
        (0, "unknown_metric", ["metric"])
    ]


def test_track__any_metric_without_a_plan__accepted_as_before(api, experiment):
    assert not experiment.metrics.exists()
    assert post(api, event(event_type="conversion", metric="made-up")).status_code == 201


def test_track__covariates_for_unplanned_metrics__stored(api, planned):
    # Covariates are pre-exposure data: an unplanned key is kept (the readout ignores it), never a reason
    # to lose the exposure
    assert post(api, event(covariates={"made-up": 1})).status_code == 201
