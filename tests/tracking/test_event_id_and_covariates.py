"""event_id dedup, mean metrics' required value, and exposure covariates (issue 8 items 2 and 3)."""

from __future__ import annotations

import json

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from experiments.models import ExperimentMetric
from tests.tracking.conftest import event
from tracking.models import Covariate, Event

pytestmark = pytest.mark.django_db


def post(client, body, url="/api/track"):
    return client.post(url, data=json.dumps(body), content_type="application/json")


def conversion(**over):
    return event(event_type="conversion", **over)


@pytest.fixture
def planned(experiment):
    """The experiment with a metric plan: purchase (primary, binary) and revenue (secondary, mean)."""
    ExperimentMetric.objects.create(experiment=experiment, key="purchase", role="primary", kind="binary")
    ExperimentMetric.objects.create(experiment=experiment, key="revenue", role="secondary", kind="mean")
    return experiment


# --- event_id ---------------------------------------------------------------------------------------
def test_track__conversions_with_distinct_event_ids__each_stored(api, experiment):
    # Given a user who buys twice
    first = post(api, conversion(event_id="order-1", value=10))
    second = post(api, conversion(event_id="order-2", value=5))
    # When the first purchase is retried
    retry = post(api, conversion(event_id="order-1", value=10))
    # Then both purchases are stored once each, and the retry is a duplicate
    assert (first.status_code, second.status_code, retry.status_code) == (201, 201, 200)
    assert retry.json() == {"status": "duplicate", "duplicate": True}
    assert sorted(Event.objects.values_list("event_id", "value")) == [("order-1", 10.0), ("order-2", 5.0)]


def test_track__conversion_without_event_id__one_per_user_and_metric_as_before(api, experiment):
    # Given a conversion with an event_id
    post(api, conversion(event_id="order-1"))
    # When conversions without event_id on the same metric arrive
    codes = [post(api, conversion()).status_code for _ in range(2)]
    # Then the first of them is stored (the id-less rule ignores events with ids), the second is a repeat
    assert codes == [201, 200]
    assert Event.objects.count() == 2


def test_track__exposures_with_different_event_ids__one_per_user(api, experiment):
    # Given an exposure with an event_id
    assert post(api, event(event_id="exp-1")).status_code == 201
    # When the user is exposed again under another event_id
    response = post(api, event(event_id="exp-2"))
    # Then it is a duplicate: exposures are always one per user (the readout counts rows as users)
    assert response.status_code == 200
    assert list(Event.objects.values_list("event_id", flat=True)) == ["exp-1"]


def test_track__event_id_reused_with_other_content__duplicate(api, experiment):
    # Given a stored conversion of u1 with event_id x
    post(api, conversion(event_id="x", user_key="u1"))
    # When another user's conversion (or an exposure) reuses x
    other_user = post(api, conversion(event_id="x", user_key="u2", metric="signup"))
    exposure = post(api, event(event_id="x", user_key="u3"))
    # Then both are duplicates of the stored event (event_id is unique within the experiment)
    assert (other_user.status_code, exposure.status_code) == (200, 200)
    assert Event.objects.count() == 1


def test_track__same_event_id_in_two_experiments__both_stored(api, owner, experiment):
    from tests.tracking.conftest import make_experiment

    make_experiment(owner, "search")
    codes = [post(api, conversion(experiment=slug, event_id="e1")).status_code for slug in ("checkout", "search")]
    assert codes == [201, 201]


@pytest.mark.parametrize("event_id", ["", "a b", "x" * 101, 12, "é", "a\n", ["a"], "a/b"])
def test_track__invalid_event_id__returns_400(api, experiment, event_id):
    response = post(api, conversion(event_id=event_id))
    assert response.status_code == 400
    assert "event_id" in response.json()["errors"]


def test_track__valid_event_id_alphabet__accepted(api, experiment):
    response = post(api, conversion(event_id="Az09._:-" + "x" * 92))
    assert response.status_code == 201


def test_batch__event_id_repeats_inside_batch__same_rule_as_database(api, experiment):
    # Given a batch with retries of event_id conversions, id-less repeats and an exposure sharing an id
    events = [
        conversion(event_id="o1"),
        conversion(event_id="o1"),  # retry: duplicate
        conversion(event_id="o2"),  # second purchase: stored
        conversion(),  # id-less: stored
        conversion(),  # id-less repeat: duplicate
        event(event_id="o2", user_key="u9"),  # exposure reusing o2: duplicate
        event(event_id="e1"),  # exposure: stored
        event(event_id="e2"),  # second exposure of u1: duplicate
    ]
    # When it is sent
    body = post(api, {"events": events}, "/api/track/batch").json()
    # Then the batch reports exactly what a one-by-one replay would store
    assert body == {"accepted": 4, "duplicates": 4, "rejected": []}
    assert Event.objects.count() == 4
    again = post(api, {"events": events}, "/api/track/batch").json()
    assert again == {"accepted": 0, "duplicates": 8, "rejected": []}


def test_batch__fast_path_item_with_event_id__stored_with_it(api, experiment):
    body = post(api, {"events": [conversion(event_id="fast-1", value=3)]}, "/api/track/batch").json()
    assert body["accepted"] == 1
    assert Event.objects.get().event_id == "fast-1"


# --- database constraints (written around the services) --------------------------------------------
def _event_row(experiment, **over):
    fields = {
        "experiment": experiment,
        "variant": experiment.variants.get(key="control"),
        "user_key": "u1",
        "event_type": "conversion",
        "metric": "purchase",
        "occurred_at": timezone.now(),
    }
    return Event(**{**fields, **over})


def test_event_dedup_event_id__same_experiment_and_event_id__integrity_error(experiment):
    Event.objects.bulk_create([_event_row(experiment, event_id="e1")])
    with pytest.raises(IntegrityError), transaction.atomic():
        Event.objects.bulk_create([_event_row(experiment, event_id="e1", user_key="u2")])


def test_event_dedup__conversions_with_event_ids__several_per_user_allowed(experiment):
    Event.objects.bulk_create([_event_row(experiment, event_id="e1"), _event_row(experiment, event_id="e2")])
    assert Event.objects.count() == 2


def test_event_dedup__exposures_with_event_ids__still_one_per_user(experiment):
    Event.objects.bulk_create([_event_row(experiment, event_type="exposure", metric="", event_id="e1")])
    with pytest.raises(IntegrityError), transaction.atomic():
        Event.objects.bulk_create([_event_row(experiment, event_type="exposure", metric="", event_id="e2")])


def test_event_event_id_length__empty_event_id__integrity_error(experiment):
    with pytest.raises(IntegrityError), transaction.atomic():
        Event.objects.bulk_create([_event_row(experiment, event_id="")])


def test_events_insert__no_conflict_target__skips_rows_conflicting_on_either_partial_index(experiment):
    # Given stored events under both dedup rules
    from tracking import queries

    variant = experiment.variants.get(key="control").pk
    now = timezone.now()

    def row(user, event_type, metric, event_id):
        return (experiment.pk, variant, user, event_type, metric, None, now, now, {}, event_id)

    queries.events_insert([row("u1", "conversion", "purchase", None), row("u1", "conversion", "purchase", "e1")])
    # When one multi-row INSERT … ON CONFLICT DO NOTHING repeats each rule and adds a new row
    stored = queries.events_insert(
        [
            row("u1", "conversion", "purchase", None),  # event_dedup
            row("u2", "conversion", "signup", "e1"),  # event_dedup_event_id
            row("u1", "conversion", "purchase", "e2"),  # new
        ]
    )
    # Then only the new row is stored and returned
    assert stored == {(experiment.pk, "u1", "conversion", "purchase", "e2")}
    assert Event.objects.count() == 3


# --- mean metrics -----------------------------------------------------------------------------------
def test_track__mean_metric_conversion_without_value__returns_400_value_required(api, planned):
    response = post(api, conversion(metric="revenue"))
    assert response.status_code == 400
    assert response.json()["error"] == "value_required"
    assert "value" in response.json()["errors"]
    assert not Event.objects.exists()


def test_track__mean_metric_conversion_with_value__stored(api, planned):
    assert post(api, conversion(metric="revenue", value=0)).status_code == 201


def test_track__binary_metric_without_value__stored(api, planned):
    assert post(api, conversion()).status_code == 201


def test_batch__mean_metric_without_value__that_item_rejected_others_stored(api, planned):
    events = [event(), conversion(metric="revenue"), conversion(metric="revenue", value=12.5, event_id="o1")]
    body = post(api, {"events": events}, "/api/track/batch").json()
    assert (body["accepted"], body["duplicates"]) == (2, 0)
    assert body["rejected"] == [
        {"index": 1, "errors": {"value": [body["rejected"][0]["errors"]["value"][0]]}, "error": "value_required"}
    ]
    assert Event.objects.count() == 2


def test_track__query_count__metric_plan_read_with_the_experiment(api, planned, django_assert_num_queries):
    # Given a warm API key (authentication is its own queries) and, on PostgreSQL, a warm experiment cache
    post(api, event(user_key="warm"))
    # When a conversion on a planned mean metric is tracked, Then the query count is pinned: the
    # experiment, its variants and its metric kinds come from one query
    with django_assert_num_queries(_track_queries()):
        response = post(api, conversion(metric="revenue", value=3, user_key="warm"))
    assert response.status_code == 201


def _track_queries() -> int:
    """API key: 0 (a warm key comes from the process cache, tracking/auth.py). The per-key throttle: 0 (the
    warm-up request leased a run of counts, signaldash.ratelimit.counters). Then the write:

    - PostgreSQL: 1 — the single-event statement (tracking.queries.SINGLE_EVENT_SQL: experiment row lock,
      assignment, event), the experiment's plan coming from the process cache;
    - SQLite: 5 — a savepoint and its release inside the test's transaction, experiment + variants +
      metric plan (one query), the assignment read, the events insert (no exposure: no assignments insert).
    """
    return 1 if connection.vendor == "postgresql" else 5


# --- covariates -------------------------------------------------------------------------------------
def test_track__exposure_with_covariates__stored_per_metric_with_the_variant(api, experiment):
    response = post(api, event(variant="treatment", covariates={"revenue": 12.5, "purchase": 1}))
    assert response.status_code == 201
    rows = sorted(Covariate.objects.values_list("user_key", "metric", "value", "variant__key"))
    assert rows == [("u1", "purchase", 1.0, "treatment"), ("u1", "revenue", 12.5, "treatment")]


def test_track__repeated_exposure_with_other_covariates__ignored(api, experiment):
    # Given an exposure with covariates
    post(api, event(covariates={"revenue": 1}))
    # When it is repeated with other and more covariates
    response = post(api, event(covariates={"revenue": 99, "purchase": 1}))
    # Then the first exposure's covariates stand
    assert response.status_code == 200
    assert list(Covariate.objects.values_list("metric", "value")) == [("revenue", 1.0)]


def test_track__conflicting_exposure_with_covariates__none_stored(api, experiment):
    post(api, event())
    response = post(api, event(variant="treatment", covariates={"revenue": 5}))
    assert response.status_code == 409
    assert not Covariate.objects.exists()


@pytest.mark.parametrize(
    "covariates",
    [
        [1],
        "revenue",
        {"revenue": "12"},
        {"revenue": True},
        {"revenue": None},
        {"not a slug": 1},
        {"": 1},
        {"x" * 101: 1},
        {f"m{i}": i for i in range(21)},
        {"revenue": 10**400},
    ],
)
def test_track__invalid_covariates__returns_400(api, experiment, covariates):
    response = post(api, event(covariates=covariates))
    assert response.status_code == 400
    assert "covariates" in response.json()["errors"]
    assert not Covariate.objects.exists()


def test_track__covariates_on_conversion__returns_400(api, experiment):
    response = post(api, conversion(covariates={"revenue": 1}))
    assert response.status_code == 400
    assert response.json()["errors"] == {"covariates": ["Only exposures have covariates."]}


def test_track__twenty_covariates__accepted(api, experiment):
    response = post(api, event(covariates={f"m{i}": i for i in range(20)}))
    assert response.status_code == 201
    assert Covariate.objects.count() == 20


def test_batch__covariates__stored_for_new_exposures_only(api, experiment):
    # Given u1 already exposed with a covariate
    post(api, event(covariates={"revenue": 1}))
    events = [
        event(covariates={"revenue": 50}),  # repeat of u1: ignored
        event(user_key="u2", covariates={"revenue": 2}),
        event(user_key="u2", covariates={"revenue": 3}),  # in-batch repeat: ignored
        event(user_key="u3"),  # no covariates
    ]
    # When the batch is sent
    body = post(api, {"events": events}, "/api/track/batch").json()
    # Then only u2's first exposure adds a covariate
    assert (body["accepted"], body["duplicates"]) == (2, 2)
    assert sorted(Covariate.objects.values_list("user_key", "value")) == [("u1", 1.0), ("u2", 2.0)]


def test_covariate_one_per_user_metric__integrity_error(experiment):
    variant = experiment.variants.get(key="control")
    Covariate.objects.create(experiment=experiment, variant=variant, user_key="u1", metric="revenue", value=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        Covariate.objects.create(experiment=experiment, variant=variant, user_key="u1", metric="revenue", value=2)


@pytest.mark.parametrize(("user_key", "metric"), [("", "revenue"), ("u1", "")])
def test_covariate_checks__empty_user_key_or_metric__integrity_error(experiment, user_key, metric):
    variant = experiment.variants.get(key="control")
    with pytest.raises(IntegrityError), transaction.atomic():
        Covariate.objects.bulk_create(
            [Covariate(experiment=experiment, variant=variant, user_key=user_key, metric=metric, value=1)]
        )


def test_migration_state__event_dedup_is_partial(experiment):
    # Both partial unique indexes exist in the database (not only in the model state)
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, Event._meta.db_table)
    assert constraints["event_dedup"]["unique"] and constraints["event_dedup_event_id"]["unique"]
