"""Readout inputs for catalog metrics whose per-user rules the rollups cannot represent.

A definition is *rollup-shaped* when it is binary, or mean with ``sum`` aggregation, with no window,
no delay, no filter and no cap: then its rows are the rollups' rows of its event (``readouts.rollups``,
incremental). Every other definition (windows, delays, filters, caps, count, ratio, funnel) is computed
from the events by ``readouts.metric_values`` and turned into the same ``queries.SumsRow`` shape
(conversion rows per variant and UTC day, increments of capped cumulative values), so the statistics
downstream read them exactly like rollup rows. Ratios also get ``stats.RatioSums`` per variant.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import date

from readouts import queries, stats
from readouts.definitions import MetricDefinition
from readouts.metric_values import MetricValues, funnel_values, metric_values


def rollup_shaped(d: MetricDefinition) -> bool:
    return (
        (d.kind == "binary" or (d.kind == "mean" and d.aggregation == "sum"))
        and d.window_hours is None
        and not d.delay_hours
        and d.cap == "none"
        and not d.filter_prop
    )


@dataclass
class Computed:
    """One rule metric's inputs: SumsRow conversion rows (binary/mean; a funnel's last step), per-step rows."""

    rows: list[queries.SumsRow] = field(default_factory=list)
    cap_applied: float | dict | None = None
    ratio: dict[int, stats.RatioSums] = field(default_factory=dict)
    steps: list[tuple[str, list[queries.SumsRow]]] = field(default_factory=list)


def _rows(metric: str, values: MetricValues, variant_of: dict[str, int]) -> list[queries.SumsRow]:
    """The aggregate's conversion increments (see ``queries``) of per-user values, per variant and day."""
    acc: dict[tuple[int, date], list] = defaultdict(lambda: [0, 0.0, 0.0, 0])
    for user, u in values.users.items():
        cum, first = 0.0, True
        for day in sorted(u.by_day):
            add, events = u.by_day[day]
            v = acc[(variant_of[user], day)]
            v[0] += 1 if first else 0
            first = False
            v[1] += add
            v[2] += (cum + add) ** 2 - cum**2
            v[3] += events
            cum += add
    return [
        queries.SumsRow("conversion", variant, metric, day, users, total, total_sq, 0.0, 0.0, events, 0, 0)
        for (variant, day), (users, total, total_sq, events) in sorted(acc.items())
    ]


def _ratio(d: MetricDefinition, exposures, conversions, variant_of) -> Computed:
    num = metric_values(d.numerator, exposures, conversions)
    den = metric_values(d.denominator, exposures, conversions)
    sums: dict[int, list] = defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0.0, 0.0])
    for user in exposures:
        m, dv = num.users[user].value, den.users[user].value
        s = sums[variant_of[user]]
        s[0] += 1
        s[1] += m
        s[2] += m * m
        s[3] += dv
        s[4] += dv * dv
        s[5] += m * dv
    ratio = {
        variant: stats.RatioSums(*s, numerator_kind=d.numerator.kind, denominator_kind=d.denominator.kind)
        for variant, s in sums.items()
    }
    caps = {"numerator": num.cap_applied, "denominator": den.cap_applied}
    return Computed(
        rows=_rows(d.key, num, variant_of),
        cap_applied=caps if any(v is not None for v in caps.values()) else None,
        ratio=ratio,
    )


def _funnel(d: MetricDefinition, exposures, conversions, variant_of) -> Computed:
    reached = funnel_values(d, exposures, conversions)
    steps = []
    for k, event in enumerate(d.steps):
        acc: dict[tuple[int, date], int] = defaultdict(int)
        for user, times in reached.items():
            if len(times) > k:
                acc[(variant_of[user], times[k].date())] += 1
        rows = [
            queries.SumsRow("conversion", variant, d.key, day, n, float(n), float(n), 0.0, 0.0, n, 0, 0)
            for (variant, day), n in sorted(acc.items())
        ]
        steps.append((event, rows))
    return Computed(rows=steps[-1][1] if steps else [], steps=steps)


def compute(
    *, experiment_id: int, definitions: list[MetricDefinition], exclude: frozenset[str] = frozenset()
) -> dict[str, Computed]:
    """The inputs of every definition that is not rollup-shaped (one read of the events they name).

    ``exclude``: users left out of every metric (``readouts.exclusions``: exposed to more than one variant).
    """
    rules = [d for d in definitions if not rollup_shaped(d)]
    if not rules:
        return {}
    events = sorted({e for d in rules for e in d.events()})
    exposures, conversions = queries.readout_metric_events(experiment_id=experiment_id, events=events)
    if exclude:
        exposures = {user: x for user, x in exposures.items() if user not in exclude}
    variant_of = {user: x.variant_id for user, x in exposures.items()}
    out: dict[str, Computed] = {}
    for d in rules:
        if d.kind == "ratio":
            out[d.key] = _ratio(d, exposures, conversions, variant_of)
        elif d.kind == "funnel":
            out[d.key] = _funnel(d, exposures, conversions, variant_of)
        else:
            values = metric_values(d, exposures, conversions)
            out[d.key] = Computed(rows=_rows(d.key, values, variant_of), cap_applied=values.cap_applied)
    return out


def metric_rows(d: MetricDefinition, rows: list[queries.SumsRow], computed: Computed | None) -> list[queries.SumsRow]:
    """One metric's rows keyed by its plan key: exposures, then its own conversion rows (rollups or computed)."""
    out = [r for r in rows if r.kind == "exposure"]
    events = set(d.events())
    if computed is None:
        out += [replace(r, metric=d.key) for r in rows if r.kind != "exposure" and r.metric in events]
    else:
        out += computed.rows
        out += [replace(r, metric=d.key) for r in rows if r.kind == "uncounted" and r.metric in events]
    return out
