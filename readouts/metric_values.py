"""Per-user values of a metric definition from events: the catalog's rules, in Python (pure, no Django).

The rules (docs/metrics.md, "Metric catalog"): a user's *counted* conversions of a metric are their
conversion events with ``metric = event``, passing the filter (``props[filter_prop]`` as text is one of
``filter_values``), at or after first exposure + ``delay_hours`` and, with a window, at or before first
exposure + ``delay_hours`` + ``window_hours``.

- binary: 1 if any counted conversion; mean/sum: Σ value; mean/count: number of counted events;
- caps (mean): ``absolute`` min(v, cap_value); ``percentile`` min(v, c), c the ``cap_value`` quantile
  (numpy's default linear interpolation = PostgreSQL ``PERCENTILE_CONT``) of the per-user values of all
  exposed users across variants (zeros left out with ``cap_ignore_zeros``);
- ratio: the two parts' per-user values, each with its own rules;
- funnel: step k is reached by a counted conversion of step k at or after the time step k − 1 was reached
  (step 1: at or after exposure + delay), all within the window if set; the value is 1 when the last is.

The readout turns these into the aggregate's rows (``queries.SumsRow``: per-day increments of capped
cumulative values), so everything downstream reads them like the rollups' rows.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import numpy as np

from readouts.definitions import MetricDefinition


@dataclass(frozen=True)
class Exposure:
    user_key: str
    variant_id: int
    at: datetime


@dataclass(frozen=True)
class Conversion:
    user_key: str
    metric: str
    value: float | None
    at: datetime
    props: Mapping = field(default_factory=dict)


@dataclass
class UserValue:
    """One user's value, with the days it accrued (day → (value added, counted events)) for the daily rows."""

    value: float = 0.0
    converted: bool = False
    events: int = 0
    by_day: dict[date, list] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricValues:
    """Every exposed user's value of one (binary or mean) definition, after the cap."""

    users: dict[str, UserValue]
    cap_applied: float | None


def prop_text(value) -> str | None:
    """A prop as text, as the SQL slice does (PostgreSQL ``->>``): true/false, numbers as JSON, null → None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _bounds(d: MetricDefinition, exposed_at: datetime) -> tuple[datetime, datetime | None]:
    start = exposed_at + timedelta(hours=d.delay_hours or 0.0)
    end = None if d.window_hours is None else start + timedelta(hours=d.window_hours)
    return start, end


def _passes_filter(d: MetricDefinition, c: Conversion) -> bool:
    if not d.filter_prop:
        return True
    return prop_text((c.props or {}).get(d.filter_prop)) in set(d.filter_values)


def counted(d: MetricDefinition, exposed_at: datetime, c: Conversion, event: str | None = None) -> bool:
    """Whether a conversion counts for the definition (``event``: a funnel step's event instead of ``d.event``)."""
    if c.metric != (event or d.event) or not _passes_filter(d, c):
        return False
    start, end = _bounds(d, exposed_at)
    return c.at >= start and (end is None or c.at <= end)


def _raw_value(d: MetricDefinition, exposed_at: datetime, convs: Iterable[Conversion]) -> UserValue:
    """``convs``: the user's conversions in time order (``queries.readout_metric_events`` orders them)."""
    out = UserValue()
    start, end = _bounds(d, exposed_at)
    allowed = set(d.filter_values) if d.filter_prop else None
    for c in convs:
        if c.metric != d.event or c.at < start or (end is not None and c.at > end):
            continue
        if allowed is not None and prop_text((c.props or {}).get(d.filter_prop)) not in allowed:
            continue
        if d.kind == "binary":
            add = 0.0 if out.converted else 1.0
        elif d.aggregation == "count":
            add = 1.0
        else:
            add = float(c.value or 0.0)
        out.converted = True
        out.events += 1
        out.value += add
        day = out.by_day.setdefault(c.at.date(), [0.0, 0])
        day[0] += add
        day[1] += 1
    return out


def percentile_cap(values: Iterable[float], q: float, *, ignore_zeros: bool) -> float | None:
    """numpy's default ``quantile`` (linear) of the values (zeros left out when asked); None when empty."""
    data = [v for v in values if not (ignore_zeros and v == 0)]
    if not data:
        return None
    return float(np.quantile(np.asarray(data, dtype=float), q))


def _cap_value(d: MetricDefinition, users: Mapping[str, UserValue]) -> float | None:
    if d.kind != "mean" or d.cap == "none":
        return None
    if d.cap == "absolute":
        return float(d.cap_value)
    return percentile_cap((u.value for u in users.values()), float(d.cap_value), ignore_zeros=d.cap_ignore_zeros)


def _capped(u: UserValue, cap: float) -> UserValue:
    """Cap the value and its daily increments (cumulative capped value per day, so the days still add up)."""
    out = UserValue(value=min(u.value, cap), converted=u.converted, events=u.events)
    raw = capped_so_far = 0.0
    for day in sorted(u.by_day):
        add, events = u.by_day[day]
        raw += add
        now = min(raw, cap)
        out.by_day[day] = [now - capped_so_far, events]
        capped_so_far = now
    return out


def metric_values(
    d: MetricDefinition, exposures: Mapping[str, Exposure], conversions: Mapping[str, list[Conversion]]
) -> MetricValues:
    """Every exposed user's value of a binary or mean definition (users without conversions at 0), capped.

    ``conversions``: per user, in time order (``queries.readout_metric_events``, ``conversions_by_user``).
    """
    users = {u: _raw_value(d, x.at, conversions.get(u, ())) for u, x in exposures.items()}
    cap = _cap_value(d, users)
    if cap is not None:
        users = {u: _capped(v, cap) for u, v in users.items()}
    return MetricValues(users=users, cap_applied=cap)


def funnel_reached(d: MetricDefinition, exposed_at: datetime, convs: Iterable[Conversion]) -> list[datetime]:
    """The times the user reached each step, in order (as many as they reached)."""
    start, end = _bounds(d, exposed_at)
    ordered = list(convs)  # in time order (queries.readout_metric_events)
    reached: list[datetime] = []
    at = start
    for step in d.steps:
        hit = next(
            (c.at for c in ordered if c.metric == step and c.at >= at and (end is None or c.at <= end)
             and _passes_filter(d, c)),
            None,
        )  # fmt: skip
        if hit is None:
            break
        reached.append(hit)
        at = hit
    return reached


def funnel_values(
    d: MetricDefinition, exposures: Mapping[str, Exposure], conversions: Mapping[str, list[Conversion]]
) -> dict[str, list[datetime]]:
    """Per exposed user, the times they reached each funnel step."""
    return {u: funnel_reached(d, x.at, conversions.get(u, ())) for u, x in exposures.items()}


def conversions_by_user(conversions: Iterable[Conversion]) -> dict[str, list[Conversion]]:
    """Group conversions by user, each user's in time order (ties: in the given order)."""
    out: dict[str, list[Conversion]] = defaultdict(list)
    for c in sorted(conversions, key=lambda c: c.at):
        out[c.user_key].append(c)
    return out
