"""Reads that are more than a one-line queryset."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.shortcuts import get_object_or_404
from django.utils import timezone

from experiments.models import AuditLog, Decision, Experiment, ExperimentMetric, PlannedMetric
from experiments.worktime import working_days_between
from readouts.definitions import MetricDefinition

REVIEW_SLA_WORKING_DAYS = 2


@dataclass(frozen=True)
class ReviewQueueRow:
    experiment: Experiment
    submitted_at: datetime
    age: timedelta
    working_days: float
    submission_id: int | None = None  # the submit_for_review audit entry (None: no entry, e.g. old data)

    @property
    def overdue(self) -> bool:
        return self.working_days > REVIEW_SLA_WORKING_DAYS


def review_queue(*, now: datetime | None = None) -> list[ReviewQueueRow]:
    """Experiments in review, oldest submission first, with their age in the queue (one query)."""
    now = now or timezone.now()
    last_submit = AuditLog.objects.filter(experiment=OuterRef("pk"), transition="submit_for_review").order_by(
        "-at", "-id"
    )
    experiments = (
        Experiment.objects.filter(status=Experiment.Status.REVIEW)
        .select_related("owner")
        .annotate(
            submitted_at=Subquery(last_submit.values("at")[:1]),
            submission_id=Subquery(last_submit.values("id")[:1]),
            variant_count=Count("variants"),
        )
        .order_by("submitted_at", "pk")
    )
    rows = []
    for e in experiments:
        submitted_at = e.submitted_at or e.updated_at
        rows.append(
            ReviewQueueRow(
                experiment=e,
                submitted_at=submitted_at,
                age=max(now - submitted_at, timedelta(0)),
                working_days=working_days_between(timezone.localtime(submitted_at), now),
                submission_id=e.submission_id,
            )
        )
    return rows


def experiment_get_by_slug(*, slug: str) -> Experiment:
    """The experiment with its owner and variants (404 if unknown)."""
    return get_object_or_404(Experiment.objects.select_related("owner").prefetch_related("variants"), slug=slug)


def experiment_audit_entries(*, experiment: Experiment, newest_first: bool = False) -> QuerySet[AuditLog]:
    order = ["-at", "-id"] if newest_first else ["at", "id"]
    return AuditLog.objects.filter(experiment=experiment).select_related("actor").order_by(*order)


def experiment_decision(*, experiment: Experiment) -> Decision | None:
    return Decision.objects.filter(experiment=experiment).select_related("decided_by", "shipped_variant").first()


def variant_shares(*, experiment: Experiment) -> list[tuple]:
    """(variant, traffic share in percent) for each variant, from the prefetched variants."""
    variants = list(experiment.variants.all())
    total = sum(v.weight for v in variants) or 1
    return [(v, 100.0 * v.weight / total) for v in variants]


# --- metric definitions (the one selector every reader uses) ------------------------------------------
def experiment_live_metric_plan(experiment: Experiment) -> tuple[list[PlannedMetric], dict[str, MetricDefinition]]:
    """The plan and its definitions from the live catalog (catalog rows) or ad hoc (rows without one): one query."""
    from experiments.catalog import metric_definition  # noqa: PLC0415 - catalog imports this module's models

    rows = list(
        ExperimentMetric.objects.filter(experiment=experiment).select_related(
            "metric", "metric__numerator", "metric__denominator"
        )
    )
    by_key = {r.key: r for r in rows}
    plan = experiment.metric_plan(rows)
    out: dict[str, MetricDefinition] = {}
    for planned in plan:
        row = by_key.get(planned.key)
        if row is not None and row.metric_id is not None:
            out[planned.key] = replace(metric_definition(row.metric), key=planned.key)
        else:
            out[planned.key] = MetricDefinition.adhoc(key=planned.key, kind=planned.kind, direction=planned.direction)
    return plan, out


def experiment_live_metric_definitions(*, experiment: Experiment) -> dict[str, MetricDefinition]:
    """The planned metrics' definitions from the live catalog and ad-hoc rows (what approval freezes)."""
    return experiment_live_metric_plan(experiment)[1]


def _frozen(experiment: Experiment) -> tuple[list[PlannedMetric], dict[str, MetricDefinition]] | None:
    """The plan and definitions frozen into the approved plan (None: not approved, or approved pre-catalog)."""
    metrics = (experiment.preregistration or {}).get("metrics") or []
    if not metrics or not all(isinstance(m.get("definition"), dict) for m in metrics):
        return None
    plan = [PlannedMetric(m["key"], m["role"], m["kind"], m["direction"]) for m in metrics]
    return plan, {m["key"]: MetricDefinition.from_dict(m["definition"]) for m in metrics}


def experiment_metric_plan(experiment: Experiment) -> tuple[list[PlannedMetric], dict[str, MetricDefinition]]:
    """The planned metrics in plan order and each one's definition (what ``experiment_metric_definitions`` gives).

    Past draft and approved: both from the pre-registration, without a query. Otherwise one query.
    """
    if experiment.status != Experiment.Status.DRAFT:
        frozen = _frozen(experiment)
        if frozen is not None:
            return frozen
    return experiment_live_metric_plan(experiment)


def experiment_metric_definitions(experiment: Experiment) -> dict[str, MetricDefinition]:
    """Every planned metric's definition, keyed by the planned key, in plan order.

    Past draft, from the frozen approved plan (``Experiment.preregistration``), so editing the catalog never
    changes a running or decided experiment's numbers; otherwise (a draft, or a plan approved before the
    catalog existed) from the live catalog and ad-hoc rows.
    """
    return experiment_metric_plan(experiment)[1]
