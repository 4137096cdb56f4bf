"""Readout assembly: the aggregate's sufficient statistics turned into per-metric results.

One aggregate query serves every planned metric (the scorecard), the selected metric, the warnings and
the cumulative series; statistics come from ``readouts.stats`` (pure). Presentation (JSON, CSV,
Markdown, bundle) lives in ``readouts.exports``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

from django.apps import apps
from django.conf import settings
from django.utils import timezone

from experiments.models import Experiment, PlannedMetric, Variant
from readouts import catalog_metrics, exclusions, formatting, metric_rollups, queries, rollups, stats
from readouts.definitions import MetricDefinition

METRIC_KEY_RE = re.compile(r"[-a-zA-Z0-9_]{1,100}")
ROLE_ORDER = {"primary": 0, "secondary": 1, "guardrail": 2, "exploratory": 3}
EXPLORATORY = "exploratory"


@dataclass(frozen=True)
class VariantInfo:
    id: int
    key: str
    name: str
    is_control: bool
    weight: int


@dataclass(frozen=True)
class VariantReadout:
    """One variant on one metric: exposed users, converted users and the per-user-value summary."""

    id: int
    key: str
    name: str
    is_control: bool
    weight: int
    exposures: int
    conversions: int  # users with at least one counted conversion
    rate: stats.RateResult  # conversions / exposures with its Wilson interval
    sums: stats.SampleSums
    summary: stats.ArmSummary
    ratio: stats.RatioSums | None = None  # ratio metrics: Σm, Σm², Σd, Σd², Σm·d (summary.mean = Σm/Σd)


@dataclass(frozen=True)
class MetricComparison:
    """One treatment against the control on one metric (field names of ``stats.Comparison`` kept)."""

    variant: str
    control: str
    diff: float | None
    diff_ci: stats.Interval | None
    lift: float | None  # percent (legacy field); rel_lift is the fraction
    z: float | None  # binary: pooled z; mean: Welch t
    p_value: float | None
    lift_reason: str
    test_reason: str
    rel: stats.RelativeLift
    sequential: stats.Sequential
    bayes: stats.Bayes
    cuped: stats.Cuped | None
    df: float | None = None
    p_value_adjusted: float | None = None
    sequential_p_adjusted: float | None = None
    outcome: str = stats.INCONCLUSIVE


@dataclass(frozen=True)
class FunnelStep:
    """One funnel step compared as a binary metric over all exposed users (GrowthBook's convention)."""

    event: str
    result: MetricReadout


@dataclass(frozen=True)
class MetricReadout:
    key: str
    role: str  # primary | secondary | guardrail | exploratory
    kind: str  # binary | mean
    direction: str  # increase | decrease
    variants: list[VariantReadout]
    comparisons: list[MetricComparison]
    late: int
    unexposed: int
    counted_events: int = 0  # conversion events counted (at or after the user's exposure)
    definition: MetricDefinition | None = None  # what was computed (the frozen definition when approved)
    cap_applied: float | dict | None = None  # the cap used (ratio: per part), None without a cap
    steps: list[FunnelStep] | None = None  # funnels: every step as a binary metric (the last one is this)

    @property
    def planned(self) -> bool:
        return self.role != EXPLORATORY

    @property
    def in_family(self) -> bool:
        return self.role in ("primary", "secondary")


@dataclass(frozen=True)
class PlanProgress:
    users_per_arm: int | None
    expected_days: int | None
    progress: float | None
    sentence: str
    reason: str = ""


@dataclass(frozen=True)
class Readout:
    experiment_id: int
    experiment_slug: str
    experiment_name: str
    experiment_status: str
    analysis: str
    alpha: float
    metric: str
    metrics: list[str]  # planned metrics first, then other metric keys seen in events
    results: list[MetricReadout]  # the planned metrics in scorecard order, then the selected one if unplanned
    computed_at: datetime
    srm: stats.SRMResult
    warnings: list[dict]
    variant_conflicts: int | None
    plan: PlanProgress
    family_size: int
    started_at: datetime | None = None
    ended_at: datetime | None = None
    queries: list[queries.BoundQuery] = field(default_factory=list)
    rows: list[queries.SumsRow] = field(default_factory=list, repr=False)
    # Per metric key: exposure rows + that metric's conversion rows keyed by the key (rollups or computed).
    metric_rows: dict[str, list[queries.SumsRow]] = field(default_factory=dict, repr=False)

    def rows_for(self, key: str) -> list[queries.SumsRow]:
        return self.metric_rows.get(key, self.rows)

    snapshot: Any = None  # warehouse experiments: readouts.sources.refresh.SnapshotState
    # Exposure health counts: multiple_exposures (users left out of every metric), and for a warehouse snapshot
    # unknown_variants (rows). Empty: not counted (the experiment list's readouts).
    health: dict[str, int] = field(default_factory=dict)
    # Counted and late conversions per event name when ``rows`` are keyed by metric (a warehouse snapshot).
    event_rows: list[queries.SumsRow] | None = field(default=None, repr=False)

    @property
    def selected(self) -> MetricReadout:
        return next(r for r in self.results if r.key == self.metric)

    @property
    def scorecard(self) -> list[MetricReadout]:
        return [r for r in self.results if r.planned]

    @property
    def variants(self) -> list[VariantReadout]:
        return self.selected.variants

    @property
    def comparisons(self) -> list[MetricComparison]:
        return self.selected.comparisons

    @property
    def control(self) -> VariantReadout | None:
        return next((v for v in self.variants if v.is_control), None)

    @property
    def metric_kind(self) -> str:
        return self.selected.kind

    @property
    def conversions_late(self) -> int:
        return self.selected.late

    @property
    def conversions_unexposed(self) -> int:
        return self.selected.unexposed


def metric_key_is_valid(metric: str) -> bool:
    return bool(METRIC_KEY_RE.fullmatch(metric))


# --- sums ----------------------------------------------------------------------------------------
@dataclass
class _Acc:
    users: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    products: float = 0.0
    products_bin: float = 0.0
    events: int = 0

    def add(self, row: queries.SumsRow) -> None:
        self.events += row.events
        self.users += row.users
        self.total += row.total
        self.total_sq += row.total_sq
        self.products += row.products
        self.products_bin += row.products_bin


@dataclass
class _Totals:
    """The aggregate rows summed up to a day (all days when ``until`` is None)."""

    exposures: dict[int | None, int] = field(default_factory=dict)
    conversions: dict[tuple[int | None, str], _Acc] = field(default_factory=lambda: defaultdict(_Acc))
    covariates: dict[tuple[int | None, str], _Acc] = field(default_factory=lambda: defaultdict(_Acc))
    late: dict[str, int] = field(default_factory=dict)
    unexposed: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, rows: list[queries.SumsRow], until: date | None = None) -> _Totals:
        t = cls()
        for r in rows:
            if until is not None and r.day > until:
                continue
            if r.kind == "exposure":
                t.exposures[r.variant_id] = t.exposures.get(r.variant_id, 0) + r.users
            elif r.kind == "conversion":
                t.conversions[(r.variant_id, r.metric)].add(r)
            elif r.kind == "covariate":
                t.covariates[(r.variant_id, r.metric)].add(r)
            else:
                t.late[r.metric] = t.late.get(r.metric, 0) + r.late
                t.unexposed[r.metric] = t.unexposed.get(r.metric, 0) + r.unexposed
        return t

    def has_covariate(self, metric: str) -> bool:
        return any(m == metric and acc.users for (_, m), acc in self.covariates.items())

    def sums(self, variant_id: int, metric: str, kind: str) -> stats.SampleSums:
        conv = self.conversions.get((variant_id, metric)) or _Acc()
        cov = self.covariates.get((variant_id, metric)) or _Acc()
        binary = kind == stats.BINARY
        return stats.SampleSums(
            n=self.exposures.get(variant_id, 0),
            sum=float(conv.users) if binary else conv.total,
            sum_squares=float(conv.users) if binary else conv.total_sq,
            cov_sum=cov.total,
            cov_sum_squares=cov.total_sq,
            sum_products=conv.products_bin if binary else conv.products,
            has_covariate=self.has_covariate(metric),
        )


# --- per-metric statistics ------------------------------------------------------------------------
def _variant_readout(v: VariantInfo, t: _Totals, metric: str, kind: str) -> VariantReadout:
    sums = t.sums(v.id, metric, kind)
    conv = t.conversions.get((v.id, metric))
    converted = conv.users if conv else 0
    return VariantReadout(
        id=v.id,
        key=v.key,
        name=v.name,
        is_control=v.is_control,
        weight=v.weight,
        exposures=sums.n,
        conversions=converted,
        rate=stats.rate_with_ci(conversions=converted, exposures=sums.n),
        sums=sums,
        summary=stats.arm_summary(sums, kind=kind),
    )


def _absolute(control: VariantReadout, treatment: VariantReadout, kind: str, alpha: float) -> dict:
    """diff, diff_ci, z/t, p: binary keeps the Wald interval and pooled z-test; mean uses Welch."""
    if kind == stats.BINARY:
        c = stats.compare(
            control=stats.Arm(control.key, control.exposures, control.conversions),
            treatment=stats.Arm(treatment.key, treatment.exposures, treatment.conversions),
        )
        return {
            "diff": c.diff,
            "diff_ci": c.diff_ci,
            "z": c.z,
            "df": None,
            "p_value": c.p_value,
            "test_reason": c.test_reason,
        }
    w = stats.welch_diff(control=control.sums, treatment=treatment.sums, alpha=alpha)
    return {"diff": w.diff, "diff_ci": w.diff_ci, "z": w.t, "df": w.df, "p_value": w.p_value, "test_reason": w.reason}


def _compare(control: VariantReadout, treatment: VariantReadout, spec: PlannedMetric, alpha: float) -> MetricComparison:
    a, b, kind = control.sums, treatment.sums, spec.kind
    rel = stats.relative_lift(control=a, treatment=b, kind=kind, alpha=alpha)
    lift, lift_reason = None, "No relative lift: an arm has no exposed users."
    if control.summary.mean is not None and treatment.summary.mean is not None:  # today's lift (%), kept
        lift, lift_reason = stats.lift_percent(control_rate=control.summary.mean, treatment_rate=treatment.summary.mean)
    return MetricComparison(
        variant=treatment.key,
        control=control.key,
        lift=lift,
        lift_reason=lift_reason,
        rel=rel,
        sequential=stats.sequential_lift(
            control=a, treatment=b, kind=kind, alpha=alpha, tuning=settings.SIGNALDASH_SEQUENTIAL_TUNING
        ),
        bayes=stats.bayes_lift(
            control=a,
            treatment=b,
            kind=kind,
            direction=spec.direction,
            alpha=alpha,
            prior_sd=settings.SIGNALDASH_BAYES_PRIOR_SD,
        ),
        cuped=stats.cuped_lift(control=a, treatment=b, kind=kind, alpha=alpha),
        **_absolute(control, treatment, kind, alpha),
    )


def _metric_readout(spec: PlannedMetric, variants: list[VariantInfo], t: _Totals, alpha: float) -> MetricReadout:
    vr = [_variant_readout(v, t, spec.key, spec.kind) for v in variants]
    control = next((v for v in vr if v.is_control), None)
    comparisons = [] if control is None else [_compare(control, v, spec, alpha) for v in vr if not v.is_control]
    return MetricReadout(
        key=spec.key,
        role=spec.role,
        kind=spec.kind,
        direction=spec.direction,
        variants=vr,
        comparisons=comparisons,
        late=t.late.get(spec.key, 0),
        unexposed=t.unexposed.get(spec.key, 0),
        counted_events=sum(acc.events for (_, m), acc in t.conversions.items() if m == spec.key),
    )


def _ratio_variant(v: VariantInfo, t: _Totals, metric: str, ratio: stats.RatioSums | None) -> VariantReadout:
    base = _variant_readout(v, t, metric, stats.MEAN)
    ratio = ratio or stats.RatioSums(base.exposures, 0.0, 0.0, 0.0, 0.0, 0.0)
    return replace(base, ratio=ratio, summary=stats.ratio_summary(ratio))


def _compare_ratio(control: VariantReadout, treatment: VariantReadout, spec: PlannedMetric, alpha: float):
    a, b = control.ratio, treatment.ratio
    rel = stats.relative_lift(control=a, treatment=b, kind=stats.RATIO, alpha=alpha)
    lift, lift_reason = None, rel.reason or "No relative lift."
    if control.summary.mean is not None and treatment.summary.mean is not None:
        lift, lift_reason = stats.lift_percent(control_rate=control.summary.mean, treatment_rate=treatment.summary.mean)
    w = stats.ratio_diff(control=a, treatment=b, alpha=alpha)
    return MetricComparison(
        variant=treatment.key,
        control=control.key,
        diff=w.diff,
        diff_ci=w.diff_ci,
        lift=lift,
        z=w.t,
        df=w.df,
        p_value=w.p_value,
        lift_reason=lift_reason,
        test_reason=w.reason,
        rel=rel,
        sequential=stats.sequential_lift(
            control=a, treatment=b, kind=stats.RATIO, alpha=alpha, tuning=settings.SIGNALDASH_SEQUENTIAL_TUNING
        ),
        bayes=stats.bayes_lift(
            control=a,
            treatment=b,
            kind=stats.RATIO,
            direction=spec.direction,
            alpha=alpha,
            prior_sd=settings.SIGNALDASH_BAYES_PRIOR_SD,
        ),
        cuped=None,
    )


def _ratio_readout(spec: PlannedMetric, variants: list[VariantInfo], t: _Totals, alpha: float,
                   ratio: dict[int, stats.RatioSums]) -> MetricReadout:  # fmt: skip
    vr = [_ratio_variant(v, t, spec.key, ratio.get(v.id)) for v in variants]
    control = next((v for v in vr if v.is_control), None)
    comparisons = [] if control is None else [_compare_ratio(control, v, spec, alpha) for v in vr if not v.is_control]
    return MetricReadout(
        key=spec.key,
        role=spec.role,
        kind=stats.RATIO,
        direction=spec.direction,
        variants=vr,
        comparisons=comparisons,
        late=t.late.get(spec.key, 0),
        unexposed=t.unexposed.get(spec.key, 0),
        counted_events=sum(acc.events for (_, m), acc in t.conversions.items() if m == spec.key),
    )


def _catalog_metric_readout(spec: PlannedMetric, d: MetricDefinition, variants: list[VariantInfo], rows: list,
                            computed: catalog_metrics.Computed | None, alpha: float) -> MetricReadout:  # fmt: skip
    """One planned metric from its definition: rollup-shaped ones from ``rows``, the rest from ``computed``."""
    t = _Totals.of(rows)
    if d.kind == "ratio":
        result = _ratio_readout(spec, variants, t, alpha, computed.ratio if computed else {})
    elif d.kind == "funnel":
        binary = replace(spec, kind=stats.BINARY)
        exposure_rows = [r for r in rows if r.kind == "exposure"]
        steps = [
            FunnelStep(event, _metric_readout(binary, variants, _Totals.of(exposure_rows + step_rows), alpha))
            for event, step_rows in (computed.steps if computed else [])
        ]
        result = replace(_metric_readout(binary, variants, t, alpha), kind="funnel", steps=steps)
    else:
        result = _metric_readout(replace(spec, kind=d.kind), variants, t, alpha)
    return replace(result, definition=d, cap_applied=computed.cap_applied if computed else None)


def _effect(c: MetricComparison) -> float | None:
    return c.rel.rel_lift if c.rel.rel_lift is not None else c.diff


def _with_corrections(results: list[MetricReadout], *, alpha: float, analysis: str) -> list[MetricReadout]:
    """Holm over every treatment × primary and secondary metric; outcomes read with each metric's direction.

    Fixed analysis: the outcome uses the Holm-adjusted p (raw p for guardrails and exploratory metrics).
    Sequential analysis: the same rule on the always-valid p-values (Holm-adjusted over the same family).
    """
    family = [(i, j) for i, r in enumerate(results) if r.in_family for j in range(len(r.comparisons))]
    adjusted = stats.holm_adjust([results[i].comparisons[j].p_value for i, j in family])
    seq_adjusted = stats.holm_adjust([results[i].comparisons[j].sequential.p_value for i, j in family])
    adj = dict(zip(family, adjusted, strict=True))
    seq_adj = dict(zip(family, seq_adjusted, strict=True))
    out = []
    for i, r in enumerate(results):
        comparisons = []
        for j, c in enumerate(r.comparisons):
            p_adj, s_adj = adj.get((i, j)), seq_adj.get((i, j))
            if analysis == "sequential":
                decisive = s_adj if r.in_family else c.sequential.p_value
            else:
                decisive = p_adj if r.in_family else c.p_value
            verdict = stats.outcome(p_value=decisive, effect=_effect(c), alpha=alpha, direction=r.direction)
            comparisons.append(
                replace(c, p_value_adjusted=p_adj, sequential_p_adjusted=s_adj, outcome=verdict),
            )
        out.append(replace(r, comparisons=comparisons))
    return out


# --- warnings ---------------------------------------------------------------------------------------
def _variant_conflict_count(*, experiment_id: int) -> tuple[int | None, queries.BoundQuery | None]:
    """Rejected variant conflicts, if tracking records them (``tracking.VariantConflict``)."""
    try:
        model = apps.get_model("tracking", "VariantConflict")
    except LookupError:
        return None, None
    query = queries.readout_variant_conflict_query(model=model, experiment_id=experiment_id)
    return queries.readout_count(query), query


def _srm_warning(srm: stats.SRMResult) -> list[dict]:
    if not srm.mismatch:
        return []
    return [
        {
            "code": "srm",
            "message": (
                "Sample ratio mismatch: the exposures per variant do not match the configured traffic "
                f"weights (chi-square p {formatting.p_equals(srm.p_value)}, below {stats.SRM_P_THRESHOLD:g}). "
                "Assignment or logging is probably broken; do not trust the comparison until it is explained."
            ),
            "chi2": srm.chi2,
            "p_value": srm.p_value,
        }
    ]


def _small_sample_warning(variants: list[VariantReadout]) -> list[dict]:
    small = stats.small_samples([stats.Arm(v.key, v.exposures, v.conversions) for v in variants])
    if not small:
        return []
    limits = []
    for s in small:
        failing = []
        if s.exposures < stats.SMALL_SAMPLE_MIN_EXPOSURES:
            failing.append(f"{s.exposures:,} exposed users (needs {stats.SMALL_SAMPLE_MIN_EXPOSURES})")
        if s.conversions < stats.SMALL_SAMPLE_MIN_CONVERSIONS:
            failing.append(f"{s.conversions:,} conversions (needs {stats.SMALL_SAMPLE_MIN_CONVERSIONS})")
        if s.non_conversions < stats.SMALL_SAMPLE_MIN_NON_CONVERSIONS:
            failing.append(f"{s.non_conversions:,} non-conversions (needs {stats.SMALL_SAMPLE_MIN_NON_CONVERSIONS})")
        limits.append(f"{s.arm} has {' and '.join(failing)}")
    return [
        {
            "code": "small_sample",
            "message": (
                f"Small sample: {'; '.join(limits)}. Below these limits the intervals and tests are not "
                "reliable; treat these numbers as early and noisy."
            ),
            "variants": [s.arm for s in small],
            "thresholds": {
                "min_exposures": stats.SMALL_SAMPLE_MIN_EXPOSURES,
                "min_conversions": stats.SMALL_SAMPLE_MIN_CONVERSIONS,
                "min_non_conversions": stats.SMALL_SAMPLE_MIN_NON_CONVERSIONS,
            },
        }
    ]


def _warnings(*, srm: stats.SRMResult, selected: MetricReadout, conflicts: int | None, started: bool) -> list[dict]:
    out: list[dict] = _srm_warning(srm)
    variants = selected.variants
    missing = [v.key for v in variants if v.exposures == 0]
    if missing and (started or len(missing) < len(variants)):  # nothing is missing before anyone was exposed
        out.append(
            {
                "code": "missing_exposures",
                "message": f"No exposed users in: {', '.join(missing)}. Those arms cannot be compared.",
                "variants": missing,
            }
        )
    out += _small_sample_warning(variants)
    orphan = selected.late + selected.unexposed
    if orphan:
        out.append(
            {
                "code": "conversion_without_exposure",
                "message": (
                    f"{orphan:,} {selected.key} conversion(s) were not counted because the user had no exposure "
                    f"at or before the conversion ({selected.unexposed:,} never exposed, {selected.late:,} "
                    "converted before being exposed)."
                ),
                "count": orphan,
                "never_exposed": selected.unexposed,
                "before_exposure": selected.late,
            }
        )
    if conflicts:
        out.append(
            {
                "code": "variant_conflict",
                "message": (
                    f"{conflicts:,} event(s) were rejected because they named a different variant than the "
                    "user's assignment."
                ),
                "count": conflicts,
            }
        )
    if variants and not any(v.is_control for v in variants):
        out.append({"code": "no_control", "message": "No variant is marked as control, so nothing is compared."})
    return out


# --- the power plan ---------------------------------------------------------------------------------
def power_plan_get(
    *, experiment: Experiment, variants: list[VariantInfo] | None = None, plan: list[PlannedMetric] | None = None
) -> PlanProgress:
    """Users per arm and expected days for the primary metric (statsmodels' solver), in one sentence."""
    if variants is None:
        variants = _variant_infos(experiment)
    primary = (plan or experiment.metric_plan())[0]
    control_index = next((i for i, v in enumerate(variants) if v.is_control), None)
    if experiment.mde is None or control_index is None or len(variants) < 2:
        missing = "a minimum detectable effect" if experiment.mde is None else "a control and a treatment"
        reason = f"No power plan: the plan needs {missing}."
        return PlanProgress(None, None, None, reason, reason)
    plan = stats.power_plan(
        kind=primary.kind,
        alpha=experiment.alpha,
        power=experiment.power,
        mde=experiment.mde,
        weights=[v.weight for v in variants],
        control_index=control_index,
        baseline_rate=experiment.baseline_rate,
        baseline_mean=experiment.baseline_mean,
        baseline_sd=experiment.baseline_sd,
        expected_daily_users=experiment.expected_daily_users,
    )
    if plan.users_per_arm is None:
        return PlanProgress(None, None, None, plan.reason or "No power plan.", plan.reason)
    days = (
        f", about {plan.expected_days:,} days at {experiment.expected_daily_users:,} users a day"
        if plan.expected_days is not None
        else " (give the expected daily users to see how many days)"
    )
    sentence = (
        f"Needs {plan.users_per_arm:,} users per arm (control) to detect a {formatting.signed_pct(experiment.mde, 1)} "
        f"relative change in {primary.key} with {experiment.power:.0%} power at alpha {experiment.alpha:g}{days}."
    )
    return PlanProgress(plan.users_per_arm, plan.expected_days, None, sentence)


def _with_progress(plan: PlanProgress, variants: list[VariantReadout]) -> PlanProgress:
    if plan.users_per_arm is None or not variants:
        return plan
    smallest = min(v.exposures for v in variants)
    return replace(plan, progress=smallest / plan.users_per_arm)


# --- the readout ----------------------------------------------------------------------------------
def _variant_infos(experiment: Experiment) -> list[VariantInfo]:
    return [
        VariantInfo(v.pk, v.key, v.name, v.is_control, v.weight)
        for v in Variant.objects.filter(experiment=experiment).order_by("-is_control", "key")
    ]


def _specs(plan: list[PlannedMetric], metric: str, seen: set[str]) -> tuple[list[PlannedMetric], list[str]]:
    planned_keys = [m.key for m in plan]
    specs = list(plan)
    if metric not in planned_keys:
        specs.append(PlannedMetric(metric, EXPLORATORY, stats.BINARY, stats.INCREASE))
    return specs, [*planned_keys, *sorted(seen - set(planned_keys))]


def _rule_metrics(
    *,
    experiment_id: int,
    definitions: list[MetricDefinition],
    rows: list[queries.SumsRow],
    exclude: frozenset[str] = frozenset(),
):
    """Catalog rule metrics' inputs: from their incremental rollups (``readouts.metric_rollups``, caught up
    first), or from all the events (``catalog_metrics.compute``, the reference) with ``SIGNALDASH_METRIC_ROLLUPS``
    off or when users exposed to several variants must be left out (``exclude``: the rollups hold every user's
    values, so they cannot subtract them; such experiments are rare and already flagged by the
    ``multiple_exposures`` check)."""
    if exclude or not getattr(settings, "SIGNALDASH_METRIC_ROLLUPS", True):
        return catalog_metrics.compute(experiment_id=experiment_id, definitions=definitions, exclude=exclude)
    exposures: dict[int, int] = {}
    for r in rows:
        if r.kind == "exposure":
            exposures[r.variant_id] = exposures.get(r.variant_id, 0) + r.users
    return metric_rollups.computed(experiment_id=experiment_id, definitions=definitions, exposures=exposures)


def readout_get(*, experiment: Experiment, metric: str | None = None, by_day: bool = True) -> Readout:  # noqa: ARG001
    """The readout of every planned metric plus ``metric`` (the primary one by default).

    Query count is constant: the variants, the metric plan, one aggregate (per UTC day, so the page's
    cumulative charts and the time series need no further pass) and the conflict count.
    """
    from experiments.selectors import experiment_metric_plan  # noqa: PLC0415 - experiments imports readouts

    metric = metric or experiment.primary_metric
    variants = _variant_infos(experiment)
    agg_query = queries.readout_aggregate_query(experiment_id=experiment.pk)
    snapshot = None
    if experiment.data_source_id is not None:  # a warehouse experiment: the latest ok snapshot's sums
        from readouts.sources.refresh import snapshot_event_rows, snapshot_state_get, snapshot_sums

        snapshot = snapshot_state_get(experiment=experiment)
        rows = snapshot_sums(experiment=experiment, snapshot=snapshot.snapshot)
        agg_query = queries.BoundQuery(sql=snapshot.snapshot.sql if snapshot.snapshot else "", params={})
        health = dict((snapshot.snapshot.rows or {}).get("health", {})) if snapshot.snapshot else {}
        event_rows = snapshot_event_rows(snapshot=snapshot.snapshot)
        excluded: frozenset[str] = frozenset()
    else:
        rows = rollups.readout_rows(experiment_id=experiment.pk)  # = readout_aggregate(agg_query)
    if snapshot is None:  # the conflict count and the users exposed to several variants (left out), one query
        conflicts, excluded, conflict_query = exclusions.conflicts_and_multiple_exposures(experiment_id=experiment.pk)
        rows = exclusions.rows_without_users(rows, experiment_id=experiment.pk, users=excluded)
        health, event_rows = {"multiple_exposures": len(excluded)}, None
    else:
        conflicts, conflict_query = _variant_conflict_count(experiment_id=experiment.pk)
    plan, definitions = experiment_metric_plan(experiment)
    definitions = dict(definitions)
    plan = [replace(m, kind=definitions[m.key].kind, direction=definitions[m.key].direction) for m in plan]
    seen = {r.metric for r in (rows if event_rows is None else event_rows) if r.kind in ("conversion", "uncounted")}
    specs, metrics = _specs(plan, metric, seen)
    for spec in specs:
        definitions.setdefault(spec.key, MetricDefinition.adhoc(key=spec.key, kind=spec.kind))
    if snapshot is not None:  # the warehouse query applied every rule already; its rows carry the plan keys
        from readouts.sources.refresh import snapshot_computed

        computed = snapshot_computed(
            experiment=experiment, snapshot=snapshot.snapshot, definitions={s.key: definitions[s.key] for s in specs}
        )
        metric_rows = {s.key: [r for r in rows if r.kind == "exposure" or r.metric == s.key] for s in specs}
    else:
        rules = [definitions[s.key] for s in specs]
        computed = _rule_metrics(experiment_id=experiment.pk, definitions=rules, rows=rows, exclude=excluded)
        metric_rows = {s.key: catalog_metrics.metric_rows(definitions[s.key], rows, computed.get(s.key)) for s in specs}
    results = [
        _catalog_metric_readout(
            spec, definitions[spec.key], variants, metric_rows[spec.key], computed.get(spec.key), experiment.alpha
        )
        for spec in specs
    ]
    results = _with_corrections(results, alpha=experiment.alpha, analysis=experiment.analysis)
    selected = next(r for r in results if r.key == metric)
    srm = stats.srm_test(exposures=[v.exposures for v in selected.variants], weights=[v.weight for v in variants])
    family_size = sum(len(r.comparisons) for r in results if r.in_family)
    return Readout(
        experiment_id=experiment.pk,
        experiment_slug=experiment.slug,
        experiment_name=experiment.name,
        experiment_status=experiment.status,
        analysis=experiment.analysis,
        alpha=experiment.alpha,
        metric=metric,
        metrics=metrics,
        results=results,
        computed_at=timezone.now(),
        srm=srm,
        warnings=_warnings(srm=srm, selected=selected, conflicts=conflicts, started=experiment.started_at is not None),
        variant_conflicts=conflicts,
        plan=_with_progress(power_plan_get(experiment=experiment, variants=variants, plan=plan), selected.variants),
        family_size=family_size,
        started_at=experiment.started_at,
        ended_at=experiment.ended_at,
        queries=[q for q in (agg_query, conflict_query) if q is not None],
        rows=rows,
        metric_rows=metric_rows,
        snapshot=snapshot,
        health=health,
        event_rows=event_rows,
    )


def readout_from_rows(
    *, experiment: Experiment, variants: list[VariantInfo], rows: list[queries.SumsRow], conflicts: int | None
) -> Readout:
    """The primary-metric readout from rows already read (the experiment list reads many experiments' rollups
    in one query, ``readouts.program``). No query when ``experiment.metrics`` is prefetched. The same assembly
    as ``readout_get``, without the SQL it keeps for the bundle."""
    metric = experiment.primary_metric
    totals = _Totals.of(rows)
    plan = experiment.metric_plan()
    specs, metrics = _specs(plan, metric, {r.metric for r in rows if r.kind in ("conversion", "uncounted")})
    results = [_metric_readout(spec, variants, totals, experiment.alpha) for spec in specs]
    results = _with_corrections(results, alpha=experiment.alpha, analysis=experiment.analysis)
    selected = next(r for r in results if r.key == metric)
    srm = stats.srm_test(exposures=[v.exposures for v in selected.variants], weights=[v.weight for v in variants])
    return Readout(
        experiment_id=experiment.pk,
        experiment_slug=experiment.slug,
        experiment_name=experiment.name,
        experiment_status=experiment.status,
        analysis=experiment.analysis,
        alpha=experiment.alpha,
        metric=metric,
        metrics=metrics,
        results=results,
        computed_at=timezone.now(),
        srm=srm,
        warnings=_warnings(srm=srm, selected=selected, conflicts=conflicts, started=experiment.started_at is not None),
        variant_conflicts=conflicts,
        plan=_with_progress(power_plan_get(experiment=experiment, variants=variants, plan=plan), selected.variants),
        family_size=sum(len(r.comparisons) for r in results if r.in_family),
        started_at=experiment.started_at,
        ended_at=experiment.ended_at,
        rows=rows,
    )


# --- over time (no further query) -------------------------------------------------------------------
def readout_daily_series(*, readout: Readout) -> dict:
    """Cumulative exposed and converted users (on the readout's metric) per variant and UTC day."""
    rows = [
        r
        for r in readout.rows_for(readout.metric)
        if r.kind == "exposure" or (r.kind == "conversion" and r.metric == readout.metric)
    ]
    days = sorted({r.day for r in rows if r.users})
    series: dict[str, dict[str, list[int]]] = {"exposure": {}, "conversion": {}}
    for kind, per_variant in series.items():
        for v in readout.variants:
            counts: dict[date, int] = {}
            for r in rows:
                if r.kind == kind and r.variant_id == v.id:
                    counts[r.day] = counts.get(r.day, 0) + r.users
            total, points = 0, []
            for d in days:
                total += counts.get(d, 0)
                points.append(total)
            per_variant[v.key] = points
    return {"days": days, "exposures": series["exposure"], "conversions": series["conversion"]}


def readout_timeseries(*, readout: Readout) -> dict:
    """Per UTC day, cumulative per treatment: rel_lift with its fixed-horizon and always-valid intervals."""
    selected = readout.selected
    variants = [VariantInfo(v.id, v.key, v.name, v.is_control, v.weight) for v in selected.variants]
    kind = stats.BINARY if selected.kind == "funnel" else selected.kind
    spec = PlannedMetric(selected.key, selected.role, kind, selected.direction)
    rows = readout.rows_for(selected.key)
    # A ratio has no per-day sums (its numerator and denominator are per user): no time series.
    days = [] if kind == stats.RATIO else sorted({r.day for r in rows if r.users or r.total})
    points: dict[str, list[dict]] = {v.key: [] for v in variants if not v.is_control}
    for d in days:
        result = _metric_readout(spec, variants, _Totals.of(rows, until=d), readout.alpha)
        for c in result.comparisons:
            points[c.variant].append(
                {
                    "day": d.isoformat(),
                    "rel_lift": c.rel.rel_lift,
                    "rel_lift_ci": _interval(c.rel.rel_lift_ci),
                    "sequential": {"rel_lift_ci": _interval(c.sequential.rel_lift_ci)},
                    "n": {c.control: _n(result, c.control), c.variant: _n(result, c.variant)},
                }
            )
    return {
        "experiment": readout.experiment_slug,
        "metric": selected.key,
        "metric_kind": selected.kind,
        "alpha": readout.alpha,
        "days": [d.isoformat() for d in days],
        "treatments": [{"variant": key, "points": pts} for key, pts in points.items()],
    }


def _n(result: MetricReadout, key: str) -> int:
    return next(v.exposures for v in result.variants if v.key == key)


def _interval(i: stats.Interval | None) -> list[float] | None:
    return i.as_list() if i is not None else None
