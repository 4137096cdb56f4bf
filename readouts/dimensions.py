"""Dimension breakdowns: one metric split by an exposure prop (``?dimension=<prop>``), guarded.

A user's slice is ``props[<prop>]`` of their (single) exposure row, as text. The 20 slices with the most
exposed users are shown, then ``(other)`` (every other value, merged) and ``(none)`` (no such prop, or
JSON null). Each treatment is compared with the control inside each slice, and ``p_value_adjusted`` is
Holm over *all* slices × treatments of the breakdown: slicing until something is significant is exactly
what the correction is for. A prop that was not pre-registered (``Experiment.dimensions``) is served with
``registered: false`` (exploratory) and without chance-to-beat. One aggregate query per breakdown
(``readouts.queries.READOUT_DIMENSION_SQL``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.conf import settings

from experiments.models import Experiment
from readouts import queries, stats
from readouts.selectors import Readout

DIMENSION_KEY_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
BAD_DIMENSION = "dimension must be an exposure props key: 1-64 of A-Z a-z 0-9 _ . -"
TOP_SLICES = 20
OTHER = "(other)"
NONE = "(none)"


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
    query: queries.BoundQuery

    def as_json(self) -> dict:
        return {
            "key": self.key,
            "registered": self.registered,
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


def _slice_order(rows: list[queries.SliceRow]) -> dict[str | None, str]:
    """Raw slice value → shown slice: the TOP_SLICES largest by exposed users (ties by value), then OTHER."""
    users: dict[str, int] = {}
    for r in rows:
        if r.slice is not None:
            users[r.slice] = users.get(r.slice, 0) + r.users
    ranked = sorted(users, key=lambda v: (-users[v], v))
    mapping: dict[str | None, str] = {v: (v if i < TOP_SLICES else OTHER) for i, v in enumerate(ranked)}
    mapping[None] = NONE
    return mapping


def _sums(n: int, converted: int, total: float, total_sq: float, kind: str) -> stats.SampleSums:
    if kind == stats.BINARY:
        return stats.SampleSums(n=n, sum=float(converted), sum_squares=float(converted))
    return stats.SampleSums(n=n, sum=total, sum_squares=total_sq)


def _p_value(control: stats.SampleSums, treatment: stats.SampleSums, kind: str, alpha: float) -> float | None:
    """The readout's own test: binary pooled z-test, mean Welch t-test."""
    if kind == stats.BINARY:
        c = stats.compare(
            control=stats.Arm("control", control.n, int(control.sum)),
            treatment=stats.Arm("treatment", treatment.n, int(treatment.sum)),
        )
        return c.p_value
    return stats.welch_diff(control=control, treatment=treatment, alpha=alpha).p_value


def dimension_breakdown_get(*, experiment: Experiment, readout: Readout, key: str) -> DimensionBreakdown:
    """The selected metric of ``readout`` split by exposure prop ``key`` (validated by the caller). One query."""
    if not dimension_key_is_valid(key):
        raise ValueError(BAD_DIMENSION)
    selected = readout.selected
    query = queries.readout_dimension_query(experiment_id=experiment.pk, metric=selected.key, prop=key)
    rows = queries.readout_dimension(query)
    mapping = _slice_order(rows)
    acc: dict[tuple[str, int], list] = {}
    for r in rows:
        a = acc.setdefault((mapping[r.slice], r.variant_id), [0, 0, 0.0, 0.0])
        a[0], a[1], a[2], a[3] = a[0] + r.users, a[1] + r.converted, a[2] + r.total, a[3] + r.total_sq
    shown = list(dict.fromkeys(v for v in mapping.values() if v not in (OTHER, NONE)))
    shown += [v for v in (OTHER, NONE) if any(s == v for s, _ in acc)]
    registered = key in (experiment.dimensions or [])
    kind, alpha = selected.kind, readout.alpha
    slices: list[Slice] = []
    for value in shown:
        sums = {v.key: _sums(*(acc.get((value, v.id)) or [0, 0, 0.0, 0.0]), kind=kind) for v in selected.variants}
        control = next((v.key for v in selected.variants if v.is_control), None)
        comparisons = []
        if control is not None:
            for v in selected.variants:
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
                comparisons.append(
                    SliceComparison(
                        v.key, rel.rel_lift, rel.rel_lift_ci, _p_value(a, b, kind, alpha), chance_to_beat=ctb
                    )
                )
        variants = [SliceVariant(k, s.n, (s.sum / s.n) if s.n else None) for k, s in sums.items()]
        slices.append(Slice(value, variants, comparisons))
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
