"""Workflow services: every allowed transition writes one audit row; every forbidden one is refused."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction

from experiments import services
from experiments.models import AuditLog, Decision, Experiment, Variant
from experiments.services import WorkflowError
from tests.experiments.conftest import add_winning_events

pytestmark = pytest.mark.django_db


def _last_audit(experiment):
    return AuditLog.objects.filter(experiment=experiment).order_by("-id").first()


# --- allowed transitions ------------------------------------------------------------------------------
def test_create__via_service__draft_with_create_audit_row(ops, make_experiment):
    # Given / When an experiment saved for the first time
    experiment = make_experiment(complete=False)
    # Then it is a draft and the creation is audited
    entry = _last_audit(experiment)
    assert experiment.status == "draft"
    assert (entry.transition, entry.to_state, entry.actor) == ("create", "draft", ops)


def test_submit_for_review__complete_plan__review_and_audited_with_plan(ops, make_experiment):
    # Given a complete draft
    experiment = make_experiment()
    # When ops submits it
    entry = services.experiment_submit_for_review(experiment=experiment, actor=ops)
    # Then it is in review, and the audit row carries the plan as submitted
    experiment.refresh_from_db()
    assert experiment.status == "review"
    assert (entry.transition, entry.from_state, entry.to_state, entry.actor) == (
        "submit_for_review",
        "draft",
        "review",
        ops,
    )
    assert [v["key"] for v in entry.extra["variants"]] == ["control", "green"]
    assert entry.extra["hypothesis"] == "A green button lifts conversion."


def test_request_changes__with_comment__back_to_draft_and_audited(reviewer, make_experiment):
    # Given an experiment in review
    experiment = make_experiment(status="review")
    # When a reviewer requests changes with a comment
    services.experiment_request_changes(experiment=experiment, actor=reviewer, comment="  Add a guardrail.  ")
    # Then it is a draft again and the comment is in the audit row
    experiment.refresh_from_db()
    entry = _last_audit(experiment)
    assert experiment.status == "draft"
    assert (entry.transition, entry.from_state, entry.to_state, entry.comment, entry.actor) == (
        "request_changes",
        "review",
        "draft",
        "Add a guardrail.",
        reviewer,
    )


def test_approve_and_start__reviewer_not_owner__running_with_started_at(reviewer, make_experiment):
    # Given an experiment in review owned by ops
    experiment = make_experiment(status="review")
    # When another person, a reviewer, approves it
    services.experiment_approve_and_start(experiment=experiment, actor=reviewer)
    # Then it runs, started_at is set, and the approval is audited
    experiment.refresh_from_db()
    entry = _last_audit(experiment)
    assert experiment.status == "running"
    assert experiment.started_at is not None
    assert (entry.transition, entry.from_state, entry.to_state, entry.actor) == (
        "approve_and_start",
        "review",
        "running",
        reviewer,
    )


def test_end_for_readout__running__readout_with_ended_at(ops, make_experiment):
    # Given a running experiment
    experiment = make_experiment(status="running")
    # When ops ends it
    services.experiment_end_for_readout(experiment=experiment, actor=ops)
    # Then it is in readout with ended_at set, audited
    experiment.refresh_from_db()
    entry = _last_audit(experiment)
    assert experiment.status == "readout"
    assert experiment.ended_at is not None
    assert (entry.transition, entry.from_state, entry.to_state) == ("end_for_readout", "running", "readout")


def test_ship__readout_with_rationale__decision_with_snapshot_and_bundle(ops, make_experiment):
    # Given an experiment in readout whose treatment clearly wins
    experiment = make_experiment(status="readout")
    add_winning_events(experiment)
    # When ops ships it with a rationale
    services.experiment_ship(experiment=experiment, actor=ops, rationale="Lift is significant.")
    # Then it is shipped, the decision records who, why and the readout, and the audit row too
    experiment.refresh_from_db()
    decision = Decision.objects.get(experiment=experiment)
    entry = _last_audit(experiment)
    assert experiment.status == "shipped"
    assert (decision.outcome, decision.rationale, decision.decided_by) == ("shipped", "Lift is significant.", ops)
    assert isinstance(decision.readout_snapshot, dict) and decision.readout_snapshot
    assert bytes(decision.readout_bundle)[:2] == b"PK"  # a zip archive
    assert (entry.transition, entry.from_state, entry.to_state, entry.comment) == (
        "ship",
        "readout",
        "shipped",
        "Lift is significant.",
    )


def test_kill__readout_with_rationale__killed_with_decision(ops, make_experiment):
    # Given an experiment in readout
    experiment = make_experiment(status="readout")
    # When ops kills it
    services.experiment_kill(experiment=experiment, actor=ops, rationale="No lift.")
    # Then it is killed, with a killed decision and an audit row
    experiment.refresh_from_db()
    assert experiment.status == "killed"
    assert Decision.objects.get(experiment=experiment).outcome == "killed"
    assert (_last_audit(experiment).from_state, _last_audit(experiment).to_state) == ("readout", "killed")


def test_kill__running_emergency_stop__killed_and_ended_at_set(ops, make_experiment):
    # Given a running experiment
    experiment = make_experiment(status="running")
    # When ops kills it (emergency stop)
    services.experiment_kill(experiment=experiment, actor=ops, rationale="Checkout errors spiked.")
    # Then it is killed, ended now, with a decision and an audit row
    experiment.refresh_from_db()
    entry = _last_audit(experiment)
    assert experiment.status == "killed"
    assert experiment.ended_at is not None
    assert Decision.objects.get(experiment=experiment).rationale == "Checkout errors spiked."
    assert (entry.transition, entry.from_state, entry.to_state) == ("kill", "running", "killed")


# --- forbidden: wrong state ----------------------------------------------------------------------------
WRONG_STATES = [
    ("experiment_submit_for_review", {}, ["review", "running", "readout", "shipped", "killed"]),
    ("experiment_request_changes", {"comment": "c"}, ["draft", "running", "readout", "shipped", "killed"]),
    ("experiment_approve_and_start", {}, ["draft", "running", "readout", "shipped", "killed"]),
    ("experiment_end_for_readout", {}, ["draft", "review", "readout", "shipped", "killed"]),
    ("experiment_ship", {"rationale": "r"}, ["draft", "review", "running", "shipped", "killed"]),
    ("experiment_kill", {"rationale": "r"}, ["draft", "review", "shipped", "killed"]),
]


@pytest.mark.parametrize(
    ("service_name", "kwargs", "status"),
    [(name, kwargs, status) for name, kwargs, statuses in WRONG_STATES for status in statuses],
)
def test_transition__wrong_state__workflow_error_and_no_audit(service_name, kwargs, status, make_experiment, superuser):
    # Given an experiment in a state the transition does not start from (owned by ops)
    experiment = make_experiment(status=status)
    audit_count = AuditLog.objects.count()
    # When a superuser (all permissions, not the owner) tries the transition
    with pytest.raises(WorkflowError) as err:
        getattr(services, service_name)(experiment=experiment, actor=superuser, **kwargs)
    # Then it is refused as an invalid state, nothing changed, nothing audited
    experiment.refresh_from_db()
    assert err.value.code == "invalid_state"
    assert experiment.status == status
    assert AuditLog.objects.count() == audit_count


# --- forbidden: missing permission -----------------------------------------------------------------------
MISSING_PERMISSION = [
    ("experiment_submit_for_review", {}, "draft", "reviewer"),
    ("experiment_submit_for_review", {}, "draft", "outsider"),
    ("experiment_request_changes", {"comment": "c"}, "review", "ops"),
    ("experiment_request_changes", {"comment": "c"}, "review", "outsider"),
    ("experiment_approve_and_start", {}, "review", "ops"),
    ("experiment_approve_and_start", {}, "review", "outsider"),
    ("experiment_end_for_readout", {}, "running", "reviewer"),
    ("experiment_ship", {"rationale": "r"}, "readout", "reviewer"),
    ("experiment_kill", {"rationale": "r"}, "readout", "reviewer"),
    ("experiment_kill", {"rationale": "r"}, "running", "outsider"),
]


@pytest.mark.parametrize(("service_name", "kwargs", "status", "who"), MISSING_PERMISSION)
def test_transition__missing_permission__permission_denied_and_no_audit(
    service_name, kwargs, status, who, make_experiment, request
):
    # Given an experiment in the right state, and a user without the transition's permission
    experiment = make_experiment(status=status)
    actor = request.getfixturevalue(who)
    audit_count = AuditLog.objects.count()
    # When they try it
    with pytest.raises(PermissionDenied):
        getattr(services, service_name)(experiment=experiment, actor=actor, **kwargs)
    # Then nothing changed and nothing was audited
    experiment.refresh_from_db()
    assert experiment.status == status
    assert AuditLog.objects.count() == audit_count


@pytest.mark.parametrize("who", ["reviewer", "superuser"])
def test_approve_and_start__owner_approves_own__permission_denied(who, make_experiment, request):
    # Given an experiment in review owned by a reviewer (or the superuser)
    owner = request.getfixturevalue(who)
    experiment = make_experiment(status="review", owner=owner)
    # When its owner tries to approve it
    with pytest.raises(PermissionDenied, match="separation of duties"):
        services.experiment_approve_and_start(experiment=experiment, actor=owner)
    # Then it stays in review, with no approval audited
    experiment.refresh_from_db()
    assert experiment.status == "review"
    assert not AuditLog.objects.filter(experiment=experiment, transition="approve_and_start").exists()


# --- forbidden: missing input ------------------------------------------------------------------------------
@pytest.mark.parametrize("comment", ["", "   ", None])
def test_request_changes__blank_comment__missing_comment_error(comment, reviewer, make_experiment):
    # Given an experiment in review
    experiment = make_experiment(status="review")
    # When a reviewer requests changes without a comment
    with pytest.raises(WorkflowError) as err:
        services.experiment_request_changes(experiment=experiment, actor=reviewer, comment=comment)
    # Then it is refused and stays in review
    experiment.refresh_from_db()
    assert err.value.code == "missing_comment"
    assert experiment.status == "review"


@pytest.mark.parametrize(("service_name", "status"), [("experiment_ship", "readout"), ("experiment_kill", "running")])
def test_decide__blank_rationale__missing_rationale_and_no_decision(service_name, status, ops, make_experiment):
    # Given an experiment that could be decided
    experiment = make_experiment(status=status)
    # When ops decides without a rationale
    with pytest.raises(WorkflowError) as err:
        getattr(services, service_name)(experiment=experiment, actor=ops, rationale="  ")
    # Then nothing is decided
    experiment.refresh_from_db()
    assert err.value.code == "missing_rationale"
    assert experiment.status == status
    assert not Decision.objects.filter(experiment=experiment).exists()


def test_submit_for_review__incomplete_plan__lists_everything_missing(ops, make_experiment):
    # Given a draft with no hypothesis, one variant and no control
    experiment = make_experiment(complete=False)
    services.variant_save(variant=Variant(experiment=experiment, key="only", name="Only"), actor=ops)
    # When ops submits it
    with pytest.raises(WorkflowError) as err:
        services.experiment_submit_for_review(experiment=experiment, actor=ops)
    # Then the error lists each missing piece and the experiment stays a draft
    experiment.refresh_from_db()
    assert err.value.code == "incomplete_plan"
    assert err.value.problems == ["a hypothesis", "at least 2 variants (has 1)", "exactly one control variant (has 0)"]
    assert "a hypothesis" in str(err.value)
    assert experiment.status == "draft"


# --- plan edits after draft: forbidden ------------------------------------------------------------------------
@pytest.mark.parametrize("status", ["review", "running", "shipped"])
def test_save_plan__after_draft__plan_locked(status, ops, make_experiment):
    # Given an experiment that left draft
    experiment = make_experiment(status=status)
    experiment.hypothesis = "Something else"
    # When its plan or variants are edited
    with pytest.raises(WorkflowError) as err:
        services.experiment_save_plan(experiment=experiment, actor=ops)
    with pytest.raises(WorkflowError):
        services.variant_save(variant=Variant(experiment=experiment, key="blue", name="Blue"), actor=ops)
    with pytest.raises(WorkflowError):
        services.variant_delete(variant=experiment.variants.get(key="green"), actor=ops)
    # Then nothing changed
    experiment.refresh_from_db()
    assert err.value.code == "plan_locked"
    assert experiment.hypothesis == "A green button lifts conversion."
    assert experiment.variants.count() == 2


def test_save_plan__draft__saved(ops, make_experiment):
    # Given a draft
    experiment = make_experiment()
    experiment.hypothesis = "Sharper hypothesis"
    # When ops edits it
    services.experiment_save_plan(experiment=experiment, actor=ops)
    # Then it is saved
    experiment.refresh_from_db()
    assert experiment.hypothesis == "Sharper hypothesis"


def test_variant_save__second_control__validation_error_then_db_refuses(ops, make_experiment):
    # Given a draft with a control
    experiment = make_experiment()
    second = Variant(experiment=experiment, key="blue", name="Blue", is_control=True)
    # When a second control is added through the service, then bypassing it
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        services.variant_save(variant=second, actor=ops)
    # Then the database refuses it as well
    with pytest.raises(IntegrityError), transaction.atomic():
        Variant.objects.bulk_create([second])


# --- stale objects and direct writes ---------------------------------------------------------------------
def test_transition__stale_instance__acts_on_current_state(reviewer, approver, make_experiment):
    # Given two copies of an experiment in review; one is approved
    experiment = make_experiment(status="review")
    stale = Experiment.objects.get(pk=experiment.pk)
    services.experiment_approve_and_start(experiment=experiment, actor=approver)
    # When the other copy is approved too
    with pytest.raises(WorkflowError) as err:
        services.experiment_approve_and_start(experiment=stale, actor=reviewer)
    # Then the second attempt is refused, and only one approval is recorded
    assert err.value.code == "invalid_state"
    assert AuditLog.objects.filter(experiment=experiment, transition="approve_and_start").count() == 1


def test_status__queryset_update__refused(make_experiment):
    # Given an experiment
    experiment = make_experiment()
    # When someone writes the status directly through a queryset
    with pytest.raises(PermissionError):
        Experiment.objects.filter(pk=experiment.pk).update(status="running")
    # Then it is unchanged
    experiment.refresh_from_db()
    assert experiment.status == "draft"


def test_audit_log__update_or_delete__refused(make_experiment):
    # Given an audit row
    entry = _last_audit(make_experiment())
    entry.comment = "rewritten"
    # When it is changed or deleted, Then the model refuses
    with pytest.raises(PermissionError):
        entry.save()
    with pytest.raises(PermissionError):
        entry.delete()
    with pytest.raises(PermissionError):
        AuditLog.objects.filter(pk=entry.pk).update(comment="x")
    assert AuditLog.objects.get(pk=entry.pk).comment == ""


@pytest.mark.parametrize(
    ("status", "field"), [("running", "started_at"), ("readout", "ended_at"), ("killed", "ended_at")]
)
def test_experiment__live_without_timestamp__rejected_by_db(status, field, ops):
    # Given / When an experiment row claims a status without the timestamp its transition sets
    row = Experiment(name="X", slug="x", owner=ops, status=status)
    # Then the database refuses it
    with pytest.raises(IntegrityError), transaction.atomic():
        Experiment.objects.bulk_create([row])
