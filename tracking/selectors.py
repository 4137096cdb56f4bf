"""Reads for the tracking API."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings

from experiments.models import Experiment, ExperimentMetric
from signaldash.ttl_cache import TTLCache
from tracking import queries


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
