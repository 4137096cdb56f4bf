"""What one experiment's warehouse query needs: its metric definitions, variants and time range."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from experiments.models import Experiment
from readouts.definitions import MetricDefinition

# Identifiers that reach the SQL text (filter columns) must match this; everything else is a literal.
IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


@dataclass(frozen=True)
class QueryPlan:
    experiment_key: str  # = Experiment.slug, matched against the exposure SELECT's experiment_key
    variant_keys: tuple[str, ...]
    start: datetime  # exposures and conversions count from here ...
    end: datetime  # ... to here (ended_at, or the refresh time)
    definitions: tuple[MetricDefinition, ...]
    cuped_lookback_days: int = 14
    dimensions: tuple[str, ...] = ()  # extra exposure columns the breakdowns slice by (validated identifiers)


def definitions_for(experiment: Experiment) -> dict[str, MetricDefinition]:
    """The experiment's planned metrics as definitions, by key (the one place the catalog plugs in).

    The frozen definitions of the approved plan (``experiments.selectors.experiment_metric_definitions``):
    editing the catalog never changes what a running or decided experiment's warehouse query computes.
    """
    from experiments.selectors import experiment_metric_definitions

    return experiment_metric_definitions(experiment)


# A snapshot slices every metric by at most this many extra exposure columns (the pre-registered ones first).
MAX_DIMENSIONS = 10


def dimensions_for(*, experiment: Experiment, columns: frozenset[str], standard: tuple[str, ...]) -> tuple[str, ...]:
    """The extra exposure columns (``columns`` minus ``standard``) a snapshot breaks down by: plain lower-case
    identifiers only, the experiment's pre-registered dimensions first, then the rest by name, ``MAX_DIMENSIONS``."""
    extra = sorted(c for c in columns if c not in standard and c == c.lower() and IDENTIFIER_RE.fullmatch(c))
    registered = [c for c in (experiment.dimensions or []) if c in extra]
    return tuple(dict.fromkeys([*registered, *extra]))[:MAX_DIMENSIONS]


def query_plan_for(
    *, experiment: Experiment, lookback_days: int, now: datetime | None = None, dimensions: tuple[str, ...] = ()
) -> QueryPlan:
    now = now or timezone.now()
    return QueryPlan(
        experiment_key=experiment.slug,
        variant_keys=tuple(experiment.variants.order_by("key").values_list("key", flat=True)),
        start=experiment.started_at or now,
        end=experiment.ended_at or now,
        definitions=tuple(definitions_for(experiment).values()),
        cuped_lookback_days=lookback_days,
        dimensions=dimensions,
    )
