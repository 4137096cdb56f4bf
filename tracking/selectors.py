"""Reads for the tracking API."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db.models import Prefetch, Q, Sum

from experiments.models import Experiment, ExperimentMetric, Variant
from signaldash.ttl_cache import TTLCache
from tracking import queries
from tracking.assignment import LayerRule, Rule


@dataclass(frozen=True, slots=True)
class IngestExperiment:
    """What ingestion needs to know about one experiment (read once per request)."""

    id: int
    slug: str
    status: str
    primary_metric: str
    salt: str
    started_at: datetime | None = None
    variant_ids: dict[str, int] = field(default_factory=dict)  # variant key -> id
    variant_weights: tuple[tuple[str, int], ...] = ()  # (key, weight)
    # Planned conversion event -> "mean" (needs a value) or "binary": every event of every planned metric
    # (a ratio's parts, each funnel step; ``ExperimentMetric.events``). Empty: legacy plan, anything goes.
    metric_kinds: dict[str, str] = field(default_factory=dict)

    @property
    def is_running(self) -> bool:
        return self.status == Experiment.Status.RUNNING

    @property
    def has_metric_plan(self) -> bool:
        """True when the experiment has ExperimentMetric rows (else: legacy, any metric key is accepted)."""
        return bool(self.metric_kinds)

    def metric_is_planned(self, metric: str) -> bool:
        return not self.metric_kinds or metric in self.metric_kinds

    def metric_is_mean(self, metric: str) -> bool:
        return self.metric_kinds.get(metric) == ExperimentMetric.Kind.MEAN

    def variant_key(self, variant_id: int) -> str:
        return next(key for key, pk in self.variant_ids.items() if pk == variant_id)


def experiments_for_ingest(*, slugs: Iterable[str], lock: bool = False) -> dict[str, IngestExperiment]:
    """Experiments by slug with their variants and metric plan, in one query whatever the number of slugs.

    `lock`: inside a write transaction, share-lock the experiment rows in the same statement (PostgreSQL),
    so the status read holds until commit (`queries.experiments_with_variants`).
    """
    rows = queries.experiments_with_variants(sorted(set(slugs)), lock=lock)
    found: dict[str, IngestExperiment] = {}
    for pk, slug, status, primary_metric, salt, started_at, part, key, variant_id, weight, kind, events in rows:
        experiment = found.get(slug)
        if experiment is None:
            experiment = found[slug] = IngestExperiment(
                id=pk, slug=slug, status=status, primary_metric=primary_metric, salt=salt, started_at=started_at
            )
        if part == "m":
            _plan_events(experiment.metric_kinds, key, kind, events)
        elif variant_id is not None:
            experiment.variant_ids[key] = variant_id
            object.__setattr__(experiment, "variant_weights", (*experiment.variant_weights, (key, weight)))
    return found


def _plan_events(into: dict[str, str], key: str, kind: str, events) -> None:
    """Merge one planned metric's events (JSON text or decoded); a row without any reads its own key."""
    if isinstance(events, str):
        events = json.loads(events)
    for event, need in (events or {key: kind}).items():
        into[event] = ExperimentMetric.Kind.MEAN if ExperimentMetric.Kind.MEAN in (need, into.get(event)) else need


# Running experiments' ingest data, remembered per process for the single-event path
# (SIGNALDASH_EXPERIMENT_CACHE_S, default 5; 0 turns it off). Safe because a running experiment's
# variants, metric plan and start cannot change, and the writer checks "still running" under the row
# lock; saving an experiment, variant or metric in this process forgets everything (tracking.apps).
DEFAULT_EXPERIMENT_CACHE_S = 5.0
_running: TTLCache[str, IngestExperiment] = TTLCache()


def running_experiment_cached(slug: str) -> IngestExperiment | None:
    """The experiment by slug if it is running (as far as a read at most the TTL ago knows), else None."""
    ttl = float(getattr(settings, "SIGNALDASH_EXPERIMENT_CACHE_S", DEFAULT_EXPERIMENT_CACHE_S))
    now = time.monotonic()
    if ttl > 0 and (hit := _running.get(slug, now)) is not None:
        return hit
    experiment = experiments_for_ingest(slugs=[slug]).get(slug)
    if experiment is None or not experiment.is_running:
        return None
    if ttl > 0:
        _running.put(slug, experiment, now + ttl)
    return experiment


def running_experiment_forget(slug: str | None = None) -> None:
    """Forget one slug (None: all)."""
    if slug is None:
        _running.clear()
    else:
        _running.pop(slug)


# --- Assignment rules -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AssignExperiment:
    """One experiment as assignment sees it: its published rules plus the ids to store answers under."""

    id: int
    status: str
    rule: Rule
    variant_ids: dict[str, int]  # variant key -> id
    variant_keys: dict[int, str]  # variant id -> key

    @property
    def is_running(self) -> bool:
        return self.status == Experiment.Status.RUNNING


def _rule(experiment: Experiment) -> Rule:
    variants = list(experiment.variants.all())  # prefetched, ordered by -is_control, key
    layer = experiment.layer
    return Rule(
        slug=experiment.slug,
        salt=experiment.salt,
        variants=tuple((v.key, v.weight) for v in variants),
        control=next((v.key for v in variants if v.is_control), None),
        coverage=experiment.coverage,
        targeting=experiment.targeting or {},
        layer=(
            LayerRule(key=layer.key, salt=layer.salt, start=experiment.layer_start, end=experiment.layer_end)
            if layer is not None
            else None
        ),
        holdout=experiment.holdout.slug if experiment.holdout_id else None,
    )


_all_running: TTLCache[str, dict[str, AssignExperiment]] = TTLCache(max_entries=4)


def assignment_rules_running_cached() -> dict[str, AssignExperiment]:
    """`assignment_rules_get()` (every running experiment) as read at most SIGNALDASH_EXPERIMENT_CACHE_S ago in
    this process (0: always read). Safe for the same reason as `running_experiment_cached`: a running
    experiment's rules cannot change, saving an experiment in this process forgets it (tracking.apps), and the
    writer checks "still running" under a share lock before it stores an assignment. An experiment started in
    another process shows up here within the TTL."""
    ttl = float(getattr(settings, "SIGNALDASH_EXPERIMENT_CACHE_S", DEFAULT_EXPERIMENT_CACHE_S))
    now = time.monotonic()
    if ttl > 0 and (hit := _all_running.get("all", now)) is not None:
        return hit
    rules = assignment_rules_get()
    if ttl > 0:
        _all_running.put("all", rules, now + ttl)
    return rules


def assignment_rules_forget() -> None:
    _all_running.clear()


def assignment_rules_for(slugs: Iterable[str]) -> dict[str, AssignExperiment]:
    """What an assignment for these experiments needs: every running experiment (`assignment_rules_running_cached`)
    when they are all among them, else `assignment_rules_get(slugs=…)` (a read: one just started, or not running,
    or unknown, which the caller tells apart). The record statement confirms that each still runs."""
    wanted = set(slugs)
    ttl = float(getattr(settings, "SIGNALDASH_EXPERIMENT_CACHE_S", DEFAULT_EXPERIMENT_CACHE_S))
    if ttl > 0 and wanted <= (running := assignment_rules_running_cached()).keys():
        return running
    return assignment_rules_get(slugs=wanted)


def assignment_rules_get(*, slugs: Iterable[str] | None = None) -> dict[str, AssignExperiment]:
    """Every running experiment (`slugs` None), or the named ones in any status plus their running holdouts,
    by slug, in two queries whatever their number (experiments with layer and holdout; variants)."""
    queryset = Experiment.objects.select_related("layer", "holdout").prefetch_related(
        Prefetch("variants", queryset=Variant.objects.order_by("-is_control", "key"))
    )
    if slugs is None:
        queryset = queryset.filter(status=Experiment.Status.RUNNING)
    else:
        names = sorted(set(slugs))
        queryset = queryset.filter(
            Q(slug__in=names)
            | Q(pk__in=Experiment.objects.filter(slug__in=names, holdout__isnull=False).values("holdout_id"))
        )
    return {
        e.slug: AssignExperiment(
            id=e.pk,
            status=e.status,
            rule=_rule(e),
            variant_ids={v.key: v.pk for v in e.variants.all()},
            variant_keys={v.pk: v.key for v in e.variants.all()},
        )
        for e in queryset.order_by("slug")
    }


@dataclass(frozen=True, slots=True)
class AssignmentEvaluations:
    """How `/api/assign` answered for one experiment: evaluations in all, and per reason."""

    total: int
    by_reason: dict[str, int]

    @property
    def sentence(self) -> str:
        """ "of 12,000 evaluations, 3,600 assigned, 8,400 not targeted", reasons in rule order."""
        from tracking.models import AssignmentReason

        if not self.total:
            return "No assignment evaluations yet (POST /api/assign)."
        parts = [f"{self.by_reason[r.value]:,} {r.label}" for r in AssignmentReason if self.by_reason.get(r.value)]
        return f"Of {self.total:,} assignment evaluations, " + ", ".join(parts) + "."


def assignment_evaluations_get(*, experiment_id: int) -> AssignmentEvaluations:
    """The experiment's evaluation counters, summed over their shards (one query)."""
    from tracking.models import AssignmentEvaluationCount

    rows = AssignmentEvaluationCount.objects.filter(experiment_id=experiment_id).values("reason")
    counts = {r["reason"]: r["total"] for r in rows.annotate(total=Sum("count")).order_by("reason")}
    return AssignmentEvaluations(total=sum(counts.values()), by_reason=counts)
