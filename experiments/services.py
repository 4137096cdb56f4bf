"""Every write to experiments goes through here.

Workflow services lock the experiment row, run the django-fsm transition (which checks the state,
the conditions and — checked here first, so the caller gets a 403 — the permission), save, and
write the audit entry in the same transaction. Two people acting at once: the second one waits
for the row lock, then finds the experiment already moved and gets a `WorkflowError`
(`ConcurrentTransitionMixin` is a second line of defence for callers that skip the lock).

The plan (hypothesis, primary metric, variants) can only change while the experiment is a draft:
edits after it left draft are refused (`WorkflowError`), so there is nothing to audit. The plan as
submitted and as approved is kept in the `extra` of those audit rows; the approved plan, with its power
plan, is also frozen on the experiment as its pre-registration (`Experiment.preregistration`).

Ship is guarded (docs/sop.md, "Decision rules"): it names the variant it ships and is refused with
`ship_blocked` while the readout shows a blocking problem, unless an override reason is given, which is
recorded with the problems it overrode. Kill is never blocked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django_fsm import ConcurrentTransition, TransitionNotAllowed

from experiments.models import PERM_APPROVE, AuditLog, Decision, Experiment, ExperimentMetric, Layer, Variant


class WorkflowError(Exception):
    """A workflow step was refused for a reason other than permissions.

    `code` is one of: "invalid_state" (wrong status, or someone else moved it first),
    "incomplete_plan", "missing_comment", "missing_rationale", "plan_locked", "missing_variant",
    "invalid_variant", "ship_blocked", "layer_overlap" (the layer range overlaps running experiments: `problems`
    lists their slugs), "invalid_holdout".
    `problems` lists what is missing or wrong, for display; for "ship_blocked" it is the list of problem
    codes (`srm`, `guardrail_worse`, `primary_not_better`, `sample_not_reached`) and `details` holds
    `{"code", "message"}` for each.
    """

    def __init__(
        self, message: str, *, code: str, problems: list[str] | None = None, details: list[dict] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.problems = problems or []
        self.details = details or []

    def __str__(self) -> str:
        return self.message


# --- audit --------------------------------------------------------------------------------------
def audit_log_record(
    *,
    experiment: Experiment,
    actor: AbstractBaseUser | None,
    transition: str,
    from_state: str = "",
    to_state: str = "",
    comment: str = "",
    extra: dict[str, Any] | None = None,
) -> AuditLog:
    """The one function that writes to the append-only audit log."""
    return AuditLog.objects.create(
        experiment=experiment,
        actor=actor,
        transition=transition,
        from_state=from_state,
        to_state=to_state,
        comment=comment,
        extra=extra or {},
    )


def _plan_snapshot(experiment: Experiment) -> dict[str, Any]:
    """The plan as it stands; each planned metric carries its full definition (``MetricDefinition.to_dict()``)."""
    from experiments.selectors import experiment_live_metric_plan  # noqa: PLC0415

    plan, definitions = experiment_live_metric_plan(experiment)
    return {
        "hypothesis": experiment.hypothesis,
        "primary_metric": experiment.primary_metric,
        "metrics": [
            {
                "key": m.key,
                "role": m.role,
                "kind": m.kind,
                "direction": m.direction,
                "definition": definitions[m.key].to_dict(),
            }
            for m in plan
        ],
        "variants": [
            {"key": v.key, "name": v.name, "is_control": v.is_control, "weight": v.weight}
            for v in experiment.variants.all()
        ],
        "analysis": experiment.analysis,
        "alpha": experiment.alpha,
        "power": experiment.power,
        "mde": experiment.mde,
        "baseline_rate": experiment.baseline_rate,
        "baseline_mean": experiment.baseline_mean,
        "baseline_sd": experiment.baseline_sd,
        "expected_daily_users": experiment.expected_daily_users,
        "dimensions": list(experiment.dimensions or []),
        "data_source": experiment.data_source.key if experiment.data_source_id else None,
        **_assignment_plan(experiment),
    }


def _assignment_plan(experiment: Experiment) -> dict[str, Any]:
    """Who is enrolled (docs/assignment.md): coverage, targeting, layer range, holdout."""
    layer = experiment.layer
    return {
        "coverage": experiment.coverage,
        "targeting": experiment.targeting or {},
        "layer": ({"key": layer.key, "start": experiment.layer_start, "end": experiment.layer_end} if layer else None),
        "holdout": experiment.holdout.slug if experiment.holdout_id else None,
    }


def preregistration_build(experiment: Experiment) -> dict[str, Any]:
    """The plan as a concrete commitment: the plan snapshot plus its power plan (what approval freezes)."""
    from readouts.selectors import power_plan_get  # readouts depends on experiments, not the other way round

    plan = power_plan_get(experiment=experiment)
    return {
        **_plan_snapshot(experiment),
        "power_plan": {
            "users_per_arm": plan.users_per_arm,
            "expected_days": plan.expected_days,
            "sentence": plan.sentence,
        },
    }


# --- plan edits (draft only) ----------------------------------------------------------------------
def _lock_draft(experiment: Experiment) -> None:
    current = Experiment.objects.select_for_update().filter(pk=experiment.pk).values_list("status", flat=True).first()
    if current is not None and current != Experiment.Status.DRAFT:
        raise WorkflowError(
            f"The plan of '{experiment.slug}' is locked: it left draft (status: {current}).",
            code="plan_locked",
        )


@transaction.atomic
def experiment_save_plan(*, experiment: Experiment, actor: AbstractBaseUser) -> Experiment:
    """Create an experiment (as a draft) or save changes to its plan while it is a draft."""
    creating = experiment.pk is None
    if not creating:
        _lock_draft(experiment)
    experiment.full_clean(exclude=["status"])  # protected FSM field: set only by transitions
    experiment.save()
    if creating:
        audit_log_record(experiment=experiment, actor=actor, transition="create", to_state=experiment.status)
    return experiment


@transaction.atomic
def layer_save(*, layer: Layer, actor: AbstractBaseUser) -> Layer:  # noqa: ARG001
    """Create a layer or rename it (its key and salt never change once experiments use it)."""
    layer.full_clean()
    layer.save()
    return layer


@transaction.atomic
def variant_save(*, variant: Variant, actor: AbstractBaseUser) -> Variant:  # noqa: ARG001
    """Add or change a variant of a draft experiment."""
    _lock_draft(variant.experiment)
    variant.full_clean()
    variant.save()
    return variant


def _sync_primary_metric(experiment: Experiment) -> None:
    """``Experiment.primary_metric`` always equals the primary metric row's key (when there is one)."""
    key = experiment.metrics.filter(role=ExperimentMetric.Role.PRIMARY).values_list("key", flat=True).first()
    if key and key != experiment.primary_metric:
        Experiment.objects.filter(pk=experiment.pk).update(primary_metric=key)
        experiment.primary_metric = key


@transaction.atomic
def experiment_metric_save(*, metric: ExperimentMetric, actor: AbstractBaseUser) -> ExperimentMetric:  # noqa: ARG001
    """Add or change a planned metric of a draft experiment (keeps ``primary_metric`` in sync)."""
    _lock_draft(metric.experiment)
    metric.apply_catalog()
    metric.full_clean()
    metric.events = _row_events(metric)
    metric.save()
    _sync_primary_metric(metric.experiment)
    return metric


def _row_events(row: ExperimentMetric) -> dict[str, str]:
    """The conversion events a planned metric reads (ingest accepts them), from its live definition."""
    from experiments.catalog import metric_definition, metric_row_events  # noqa: PLC0415
    from readouts.definitions import MetricDefinition  # noqa: PLC0415

    if row.metric_id is None:
        return metric_row_events(MetricDefinition.adhoc(key=row.key, kind=row.kind, direction=row.direction))
    return metric_row_events(metric_definition(row.metric))


def _freeze_row_events(experiment: Experiment) -> None:
    """At approval: each planned row's events from the frozen definitions (what ingest accepts while running)."""
    from experiments.catalog import metric_row_events  # noqa: PLC0415
    from readouts.definitions import MetricDefinition  # noqa: PLC0415

    for planned in (experiment.preregistration or {}).get("metrics") or []:
        events = metric_row_events(MetricDefinition.from_dict(planned["definition"]))
        ExperimentMetric.objects.filter(experiment=experiment, key=planned["key"]).update(events=events)


@transaction.atomic
def experiment_metric_delete(*, metric: ExperimentMetric, actor: AbstractBaseUser) -> None:  # noqa: ARG001
    """Remove a planned metric from a draft experiment."""
    _lock_draft(metric.experiment)
    metric.delete()


@transaction.atomic
def variant_delete(*, variant: Variant, actor: AbstractBaseUser) -> None:  # noqa: ARG001
    """Remove a variant from a draft experiment."""
    _lock_draft(variant.experiment)
    variant.delete()


# --- workflow -------------------------------------------------------------------------------------
def _lock(experiment: Experiment) -> Experiment:
    """A fresh copy of the row, locked until the transaction ends (the caller's copy may be stale).

    Not `refresh_from_db()`: django-fsm-2's version briefly un-protects the *class-level* status
    field, which races with other threads doing the same (found by tests/experiments/test_concurrency.py).
    """
    return Experiment.objects.select_for_update().get(pk=experiment.pk)


def _sync(target: Experiment, source: Experiment) -> None:
    """Give the caller's instance the saved state, without going through the protected descriptor."""
    for field in Experiment._meta.concrete_fields:
        target.__dict__[field.attname] = getattr(source, field.attname)
    target._update_initial_state()


def _check_transition(*, experiment: Experiment, actor: AbstractBaseUser, name: str) -> str:
    """Check permission, then state, then the plan; returns the current state."""
    meta = getattr(experiment, name)._django_fsm
    any_transition = next(iter(meta.transitions.values()))  # one permission per transition method
    if not any_transition.has_perm(experiment, actor):
        if name == "approve_and_start" and actor.has_perm(PERM_APPROVE):
            raise PermissionDenied("You cannot approve an experiment you own (separation of duties).")
        raise PermissionDenied(f"You do not have permission to {_human(name)} experiments.")
    if meta.get_transition(experiment.status) is None:
        raise WorkflowError(
            f"Cannot {_human(name)} '{experiment.slug}': it is {experiment.get_status_display().lower()}.",
            code="invalid_state",
        )
    if name == "submit_for_review" and (problems := experiment.plan_problems()):
        raise WorkflowError(
            f"'{experiment.slug}' cannot be submitted yet; it needs {', '.join(problems)}.",
            code="incomplete_plan",
            problems=problems,
        )
    return experiment.status


def _human(name: str) -> str:
    return name.replace("_", " ")


def _transition(
    *,
    experiment: Experiment,
    actor: AbstractBaseUser,
    name: str,
    comment: str = "",
    extra: Callable[[Experiment], dict[str, Any]] | None = None,
    kwargs: dict[str, Any] | None = None,
    before: Callable[[Experiment], None] | None = None,
) -> AuditLog:
    """Lock, check, transition, save and audit. Must run inside a transaction.

    Checks run in this order: permission (PermissionDenied), state, plan, then required text
    (`comment`/`rationale` in kwargs must be non-blank), so nobody learns more than they may.
    """
    locked = _lock(experiment)
    from_state = _check_transition(experiment=locked, actor=actor, name=name)
    for field in ("comment", "rationale"):
        if kwargs is not None and field in kwargs and not kwargs[field]:
            raise WorkflowError(f"A {field} is required.", code=f"missing_{field}", problems=[f"a {field}"])
    if before is not None:
        before(locked)
    try:
        getattr(locked, name)(**(kwargs or {}))
        locked.save()
    except (TransitionNotAllowed, ConcurrentTransition) as exc:
        raise WorkflowError(f"Cannot {_human(name)} '{locked.slug}': {exc}", code="invalid_state") from exc
    _sync(experiment, locked)
    entry = audit_log_record(
        experiment=locked,
        actor=actor,
        transition=name,
        from_state=from_state,
        to_state=locked.status,
        comment=comment,
        extra=extra(locked) if extra else None,
    )
    event = _TRANSITION_EVENTS.get(name)
    if event:
        from experiments.notifications import notify

        # A re-submission is a new occasion; approval and the decision happen once per experiment.
        occasion = f"{event}:{locked.pk}:{entry.pk}" if name == "submit_for_review" else None
        notify(experiment=locked, event=event, occasion=occasion, detail=_event_detail(name, locked, comment))
    return entry


def _event_detail(name: str, experiment: Experiment, comment: str) -> str:
    """What the notification email says happened, in words."""
    text = {
        "submit_for_review": "It was submitted for review and waits for a reviewer.",
        "approve_and_start": "A reviewer approved it and it started.",
        "ship": "It was decided: shipped.",
        "kill": "It was decided: killed.",
    }[name]
    return f"{text} Comment: {comment}" if comment else text


_TRANSITION_EVENTS = {
    "submit_for_review": "experiment.review_requested",
    "approve_and_start": "experiment.approved",
    "ship": "experiment.decided",
    "kill": "experiment.decided",
}


@transaction.atomic
def experiment_submit_for_review(*, experiment: Experiment, actor: AbstractBaseUser) -> AuditLog:
    """draft → review. Needs >= 2 variants, exactly one control, a hypothesis and a primary metric."""
    return _transition(experiment=experiment, actor=actor, name="submit_for_review", extra=_plan_snapshot)


@transaction.atomic
def experiment_request_changes(*, experiment: Experiment, actor: AbstractBaseUser, comment: str) -> AuditLog:
    """review → draft, with the reviewer's (required) comment."""
    comment = (comment or "").strip()
    return _transition(
        experiment=experiment, actor=actor, name="request_changes", comment=comment, kwargs={"comment": comment}
    )


@transaction.atomic
def experiment_approve_and_start(*, experiment: Experiment, actor: AbstractBaseUser) -> AuditLog:
    """review → running (sets started_at). A reviewer can never approve an experiment they own.

    Freezes the pre-registration (plan + power plan) on the experiment and in the audit row.
    """

    def freeze(exp: Experiment) -> None:
        _check_holdout(exp)
        _check_layer_free(exp)
        exp.preregistration = preregistration_build(exp)
        _freeze_row_events(exp)

    return _transition(
        experiment=experiment,
        actor=actor,
        name="approve_and_start",
        before=freeze,
        extra=lambda exp: dict(exp.preregistration),
    )


def _check_layer_free(experiment: Experiment) -> None:
    """Refuse (`layer_overlap`) when the experiment's layer range overlaps a running experiment's in its layer.

    The layer row is locked first (`SELECT … FOR UPDATE`), so two approvals in one layer run one after the
    other: the second sees the first running (its own statement, after the lock, reads what was committed).
    """
    if experiment.layer_id is None:
        return
    layer = Layer.objects.select_for_update().get(pk=experiment.layer_id)
    start, end = experiment.layer_start, experiment.layer_end
    conflicts = list(
        Experiment.objects.filter(
            layer_id=layer.pk, status=Experiment.Status.RUNNING, layer_start__lt=end, layer_end__gt=start
        )
        .exclude(pk=experiment.pk)
        .order_by("slug")
        .values_list("name", "slug", "layer_start", "layer_end")
    )
    if conflicts:
        names = [f"{name} ({slug}, {s:g}–{e:g})" for name, slug, s, e in conflicts]
        raise WorkflowError(
            f"Cannot approve '{experiment.slug}': its range {start:g}–{end:g} of layer '{layer.key}' overlaps "
            f"running {'experiment' if len(names) == 1 else 'experiments'} {', '.join(names)}.",
            code="layer_overlap",
            problems=[slug for _, slug, _, _ in conflicts],
        )


def _check_holdout(experiment: Experiment) -> None:
    """The holdout must be running, with exactly two variants (its control is the held-out group)."""
    if experiment.holdout_id is None:
        return
    holdout = Experiment.objects.get(pk=experiment.holdout_id)
    variants = holdout.variants.count()
    if holdout.status != Experiment.Status.RUNNING or variants != 2:
        raise WorkflowError(
            f"Cannot approve '{experiment.slug}': its holdout '{holdout.slug}' must be running with exactly two "
            f"variants (it is {holdout.get_status_display().lower()} with {variants}).",
            code="invalid_holdout",
            problems=[holdout.slug],
        )


@transaction.atomic
def experiment_end_for_readout(*, experiment: Experiment, actor: AbstractBaseUser) -> AuditLog:
    """running → readout (sets ended_at)."""
    return _transition(experiment=experiment, actor=actor, name="end_for_readout")


def _ship_variant(experiment: Experiment, key: str | None) -> Variant:
    """The treatment to ship: ``key``, or the only treatment when there is one."""
    treatments = [v for v in Variant.objects.filter(experiment=experiment).order_by("key") if not v.is_control]
    keys = [v.key for v in treatments]
    if not key:
        if len(treatments) == 1:
            return treatments[0]
        raise WorkflowError(
            f"Name the variant to ship (one of: {', '.join(keys) or 'none'}).", code="missing_variant", problems=keys
        )
    match = next((v for v in treatments if v.key == key), None)
    if match is None:
        raise WorkflowError(
            f"'{key}' is not a treatment of '{experiment.slug}' (one of: {', '.join(keys) or 'none'}).",
            code="invalid_variant",
            problems=keys,
        )
    return match


def _decide(
    *,
    experiment: Experiment,
    actor: AbstractBaseUser,
    rationale: str,
    name: str,
    variant: str | None = None,
    override_reason: str = "",
) -> AuditLog:
    rationale = (rationale or "").strip()
    override_reason = (override_reason or "").strip()
    outcome = Decision.Outcome.SHIPPED if name == "ship" else Decision.Outcome.KILLED
    evidence: dict[str, Any] = {"variant": None, "override": None}

    def take_readout(exp: Experiment) -> None:
        # Under the row lock, before the status changes: the numbers the decision is based on.
        # Imported here: readouts depends on experiments, not the other way round.
        from readouts.exports import readout_decision_record
        from readouts.governance import governance_get, ship_problems_get
        from readouts.selectors import readout_get

        readout = readout_get(experiment=exp)
        governance = governance_get(experiment=exp, readout=readout)
        if name == "ship":
            shipped = _ship_variant(exp, variant)
            problems = ship_problems_get(readout=readout, governance=governance, variant=shipped.key)
            codes = [p.code for p in problems]
            if problems and not override_reason:
                raise WorkflowError(
                    f"Cannot ship '{exp.slug}' ({shipped.key}): "
                    + " ".join(p.message for p in problems)
                    + " Give an override reason to ship anyway (it is recorded).",
                    code="ship_blocked",
                    problems=codes,
                    details=[p.as_json() for p in problems],
                )
            evidence["variant"] = shipped
            if problems:
                evidence["override"] = {"reason": override_reason, "problems": codes}
        decision = {
            "outcome": outcome,
            "variant": evidence["variant"].key if evidence["variant"] else None,
            "rationale": rationale,
            "decided_by": actor.get_username(),
            "override": evidence["override"],
        }
        evidence["deviations"] = [{"code": d.code, "message": d.message} for d in governance.deviations]
        evidence["snapshot"], evidence["bundle"] = readout_decision_record(
            experiment=exp, readout=readout, governance=governance, decision=decision
        )

    def audit_extra(_: Experiment) -> dict[str, Any]:
        extra: dict[str, Any] = {"deviations": evidence["deviations"]}
        if evidence["variant"] is not None:
            extra["variant"] = evidence["variant"].key
        if evidence["override"] is not None:
            extra["override"] = evidence["override"]
        return extra

    entry = _transition(
        experiment=experiment,
        actor=actor,
        name=name,
        comment=rationale,
        kwargs={"rationale": rationale},
        before=take_readout,
        extra=audit_extra,
    )
    decision = Decision(
        experiment=experiment,
        outcome=outcome,
        rationale=rationale,
        decided_by=actor,
        readout_snapshot=evidence["snapshot"],
        readout_bundle=evidence["bundle"],
        shipped_variant=evidence["variant"],
        override_reason=evidence["override"]["reason"] if evidence["override"] else "",
    )
    decision.full_clean(exclude=["readout_bundle"])
    decision.save()
    return entry


@transaction.atomic
def experiment_ship(
    *,
    experiment: Experiment,
    actor: AbstractBaseUser,
    rationale: str,
    override_reason: str = "",
    variant: str | None = None,
) -> AuditLog:
    """readout → shipped: records the Decision (shipped variant, readout snapshot and bundle).

    ``variant`` is the treatment's key (optional with one treatment). Refused with ``ship_blocked`` while a
    blocking problem holds for that variant (srm, guardrail_worse, primary_not_better, sample_not_reached),
    unless ``override_reason`` is given: then it ships and the override (reason + problems) is recorded in
    the audit row, the decision and its bundle. An override reason with nothing to override is not recorded.
    """
    return _decide(
        experiment=experiment,
        actor=actor,
        rationale=rationale,
        name="ship",
        variant=variant,
        override_reason=override_reason,
    )


@transaction.atomic
def experiment_kill(*, experiment: Experiment, actor: AbstractBaseUser, rationale: str) -> AuditLog:
    """running/readout → killed (emergency stop allowed while running); records the Decision. Never blocked."""
    return _decide(experiment=experiment, actor=actor, rationale=rationale, name="kill")


# Transition method name → service, for callers that dispatch by name (the admin).
TRANSITION_SERVICES: dict[str, Callable[..., AuditLog]] = {
    "submit_for_review": experiment_submit_for_review,
    "request_changes": experiment_request_changes,
    "approve_and_start": experiment_approve_and_start,
    "end_for_readout": experiment_end_for_readout,
    "ship": experiment_ship,
    "kill": experiment_kill,
}
