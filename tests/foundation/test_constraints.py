"""Every data-model rule holds in the database itself: writes bypass validation and must fail."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from experiments.models import AuditLog, Decision, Experiment, Variant
from readouts.models import Narrative
from tracking.models import Assignment, Event

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner(make_user):
    return make_user("owner")


@pytest.fixture
def experiment(owner):
    return Experiment.objects.create(name="Checkout", slug="checkout", hypothesis="h", owner=owner)


@pytest.fixture
def control(experiment):
    return Variant.objects.create(experiment=experiment, key="control", name="Control", is_control=True)


@pytest.fixture
def treatment(experiment):
    return Variant.objects.create(experiment=experiment, key="treatment", name="Treatment")


def _event(experiment, variant, **over):
    fields = dict(
        experiment=experiment,
        variant=variant,
        user_key="u1",
        event_type="exposure",
        metric="",
        occurred_at=timezone.now(),
        props={},
    )
    fields.update(over)
    return Event(**fields)


def _violates(objs):
    with pytest.raises(IntegrityError), transaction.atomic():
        type(objs[0]).objects.bulk_create(objs)


# --- Experiment ---------------------------------------------------------------------------------
def test_experiment__duplicate_slug__rejected_by_db(owner, experiment):
    _violates([Experiment(name="Other", slug="checkout", owner=owner)])


def _raw_update(experiment, **values):
    assignments = ", ".join(f"{column} = %s" for column in values)
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cur:
        cur.execute(
            f"UPDATE {Experiment._meta.db_table} SET {assignments} WHERE id = %s", [*values.values(), experiment.pk]
        )


def test_experiment__unknown_status__rejected_by_db(experiment):
    # timestamps set, so only the status rule (not the started/ended rules) can refuse it
    now = timezone.now()
    _raw_update(experiment, status="bogus", started_at=now, ended_at=now)


@pytest.mark.parametrize("column", ["slug", "primary_metric"])
def test_experiment__empty_slug_or_metric__rejected_by_db(experiment, column):
    _raw_update(experiment, **{column: ""})


def test_experiment__running_without_started_at__rejected_by_db(experiment):
    _raw_update(experiment, status="running")


def test_experiment__shipped_without_ended_at__rejected_by_db(experiment):
    _raw_update(experiment, status="shipped", started_at=timezone.now())


def test_experiment__status__protected_from_direct_assignment(experiment):
    with pytest.raises(AttributeError):
        experiment.status = "running"


def test_experiment__salt__random_per_experiment(owner, experiment):
    other = Experiment.objects.create(name="Other", slug="other", owner=owner)
    assert experiment.salt and other.salt and experiment.salt != other.salt


# --- Variant ------------------------------------------------------------------------------------
def test_variant__duplicate_key__rejected_by_db(experiment, control):
    _violates([Variant(experiment=experiment, key="control", name="Again")])


def test_variant__second_control__rejected_by_db(experiment, control):
    _violates([Variant(experiment=experiment, key="control2", name="Second control", is_control=True)])


def test_variant__controls_in_different_experiments__allowed(owner, experiment, control):
    other = Experiment.objects.create(name="Other", slug="other", owner=owner)
    Variant.objects.bulk_create([Variant(experiment=other, key="control", name="C", is_control=True)])
    assert Variant.objects.filter(is_control=True).count() == 2


def test_variant__empty_key__rejected_by_db(experiment):
    _violates([Variant(experiment=experiment, key="", name="No key")])


@pytest.mark.parametrize("weight", [0, -5])
def test_variant__non_positive_weight__rejected_by_db(experiment, weight):
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cur:
        cur.execute(
            f"INSERT INTO {Variant._meta.db_table} (experiment_id, key, name, is_control, weight) "
            "VALUES (%s, %s, %s, %s, %s)",
            [experiment.pk, "zero", "Zero", False, weight],
        )


# --- Assignment ---------------------------------------------------------------------------------
def test_assignment__second_variant_for_same_user__rejected_by_db(experiment, control, treatment):
    Assignment.objects.create(experiment=experiment, user_key="u1", variant=control, source="hash")
    _violates([Assignment(experiment=experiment, user_key="u1", variant=treatment, source="upstream")])


def test_assignment__unknown_source__rejected_by_db(experiment, control):
    _violates([Assignment(experiment=experiment, user_key="u1", variant=control, source="guess")])


def test_assignment__empty_user_key__rejected_by_db(experiment, control):
    _violates([Assignment(experiment=experiment, user_key="", variant=control, source="hash")])


# --- Event --------------------------------------------------------------------------------------
def test_event__duplicate_exposure__rejected_by_db(experiment, control):
    Event.objects.bulk_create([_event(experiment, control)])
    _violates([_event(experiment, control)])


def test_event__same_user_two_metrics__both_stored(experiment, control):
    Event.objects.bulk_create(
        [
            _event(experiment, control, event_type="conversion", metric="purchase"),
            _event(experiment, control, event_type="conversion", metric="signup"),
            _event(experiment, control),
        ]
    )
    assert Event.objects.count() == 3


def test_event__duplicate_conversion_same_metric__rejected_by_db(experiment, control):
    Event.objects.bulk_create([_event(experiment, control, event_type="conversion", metric="purchase")])
    _violates([_event(experiment, control, event_type="conversion", metric="purchase")])


def test_event__unknown_event_type__rejected_by_db(experiment, control):
    # with a metric, so only the event-type rule (not the metric rule) can refuse it
    _violates([_event(experiment, control, event_type="click", metric="purchase")])


def test_event__empty_user_key__rejected_by_db(experiment, control):
    _violates([_event(experiment, control, user_key="")])


def test_event__user_key_over_255_chars__rejected_by_db(experiment, control):
    with pytest.raises((IntegrityError,)), transaction.atomic(), connection.cursor() as cur:
        # PostgreSQL's varchar(255) and the length CheckConstraint both refuse it; SQLite only the latter.
        try:
            cur.execute(
                f"INSERT INTO {Event._meta.db_table} (experiment_id, variant_id, user_key, event_type, metric, "
                "occurred_at, received_at, props) VALUES (%s, %s, %s, 'exposure', '', %s, %s, '{}')",
                [experiment.pk, control.pk, "x" * 256, timezone.now(), timezone.now()],
            )
        except Exception as exc:  # psycopg raises DataError (value too long) before the check runs
            if exc.__class__.__name__ == "DataError":
                raise IntegrityError(str(exc)) from exc
            raise


def test_event__metric_on_exposure__rejected_by_db(experiment, control):
    _violates([_event(experiment, control, metric="purchase")])


def test_event__conversion_without_metric__rejected_by_db(experiment, control):
    _violates([_event(experiment, control, event_type="conversion", metric="")])


# --- Decision, audit log, narrative --------------------------------------------------------------
def test_decision__empty_rationale__rejected_by_db(experiment, owner):
    _violates([Decision(experiment=experiment, outcome="shipped", rationale="", decided_by=owner)])


def test_decision__unknown_outcome__rejected_by_db(experiment, owner):
    _violates([Decision(experiment=experiment, outcome="paused", rationale="why", decided_by=owner)])


def test_auditlog__update_and_delete__refused(experiment, owner):
    entry = AuditLog.objects.create(experiment=experiment, actor=owner, transition="t", from_state="a", to_state="b")
    with pytest.raises(PermissionError):
        entry.save()
    with pytest.raises(PermissionError):
        entry.delete()
    with pytest.raises(PermissionError):
        AuditLog.objects.filter(pk=entry.pk).update(comment="rewritten")
    with pytest.raises(PermissionError):
        AuditLog.objects.all().delete()
    assert AuditLog.objects.get(pk=entry.pk).comment == ""


def test_narrative__duplicate_fingerprint__rejected_by_db(experiment):
    fields = dict(
        experiment=experiment,
        metric="conversion",
        fingerprint="a" * 64,
        provider="openai",
        model="m",
        prompt_version="v1",
        source="openai",
        text="t",
        readout_numbers={},
    )
    Narrative.objects.bulk_create([Narrative(**fields)])
    _violates([Narrative(**fields)])
