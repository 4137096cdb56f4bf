"""Dimension breakdowns: one metric split by an exposure prop (``?dimension=<prop>``), guarded.

A user's slice is ``props[<prop>]`` of their (single) exposure row, as text. The 20 slices with the most
exposed users are shown, then ``(other)`` (every other value, merged) and ``(none)`` (no such prop, or
JSON null). Each treatment is compared with the control inside each slice, and ``p_value_adjusted`` is
Holm over *all* slices × treatments of the breakdown: slicing until something is significant is exactly
what the correction is for. A prop that was not pre-registered (``Experiment.dimensions``) is served with
``registered: false`` (exploratory) and without chance-to-beat.

A user's value is the one the readout computed: users exposed to more than one variant are left out, and a
catalog metric's rules apply (its event, window, delay, filter, count and cap — a percentile cap over every
exposed user, as in the readout). A ratio is compared as a ratio in each slice (Σm/Σd per slice, delta
method); a funnel as the share of users who reached its last step. Rollup-shaped metrics take one aggregate
query per breakdown (``readouts.queries.READOUT_DIMENSION_SQL``); other catalog metrics read their events
(``queries.readout_metric_events``) and the users' slices, and apply the rules in Python
(``readouts.metric_values``). Experiments on a warehouse source are broken down by the extra columns of its
exposure SELECT: the warehouse query computes every metric's per-user values by every such column, with the same
slices (``readouts.sources.builder``), and the breakdown reads them from the latest ``ok`` snapshot; a column the
SELECT does not return, or no snapshot yet, is said so (``unavailable``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.conf import settings

from experiments.models import Experiment
from readouts import catalog_metrics, queries, stats
from readouts.metric_values import funnel_values, metric_values
from readouts.selectors import Readout
from readouts.sources.builder import NONE, OTHER, TOP_SLICES
from readouts.sources.refresh import ratio_sums_of

DIMENSION_KEY_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
BAD_DIMENSION = "dimension must be an exposure props key: 1-64 of A-Z a-z 0-9 _ . -"
NO_SNAPSHOT = "This experiment's results come from its warehouse source and none have been computed yet: refresh them."
OLD_SNAPSHOT = (
    "The latest results of this experiment were computed before breakdowns were read from the warehouse: refresh "
    "them to break down by the exposure SELECT's extra columns."
)


@dataclass(frozen=True)
class SliceVariant:
    key: str
    n: int
    mean: float | None


@dataclass(frozen=True)
class SliceComparison:
    variant: str
    rel_lift: float | None
    rel_lift_ci: stats.Interval | None
    p_value: float | None
    p_value_adjusted: float | None = None
    chance_to_beat: float | None = None  # registered dimensions only


@dataclass(frozen=True)
class Slice:
    value: str
    variants: list[SliceVariant]
    comparisons: list[SliceComparison]

    @property
    def users(self) -> int:
        return sum(v.n for v in self.variants)


@dataclass(frozen=True)
class DimensionBreakdown:
    key: str
    metric: str
    registered: bool
    slices: list[Slice]
    query: queries.BoundQuery | None
    unavailable: str = ""  # why there are no slices at all (a warehouse source), else ""

    def as_json(self) -> dict:
        return {
            "key": self.key,
            "registered": self.registered,
            **({"unavailable": self.unavailable} if self.unavailable else {}),
            "slices": [
                {
                    "value": s.value,
                    "variants": [{"key": v.key, "n": v.n, "mean": v.mean} for v in s.variants],
                    "comparisons": [
                        {
                            "variant": c.variant,
                            "rel_lift": c.rel_lift,
                            "rel_lift_ci": c.rel_lift_ci.as_list() if c.rel_lift_ci is not None else None,
                            "p_value": c.p_value,
                            "p_value_adjusted": c.p_value_adjusted,
                            "chance_to_beat": c.chance_to_beat,
                        }
                        for c in s.comparisons
                    ],
                }
                for s in self.slices
            ],
        }


def dimension_key_is_valid(key: str) -> bool:
    return bool(DIMENSION_KEY_RE.fullmatch(key))


def _slice_order(users: dict[str | None, int]) -> dict[str | None, str]:
    """Raw slice value → shown slice: the TOP_SLICES largest by exposed users (ties by value), then OTHER."""
    ranked = sorted((v for v in users if v is not None), key=lambda v: (-users[v], v))
    mapping: dict[str | None, str] = {v: (v if i < TOP_SLICES else OTHER) for i, v in enumerate(ranked)}
    mapping[None] = NONE
    return mapping


def _sql_sums(experiment: Experiment, event: str, key: str, kind: str):
    """(query, {(shown slice, variant id): sums}) of a rollup-shaped metric: one aggregate query."""
    query = queries.readout_dimension_query(experiment_id=experiment.pk, metric=event, prop=key)
    rows = queries.readout_dimension(query)
    users: dict[str | None, int] = {}
    for r in rows:
        users[r.slice] = users.get(r.slice, 0) + r.users
    mapping = _slice_order(users)
    acc: dict[tuple[str, int], list] = {}
    for r in rows:
        a = acc.setdefault((mapping[r.slice], r.variant_id), [0, 0, 0.0, 0.0])
        a[0], a[1], a[2], a[3] = a[0] + r.users, a[1] + r.converted, a[2] + r.total, a[3] + r.total_sq
    return query, mapping, {k: _sums(*a, kind=kind) for k, a in acc.items()}


def _rule_sums(experiment: Experiment, d, key: str):
    """The same from a catalog metric's per-user values (its rules applied in Python, as in the readout)."""
    query, slice_of = queries.readout_exposure_slices(experiment_id=experiment.pk, prop=key)
    exposures, conversions = queries.readout_metric_events(experiment_id=experiment.pk, events=list(d.events()))
    exposures = {u: x for u, x in exposures.items() if u in slice_of}
    users: dict[str | None, int] = {}
    for u in exposures:
        users[slice_of[u]] = users.get(slice_of[u], 0) + 1
    mapping = _slice_order(users)
    acc: dict[tuple[str, int], list] = {}
    if d.kind == "ratio":
        num = metric_values(d.numerator, exposures, conversions).users
        den = metric_values(d.denominator, exposures, conversions).users
        for u, x in exposures.items():
            m, dv = num[u].value, den[u].value
            a = acc.setdefault((mapping[slice_of[u]], x.variant_id), [0, 0.0, 0.0, 0.0, 0.0, 0.0])
            for i, add in enumerate((1, m, m * m, dv, dv * dv, m * dv)):
                a[i] += add
        kinds = {"numerator_kind": d.numerator.kind, "denominator_kind": d.denominator.kind}
        return query, mapping, {k: stats.RatioSums(*a, **kinds) for k, a in acc.items()}
    if d.kind == "funnel":
        reached = funnel_values(d, exposures, conversions)
        values = {u: (1.0 if len(reached[u]) == len(d.steps) else 0.0) for u in exposures}
        kind = stats.BINARY
    else:
        users_values = metric_values(d, exposures, conversions).users
        if d.kind == stats.BINARY:
            values = {u: 1.0 if v.converted else 0.0 for u, v in users_values.items()}
        else:
            values = {u: v.value for u, v in users_values.items()}
        kind = d.kind
    for u, x in exposures.items():
        v = values[u]
        a = acc.setdefault((mapping[slice_of[u]], x.variant_id), [0, 0, 0.0, 0.0])
        a[0], a[1], a[2], a[3] = a[0] + 1, a[1] + (1 if v > 0 else 0), a[2] + v, a[3] + v * v
    return query, mapping, {k: _sums(*a, kind=kind) for k, a in acc.items()}


def _warehouse_sums(experiment: Experiment, readout: Readout, d, key: str, kind: str) -> tuple[str, dict]:
    """(why there is no breakdown, or "", {(shown slice, variant id): sums}) from the latest ok snapshot's slices."""
    state = readout.snapshot
    snapshot = state.snapshot if state is not None else None
    if snapshot is None:
        return NO_SNAPSHOT, {}
    rows = snapshot.rows or {}
    if "dimensions" not in rows:
        return OLD_SNAPSHOT, {}
    if key not in rows["dimensions"]:
        available = ", ".join(rows["dimensions"]) or "none"
        return (
            f"The exposure SELECT of this experiment's warehouse source has no column {key}; its extra columns "
            f"(the dimensions it can be broken down by): {available}.",
            {},
        )
    ids = dict(experiment.variants.values_list("key", "pk"))
    parts: dict[tuple[str, int], dict] = {}
    for r in rows.get("slices", []):
        if r["metric"] == readout.selected.key and r["dimension"] == key and ids.get(r["variant"]) is not None:
            parts.setdefault((r["slice"], ids[r["variant"]]), {})[r["kind"]] = r
    sums_of: dict[tuple[str, int], stats.SampleSums | stats.RatioSums] = {}
    for slot, p in parts.items():
        m = p.get("slice")
        if m is None:
            continue
        if kind == stats.RATIO:
            den = p.get("slice_den")
            if den is None:
                continue
            sums_of[slot] = ratio_sums_of(m, den, d)
        else:
            sums_of[slot] = _sums(m["users"], round(m["total"]), m["total"], m["total_sq"], kind=kind)
    return "", sums_of


def _sums(n: int, converted: int, total: float, total_sq: float, kind: str) -> stats.SampleSums:
    if kind == stats.BINARY:
        return stats.SampleSums(n=n, sum=float(converted), sum_squares=float(converted))
    return stats.SampleSums(n=n, sum=total, sum_squares=total_sq)


def _mean(s) -> float | None:
    if isinstance(s, stats.RatioSums):
        return stats.ratio_summary(s).mean
    return (s.sum / s.n) if s.n else None


def _p_value(control, treatment, kind: str, alpha: float) -> float | None:
    """The readout's own test: binary pooled z-test, mean Welch t-test, ratio delta-method t-test."""
    if kind == stats.RATIO:
        return stats.ratio_diff(control=control, treatment=treatment, alpha=alpha).p_value
    if kind == stats.BINARY:
        c = stats.compare(
            control=stats.Arm("control", control.n, int(control.sum)),
            treatment=stats.Arm("treatment", treatment.n, int(treatment.sum)),
        )
        return c.p_value
    return stats.welch_diff(control=control, treatment=treatment, alpha=alpha).p_value


def _slice(selected, value: str, sums_of: dict, *, kind: str, registered: bool, alpha: float) -> Slice:
    """One slice: each variant's n and mean, each treatment against the control (p-values not yet adjusted)."""
    empty = stats.RatioSums(0, 0.0, 0.0, 0.0, 0.0, 0.0) if kind == stats.RATIO else _sums(0, 0, 0.0, 0.0, kind=kind)
    sums = {v.key: sums_of.get((value, v.id), empty) for v in selected.variants}
    control = next((v.key for v in selected.variants if v.is_control), None)
    comparisons = []
    for v in selected.variants if control is not None else []:
        if v.is_control:
            continue
        a, b = sums[control], sums[v.key]
        rel = stats.relative_lift(control=a, treatment=b, kind=kind, alpha=alpha)
        ctb = None
        if registered:
            bayes = stats.bayes_lift(
                control=a,
                treatment=b,
                kind=kind,
                direction=selected.direction,
                alpha=alpha,
                prior_sd=settings.SIGNALDASH_BAYES_PRIOR_SD,
            )
            ctb = bayes.chance_to_beat
        p_value = _p_value(a, b, kind, alpha)
        comparisons.append(SliceComparison(v.key, rel.rel_lift, rel.rel_lift_ci, p_value, chance_to_beat=ctb))
    return Slice(value, [SliceVariant(k, s.n, _mean(s)) for k, s in sums.items()], comparisons)


def dimension_breakdown_get(*, experiment: Experiment, readout: Readout, key: str) -> DimensionBreakdown:
    """The selected metric of ``readout`` split by exposure prop ``key`` (validated by the caller)."""
    if not dimension_key_is_valid(key):
        raise ValueError(BAD_DIMENSION)
    selected = readout.selected
    registered = key in (experiment.dimensions or [])
    d = selected.definition
    rollup = d is None or catalog_metrics.rollup_shaped(d)
    kind = selected.kind if rollup else {"ratio": stats.RATIO, "funnel": stats.BINARY}.get(d.kind, d.kind)
    if experiment.data_source_id is not None:
        unavailable, sums_of = _warehouse_sums(experiment, readout, d, key, kind)
        if unavailable:
            return DimensionBreakdown(key, selected.key, registered, [], None, unavailable=unavailable)
        users: dict[str, int] = {}
        for (value, _), s in sums_of.items():
            users[value] = users.get(value, 0) + s.n
        shown = sorted((v for v in users if v not in (OTHER, NONE)), key=lambda v: (-users[v], v))
        query = None
    else:
        if rollup:
            query, mapping, sums_of = _sql_sums(experiment, d.event if d is not None else selected.key, key, kind)
        else:
            query, mapping, sums_of = _rule_sums(experiment, d, key)
        shown = list(dict.fromkeys(v for v in mapping.values() if v not in (OTHER, NONE)))
    shown += [v for v in (OTHER, NONE) if any(s == v for s, _ in sums_of)]
    alpha = readout.alpha
    slices = [_slice(selected, v, sums_of, kind=kind, registered=registered, alpha=alpha) for v in shown]
    adjusted = iter(stats.holm_adjust([c.p_value for s in slices for c in s.comparisons]))
    slices = [
        Slice(
            s.value,
            s.variants,
            [
                SliceComparison(c.variant, c.rel_lift, c.rel_lift_ci, c.p_value, next(adjusted), c.chance_to_beat)
                for c in s.comparisons
            ],
        )
        for s in slices
    ]
    return DimensionBreakdown(key=key, metric=selected.key, registered=registered, slices=slices, query=query)
