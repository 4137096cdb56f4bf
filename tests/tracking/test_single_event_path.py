"""POST /api/track on PostgreSQL: the one-statement path (tracking.queries.SINGLE_EVENT_SQL) stores the
common case and hands everything else to the general path, with the same answers and the same rows."""

from __future__ import annotations

import random

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.tracking.conftest import event, make_experiment, set_status
from tracking.models import Assignment, Event, VariantConflict
from tracking.selectors import running_experiment_forget

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif("connection.vendor != 'postgresql'", reason="the single-event statement is PostgreSQL's"),
]


@pytest.fixture(autouse=True)
def _cold_cache():
    running_experiment_forget()
    yield
    running_experiment_forget()


def post(api, body):
    return api.post("/api/track", body, format="json")


def _single_statements(queries) -> list[str]:
    return [q["sql"] for q in queries if "assigned_before AS" in q["sql"]]


def test_single__warm_exposure_and_conversion__one_statement_each(api, experiment):
    # Given a warm experiment cache
    assert post(api, event(user_key="warm")).status_code == 201
    # When an exposure and a conversion of a new user are tracked
    with CaptureQueriesContext(connection) as seen:
        exposure = post(api, event(user_key="u9", variant="treatment"))
        conversion = post(api, event(user_key="u9", variant="treatment", event_type="conversion"))
    # Then each is stored by the one statement, with the assignment
    assert (exposure.status_code, conversion.status_code) == (201, 201)
    assert len(_single_statements(seen)) == 2
    assert len(seen) == 2  # the throttle counts from the lease the warm-up request took
    assert Assignment.objects.get(user_key="u9").variant.key == "treatment"
    assert Assignment.objects.get(user_key="u9").source == Assignment.Source.UPSTREAM
    assert sorted(Event.objects.filter(user_key="u9").values_list("event_type", "metric")) == [
        ("conversion", "purchase"),
        ("exposure", ""),
    ]


def test_single__experiment_ended_behind_the_cache__409_and_nothing_stored(api, experiment):
    # Given a warm cache that says the experiment runs
    assert post(api, event(user_key="warm")).status_code == 201
    # When it ends without this process hearing of it (a raw UPDATE: no signal), and an event arrives
    set_status(experiment, "readout")
    response = post(api, event(user_key="late"))
    # Then the statement sees the row's status under its lock and the general path answers 409
    assert response.status_code == 409
    assert response.json()["error"] == "experiment_not_running"
    assert not Event.objects.filter(user_key="late").exists()
    assert not Assignment.objects.filter(user_key="late").exists()


def test_single__variant_conflict__general_path_records_it(api, experiment):
    assert post(api, event(user_key="u1", variant="control")).status_code == 201
    response = post(api, event(user_key="u1", variant="treatment", event_type="conversion"))
    assert response.status_code == 409
    assert response.json()["error"] == "variant_conflict"
    assert VariantConflict.objects.filter(user_key="u1").count() == 1
    assert Event.objects.filter(user_key="u1").count() == 1


def test_single__conversion_before_exposure__stored_without_assignment(api, experiment):
    response = post(api, event(user_key="early", variant="treatment", event_type="conversion"))
    assert response.status_code == 201
    assert not Assignment.objects.filter(user_key="early").exists()
    # And the later exposure assigns the user
    assert post(api, event(user_key="early", variant="treatment")).status_code == 201
    assert Assignment.objects.get(user_key="early").variant.key == "treatment"


def test_single__exposure_after_hash_assignment__same_variant_stored_assignment_kept(api, experiment):
    variant = api.post("/api/assign", {"experiment": "checkout", "user_key": "h1"}, format="json").json()["variant"]
    assert post(api, event(user_key="h1", variant=variant)).status_code == 201
    assert Assignment.objects.get(user_key="h1").source == Assignment.Source.HASH


def _random_events(rng: random.Random, n: int) -> list[dict]:
    events = []
    for _ in range(n):
        body = event(
            user_key=f"r{rng.randrange(12)}",
            variant=rng.choice(["control", "treatment"]),
            event_type=rng.choice(["exposure", "conversion", "conversion"]),
        )
        if body["event_type"] == "conversion":
            body["metric"] = rng.choice(["purchase", "signup"])
            if rng.random() < 0.4:
                body["event_id"] = f"o-{rng.randrange(15)}"
        elif rng.random() < 0.2:
            body["covariates"] = {"purchase": rng.randrange(5)}
        events.append(body)
    return events


def _state(slug: str) -> tuple:
    events = sorted(
        Event.objects.filter(experiment__slug=slug).values_list(
            "user_key", "variant__key", "event_type", "metric", "event_id"
        ),
        key=repr,
    )
    assignments = sorted(Assignment.objects.filter(experiment__slug=slug).values_list("user_key", "variant__key"))
    conflicts = sorted(
        VariantConflict.objects.filter(experiment__slug=slug).values_list(
            "user_key", "event_type", "metric", "reported_variant__key"
        )
    )
    return events, assignments, conflicts


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_single__random_sequence__same_answers_and_rows_as_the_batch_path(api, owner, seed):
    # Given two identical experiments and one random sequence of events (repeats, conflicts, event_ids,
    # conversions before exposures, covariates)
    make_experiment(owner, "single")
    make_experiment(owner, "general")
    events = _random_events(random.Random(seed), 120)
    answers = {"single": [], "general": []}
    for body in events:
        # When each event goes once through POST /api/track and once, alone, through the batch endpoint
        # (the general path)
        one = post(api, {**body, "experiment": "single"})
        answers["single"].append(one.json().get("status") or one.json().get("error"))
        batch = api.post("/api/track/batch", {"events": [{**body, "experiment": "general"}]}, format="json").json()
        answers["general"].append("created" if batch["accepted"] else
                                  "duplicate" if batch["duplicates"] else batch["rejected"][0]["error"])  # fmt: skip
    # Then the answers and the stored rows agree event by event
    assert answers["single"] == answers["general"]
    assert _state("single") == _state("general")
    assert {"created", "duplicate", "variant_conflict"} <= set(answers["single"])


def test_single__cache_off__plan_read_per_request_then_one_statement(api, experiment, settings):
    # Given the experiment cache turned off
    settings.SIGNALDASH_EXPERIMENT_CACHE_S = 0
    assert post(api, event(user_key="warm")).status_code == 201  # warms the key cache and the rate lease
    # When an event is tracked, Then the plan is read (one query) before the one statement
    with CaptureQueriesContext(connection) as seen:
        assert post(api, event(user_key="u2")).status_code == 201
    assert len(seen) == 2 and len(_single_statements(seen)) == 1


def test_single__warm_plain_event__one_query_no_parser_no_serializer(api, experiment, monkeypatch):
    from tracking import api as track_api
    from tracking.parsers import LimitedJSONParser

    # Given warm caches (key, experiment, throttle lease), and the DRF parser and serializer made to fail if used
    assert post(api, event(user_key="warm")).status_code == 201

    def unused(*args, **kwargs):
        raise AssertionError("the happy path used the DRF parser or serializer")

    monkeypatch.setattr(LimitedJSONParser, "parse", unused)
    monkeypatch.setattr(track_api, "event_validate", unused)
    # When a plain event is tracked
    with CaptureQueriesContext(connection) as seen:
        response = api.post("/api/track", event(user_key="u7", value=2, props={"plan": "pro"}), format="json")
    # Then it is stored by msgspec's decode and the one statement: one query in all
    assert response.status_code == 201
    assert len(seen) == 1
    assert _single_statements(seen) == [seen[0]["sql"]]
    assert Event.objects.get(user_key="u7").props == {"plan": "pro"}


def test_single__statement_prepared_once_per_connection__orm_statements_not(api, experiment):
    # Given two tracked events on this connection (Django alone connects with automatic preparing off)
    assert post(api, event(user_key="p1")).status_code == 201
    assert post(api, event(user_key="p2")).status_code == 201
    # Then the server holds the single-event statement prepared (parsed and planned once), and nothing else:
    # the ORM's statements are never prepared
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    assert len([s for s in prepared if "assigned_before AS" in s]) == 1
    hot = ("assigned_before AS", "FROM unnest", "experiment_id = ANY(")  # the single event, the assignment's two
    assert all(any(mark in s for mark in hot) for s in prepared), prepared
    # And the query log still shows the prepared statement's SQL
    with CaptureQueriesContext(connection) as seen:
        assert post(api, event(user_key="p3")).status_code == 201
    assert len(_single_statements(seen)) == 1
