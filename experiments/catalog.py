"""The metric catalog: definitions, writes (audited) and reads of ``experiments.Metric``.

Every catalog write goes through ``metric_save`` (the admin, ``metrics_import``, the demo), which
validates, checks the certify permission for official metrics, and appends a ``MetricChange`` (who,
when, before/after, the running experiments that used the metric at the time) in the same transaction.
Experiments compute from the definition frozen into their approved plan, so an edit here never
changes a running or decided experiment's numbers (``experiments.selectors.experiment_metric_definitions``).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Q, QuerySet

from experiments.models import PERM_CERTIFY_METRIC, Experiment, ExperimentMetric, Metric, MetricChange
from readouts.definitions import MetricDefinition

# The metric object's fields (API, YAML, audit), in this order; ratio parts by key, owner by username.
METRIC_FIELDS = (
    "key",
    "name",
    "description",
    "owner",
    "kind",
    "direction",
    "event",
    "aggregation",
    "window_hours",
    "delay_hours",
    "cap",
    "cap_value",
    "cap_ignore_zeros",
    "filter_prop",
    "filter_values",
    "numerator",
    "denominator",
    "steps",
    "official",
    "archived",
)


def metric_definition(metric: Metric) -> MetricDefinition:
    """The frozen definition of a catalog metric (ratio parts as full definitions; ``event`` filled in)."""
    simple = metric.kind in (Metric.Kind.BINARY, Metric.Kind.MEAN)
    return MetricDefinition(
        key=metric.key,
        kind=metric.kind,
        direction=metric.direction,
        name=metric.name,
        event=(metric.event or metric.key) if simple else "",
        aggregation=metric.aggregation,
        window_hours=metric.window_hours,
        delay_hours=float(metric.delay_hours or 0.0),
        cap=metric.cap,
        cap_value=metric.cap_value,
        cap_ignore_zeros=metric.cap_ignore_zeros,
        filter_prop=metric.filter_prop,
        filter_values=tuple(str(v) for v in metric.filter_values or ()),
        numerator=metric_definition(metric.numerator) if metric.numerator_id else None,
        denominator=metric_definition(metric.denominator) if metric.denominator_id else None,
        steps=tuple(metric.steps or ()),
    )


def metric_as_dict(metric: Metric) -> dict[str, Any]:
    """The metric object (``/api/metrics``, YAML, the audit trail): the model's field names."""
    return {
        "key": metric.key,
        "name": metric.name,
        "description": metric.description,
        "owner": metric.owner.get_username() if metric.owner_id else None,
        "kind": metric.kind,
        "direction": metric.direction,
        "event": metric.event,
        "aggregation": metric.aggregation,
        "window_hours": metric.window_hours,
        "delay_hours": metric.delay_hours,
        "cap": metric.cap,
        "cap_value": metric.cap_value,
        "cap_ignore_zeros": metric.cap_ignore_zeros,
        "filter_prop": metric.filter_prop,
        "filter_values": [str(v) for v in metric.filter_values or []],
        "numerator": metric.numerator.key if metric.numerator_id else None,
        "denominator": metric.denominator.key if metric.denominator_id else None,
        "steps": list(metric.steps or []),
        "official": metric.official,
        "archived": metric.archived,
    }


def metric_experiments(*, metric: Metric, statuses: list[str] | None = None) -> QuerySet[Experiment]:
    """Experiments whose plan uses the metric, directly or as a ratio's part."""
    rows = ExperimentMetric.objects.filter(
        Q(metric=metric) | Q(metric__numerator=metric) | Q(metric__denominator=metric)
    )
    experiments = Experiment.objects.filter(pk__in=rows.values("experiment_id")).select_related("owner")
    if statuses is not None:
        experiments = experiments.filter(status__in=statuses)
    return experiments.order_by("slug")


def metrics_used_by(*, metrics: list[Metric]) -> dict[int, list[Experiment]]:
    """For a page of metrics, the experiments using each (directly or as a ratio part), in two queries."""
    ids = [m.pk for m in metrics]
    rows = ExperimentMetric.objects.filter(
        Q(metric_id__in=ids) | Q(metric__numerator_id__in=ids) | Q(metric__denominator_id__in=ids)
    ).select_related("experiment", "metric")
    out: dict[int, dict[int, Experiment]] = {}
    for row in rows:
        for pk in (row.metric_id, row.metric.numerator_id, row.metric.denominator_id):
            if pk in ids:
                out.setdefault(pk, {})[row.experiment_id] = row.experiment
    return {pk: sorted(exps.values(), key=lambda e: e.slug) for pk, exps in out.items()}


def metric_owners() -> list[str]:
    return sorted({u for u in Metric.objects.filter(owner__isnull=False).values_list("owner__username", flat=True)})


def metric_used_by(*, metric: Metric) -> list[str]:
    """Slugs of every experiment whose plan uses the metric (directly or as a ratio part)."""
    return list(metric_experiments(metric=metric).values_list("slug", flat=True))


def _hours(h: float) -> str:
    return f"{h:g} h"


def metric_sentence(metric: Metric) -> str:
    """The definition in words, e.g. "Revenue: sum of `value` on `purchase` events within 72 h of exposure,
    capped at the 99th percentile"."""
    d = metric_definition(metric)
    if d.kind == "ratio":
        return (
            f"{d.name}: {metric_part_phrase(d.numerator)} divided by {metric_part_phrase(d.denominator)} "
            "(summed over each variant's users)."
        )
    if d.kind == "funnel":
        text = f"{d.name}: share of exposed users reaching {' → '.join(f'`{s}`' for s in d.steps)} in order"
        return text + _timing(d) + _filter_phrase(d) + "."
    return f"{d.name}: {metric_part_phrase(d)}."


def metric_part_phrase(d) -> str:
    if d.kind == "binary":
        what = f"whether the user has any `{d.event}` event"
    elif d.aggregation == "count":
        what = f"number of `{d.event}` events per user"
    else:
        what = f"sum of `value` on `{d.event}` events per user"
    text = what + _filter_phrase(d) + _timing(d)
    if d.cap == "absolute":
        text += f", capped at {d.cap_value:g}"
    elif d.cap == "percentile":
        pct = d.cap_value * 100
        zeros = " (zeros left out)" if d.cap_ignore_zeros else ""
        text += f", capped at the {pct:g}th percentile of all exposed users{zeros}"
    return text


def _filter_phrase(d) -> str:
    if not d.filter_prop:
        return ""
    return f" where `props.{d.filter_prop}` is {' or '.join(f'`{v}`' for v in d.filter_values)}"


def _timing(d) -> str:
    delay = d.delay_hours or 0.0
    start = "exposure" if not delay else f"exposure {'+' if delay > 0 else '−'} {_hours(abs(delay))}"
    if d.window_hours is None:
        return f" at or after {start}" if delay else " after exposure"
    return f" within {_hours(d.window_hours)} of {start}"


def metric_running_experiments(*, metric: Metric) -> list[str]:
    if metric.pk is None:
        return []
    return list(metric_experiments(metric=metric, statuses=[Experiment.Status.RUNNING]).values_list("slug", flat=True))


def metric_running_warning(running: list[str]) -> str:
    n = len(running)
    return (
        f"Used by {n} running experiment{'s' if n != 1 else ''} ({', '.join(running)}); "
        "their readouts keep the approved definition."
    )


def metric_certify_problem(*, metric: Metric, actor: AbstractBaseUser | None, before: dict | None) -> str:
    """Why ``actor`` may not write this metric ("" when they may): official needs ``certify_metric``."""
    touches_official = metric.official or bool(before and before.get("official"))
    if touches_official and not (actor is not None and actor.has_perm(PERM_CERTIFY_METRIC)):
        return "Only users with the certify_metric permission may set a metric official or edit an official metric."
    return ""


@transaction.atomic
def metric_save(*, metric: Metric, actor: AbstractBaseUser | None, source: str = "admin") -> Metric:
    """Create or update a catalog metric: validate, check certification, save, audit (one transaction)."""
    before = None
    if metric.pk is not None:
        stored = Metric.objects.select_for_update(of=("self",)).select_related("owner", "numerator", "denominator")
        stored = stored.filter(pk=metric.pk).first()
        before = metric_as_dict(stored) if stored is not None else None
    if before is None and metric.owner_id is None and actor is not None and actor.pk is not None:
        metric.owner = actor  # a new metric is owned by whoever creates it unless told otherwise
    problem = metric_certify_problem(metric=metric, actor=actor, before=before)
    if problem:
        raise PermissionDenied(problem)
    metric.full_clean()
    after = metric_as_dict(metric)
    if before == after:
        return metric  # nothing changed: no write, no audit row (metrics_import is idempotent)
    metric.save()
    MetricChange.objects.create(
        metric=metric,
        actor=actor,
        action="create" if before is None else "update",
        source=source,
        before=before,
        after=after,
        running_experiments=metric_running_experiments(metric=metric),
    )
    return metric


def metrics_for_picking() -> QuerySet[Metric]:
    """What the plan inline offers: the catalog without archived metrics."""
    return Metric.objects.filter(archived=False).order_by("key")


def metric_by_key(*, key: str) -> Metric | None:
    return Metric.objects.select_related("owner", "numerator", "denominator").filter(key=key).first()


def metric_list(
    *, kind: str = "", official: bool | None = None, owner: str = "", search: str = "", archived: bool = False
) -> QuerySet[Metric]:
    """The catalog, filtered (kind, official, owner username, text search on key/name/description)."""
    metrics = Metric.objects.select_related("owner", "numerator", "denominator").order_by("key")
    if not archived:
        metrics = metrics.filter(archived=False)
    if kind:
        metrics = metrics.filter(kind=kind)
    if official is not None:
        metrics = metrics.filter(official=official)
    if owner:
        metrics = metrics.filter(owner__username=owner)
    if search:
        text = Q(key__icontains=search) | Q(name__icontains=search) | Q(description__icontains=search)
        metrics = metrics.filter(text)
    return metrics


def metric_row_events(definition: MetricDefinition) -> dict[str, str]:
    """Ingest's rule (part 8): each event the metric reads -> "mean" if its conversions need a value."""
    if definition.kind == "ratio":
        out: dict[str, str] = {}
        for part in (definition.numerator, definition.denominator):
            if part is not None:
                for event, need in metric_row_events(part).items():
                    out[event] = "mean" if "mean" in (need, out.get(event)) else "binary"
        return out
    if definition.kind == "funnel":
        return dict.fromkeys(definition.steps, "binary")
    needs_value = definition.kind == "mean" and definition.aggregation == "sum"
    return {definition.event: "mean" if needs_value else "binary"} if definition.event else {}
