"""Decision governance: health checks, the deviation report and the ship guard's problems.

Everything here is read from a ``Readout`` (the aggregate's rows, the scorecard and the power plan) plus
two small facts from the database: the distinct users with a variant conflict, and the recorded readout
views (``readouts.ReadoutView``, for peeking and exploratory readouts). Thresholds and their meaning are
documented in docs/metrics.md ("Health checks"); what blocks a ship in docs/sop.md ("Decision rules").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

from django.contrib.auth import get_user_model
from django.db.models import Count
from django.utils import timezone

from experiments.models import Analysis, Experiment
from readouts import formatting, stats
from readouts.dimensions import DimensionBreakdown, dimension_breakdown_get
from readouts.models import ReadoutView
from readouts.selectors import MetricReadout, Readout, readout_get
from tracking.models import VariantConflict

OK, WARN, FAIL = "ok", "warn", "fail"
CHECK_CODES = (
    "srm",
    "conversions_without_exposure",
    "variant_conflicts",
    "covariate_imbalance",
    "sample_progress",
    "peeking",
    "multiple_exposures",
)
SRM_FAIL_P = stats.SRM_P_THRESHOLD  # 0.001
UNCOUNTED_WARN, UNCOUNTED_FAIL = 0.01, 0.05
CONFLICT_WARN, CONFLICT_FAIL = 0.01, 0.05
COVARIATE_WARN_P = 0.001
SHIP_PROBLEM_CODES = ("srm", "guardrail_worse", "primary_not_better", "sample_not_reached")


@dataclass(frozen=True)
class Check:
    code: str
    status: str  # ok | warn | fail
    value: float | int | None
    threshold: dict[str, float]
    message: str

    def as_json(self) -> dict:
        return {
            "code": self.code,
            "status": self.status,
            "value": self.value,
            "threshold": self.threshold,
            "message": self.message,
        }


@dataclass(frozen=True)
class Deviation:
    code: str  # check | stopped_early | exploratory_metric | exploratory_dimension | duration
    message: str
    detail: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"code": self.code, "message": self.message, **self.detail}


@dataclass(frozen=True)
class ShipProblem:
    code: str  # srm | guardrail_worse | primary_not_better | sample_not_reached
    message: str

    def as_json(self) -> dict:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class ViewFacts:
    conflict_users: int
    running_views: int
    metric_views: dict[str, int]  # metric key → views ("" = the default, primary metric)
    dimension_views: dict[str, int]


@dataclass(frozen=True)
class Governance:
    checks: list[Check]
    deviations: list[Deviation]
    registered_dimensions: list[str] = field(default_factory=list)  # pre-registered exposure props keys

    @property
    def by_code(self) -> dict[str, Check]:
        return {c.code: c for c in self.checks}

    @property
    def attention(self) -> list[Check]:
        return [c for c in self.checks if c.status != OK]


# --- recording views (the only writer of ReadoutView) -------------------------------------------------
def _is_person(user) -> bool:
    return isinstance(user, get_user_model()) and user.is_authenticated


def readout_view_record(
    *, experiment: Experiment, user, source: str, metric: str = "", dimension: str = ""
) -> ReadoutView | None:
    """Record that a person opened the readout (API keys and anonymous users are not people: None).

    One INSERT (atomic on its own, so no savepoint: the readout's query count stays small)."""
    if not _is_person(user):
        return None
    return ReadoutView.objects.create(
        experiment=experiment,
        user=user,
        status_at_view=experiment.status,
        source=source,
        metric=metric or "",
        dimension=dimension or "",
    )


def view_facts_get(*, experiment_id: int) -> ViewFacts:
    """Two queries: distinct users with a variant conflict; recorded views by status, metric and dimension."""
    conflict_users = VariantConflict.objects.filter(experiment_id=experiment_id).values("user_key").distinct().count()
    running, metrics, dimensions = 0, {}, {}
    rows = (
        ReadoutView.objects.filter(experiment_id=experiment_id)
        .values("status_at_view", "metric", "dimension")
        .annotate(n=Count("id"))
        .order_by()
    )
    for r in rows:
        if r["status_at_view"] == Experiment.Status.RUNNING:
            running += r["n"]
        metrics[r["metric"]] = metrics.get(r["metric"], 0) + r["n"]
        if r["dimension"]:
            dimensions[r["dimension"]] = dimensions.get(r["dimension"], 0) + r["n"]
    return ViewFacts(conflict_users, running, metrics, dimensions)


# --- checks -----------------------------------------------------------------------------------------
def _srm_check(readout: Readout) -> Check:
    srm, threshold = readout.srm, {"fail": SRM_FAIL_P}
    if srm.p_value is None:
        return Check("srm", OK, None, threshold, f"No sample-ratio test yet: {srm.reason or 'no data'}.")
    p = formatting.p_equals(srm.p_value)
    if srm.p_value < SRM_FAIL_P:
        return Check(
            "srm",
            FAIL,
            srm.p_value,
            threshold,
            f"Sample ratio mismatch: exposures per variant do not match the weights (chi-square p {p}, below "
            f"{SRM_FAIL_P:g}). The split is broken; no comparison can be trusted until it is explained.",
        )
    return Check("srm", OK, srm.p_value, threshold, f"Exposures match the variant weights (chi-square p {p}).")


def _level(value: float, warn: float, fail: float) -> str:
    return FAIL if value > fail else WARN if value > warn else OK


def _uncounted_check(readout: Readout) -> Check:
    rows = readout.rows if readout.event_rows is None else readout.event_rows  # per event name, not per metric
    counted = sum(r.events for r in rows if r.kind == "conversion")
    uncounted = sum(r.late + r.unexposed for r in rows if r.kind == "uncounted")
    late = sum(r.late for r in rows if r.kind == "uncounted")
    threshold = {"warn": UNCOUNTED_WARN, "fail": UNCOUNTED_FAIL}
    total = counted + uncounted
    if total == 0:
        return Check("conversions_without_exposure", OK, None, threshold, "No conversions yet.")
    share = uncounted / total
    status = _level(share, UNCOUNTED_WARN, UNCOUNTED_FAIL)
    return Check(
        "conversions_without_exposure",
        status,
        share,
        threshold,
        f"{uncounted:,} of {total:,} conversion events ({formatting.pct(share)}) were not counted: "
        f"{uncounted - late:,} from users never exposed, {late:,} before the user's exposure."
        + ("" if status == OK else " Exposure logging is probably missing or late for some users."),
    )


def _conflict_check(readout: Readout, facts: ViewFacts) -> Check:
    exposed = sum(v.exposures for v in readout.selected.variants)
    threshold = {"warn": CONFLICT_WARN, "fail": CONFLICT_FAIL}
    users = facts.conflict_users
    if exposed == 0:
        status = FAIL if users else OK
        return Check(
            "variant_conflicts",
            status,
            None,
            threshold,
            f"{users:,} user(s) with a variant conflict, no exposed users.",
        )
    share = users / exposed
    status = _level(share, CONFLICT_WARN, CONFLICT_FAIL)
    return Check(
        "variant_conflicts",
        status,
        share,
        threshold,
        f"{users:,} of {exposed:,} exposed users ({formatting.pct(share)}) were reported in a variant other than "
        "their assignment." + ("" if status == OK else " The calling service does not show users a stable variant."),
    )


def _covariate_sums(readout: Readout) -> dict[tuple[int | None, str], tuple[float, float]]:
    """(variant id, metric) → (Σ X, Σ X²) of the pre-exposure covariates."""
    cov: dict[tuple[int | None, str], tuple[float, float]] = {}
    for r in readout.rows:
        if r.kind == "covariate" and r.users:
            total, total_sq = cov.get((r.variant_id, r.metric), (0.0, 0.0))
            cov[(r.variant_id, r.metric)] = (total + r.total, total_sq + r.total_sq)
    return cov


def _worst_covariate_p(readout: Readout, cov: dict) -> tuple[float, str, str] | None:
    """The smallest Welch p of pre-exposure means (users without a covariate count as 0), treatment vs control."""
    variants = readout.selected.variants
    control = next(v for v in variants if v.is_control)
    worst = None
    for metric in sorted({m for _, m in cov}):
        a_sum, a_sq = cov.get((control.id, metric), (0.0, 0.0))
        a = stats.SampleSums(n=control.exposures, sum=a_sum, sum_squares=a_sq)
        for v in variants:
            if v.is_control:
                continue
            b_sum, b_sq = cov.get((v.id, metric), (0.0, 0.0))
            b = stats.SampleSums(n=v.exposures, sum=b_sum, sum_squares=b_sq)
            p = stats.welch_diff(control=a, treatment=b, alpha=stats.ALPHA).p_value
            if p is not None and (worst is None or p < worst[0]):
                worst = (p, metric, v.key)
    return worst


def _covariate_check(readout: Readout) -> Check:
    threshold = {"warn": COVARIATE_WARN_P}
    cov = _covariate_sums(readout)
    control = next((v for v in readout.selected.variants if v.is_control), None)
    if not cov or control is None:
        why = "no covariates were sent" if not cov else "there is no control"
        return Check("covariate_imbalance", OK, None, threshold, f"Not checked: {why}.")
    worst = _worst_covariate_p(readout, cov)
    if worst is None:
        return Check("covariate_imbalance", OK, None, threshold, "Not checked: too few users with covariates.")
    p, metric, variant = worst
    text = f"pre-exposure {metric} of {variant} vs {control.key}: Welch p {formatting.p_equals(p)}"
    if p < COVARIATE_WARN_P:
        return Check(
            "covariate_imbalance",
            WARN,
            p,
            threshold,
            f"The arms differ before exposure ({text}): randomisation or covariate logging broke.",
        )
    return Check("covariate_imbalance", OK, p, threshold, f"Arms balanced before exposure (smallest p: {text}).")


def _arm_progress(readout: Readout, keys: set[str] | None = None) -> tuple[float, str] | None:
    """(smallest n_i / planned_i, its variant) over the arms (``keys``: only those), planned_i from the power plan."""
    plan, variants = readout.plan, readout.selected.variants
    control = next((v for v in variants if v.is_control), None)
    if plan.users_per_arm is None or control is None:
        return None
    progress = [
        (v.exposures * control.weight / (plan.users_per_arm * v.weight), v.key)
        for v in variants
        if keys is None or v.key in keys
    ]
    return min(progress) if progress else None


def _sample_check(readout: Readout) -> Check:
    threshold = {"warn": 1.0}
    progress = _arm_progress(readout)
    value = None if progress is None else progress[0]
    if readout.analysis == Analysis.SEQUENTIAL:
        return Check(
            "sample_progress",
            OK,
            value,
            threshold,
            "Not required: sequential (always-valid) analysis may be decided at any sample size.",
        )
    if progress is None:
        return Check("sample_progress", OK, None, threshold, f"Not checked: {readout.plan.reason or 'no power plan'}")
    share, arm = progress
    if share < 1:
        return Check(
            "sample_progress",
            WARN,
            share,
            threshold,
            f"The smallest arm ({arm}) has {formatting.pct(share)} of its planned users: a fixed-horizon test is "
            "only valid at the planned sample.",
        )
    return Check("sample_progress", OK, share, threshold, "Every arm has reached its planned users.")


def _peeking_check(readout: Readout, facts: ViewFacts) -> Check:
    n, threshold = facts.running_views, {"warn": 0}
    if readout.analysis == Analysis.SEQUENTIAL:
        return Check(
            "peeking",
            OK,
            n,
            threshold,
            "Not a problem: sequential analysis stays valid however often it is looked at "
            f"({n:,} view(s) while running).",
        )
    if n > 0:
        return Check(
            "peeking",
            WARN,
            n,
            threshold,
            f"The readout was opened {n:,} time(s) while the experiment was running; stopping on a look inflates "
            "the false-positive rate of a fixed-horizon test.",
        )
    return Check("peeking", OK, 0, threshold, "Nobody opened the readout while the experiment was running.")


def checks_get(*, readout: Readout, facts: ViewFacts) -> list[Check]:
    """Every health check, in CHECK_CODES order (always all of them)."""
    return [
        _srm_check(readout),
        _uncounted_check(readout),
        _conflict_check(readout, facts),
        _covariate_check(readout),
        _sample_check(readout),
        _peeking_check(readout, facts),
        *_warehouse_checks(readout),
    ]


WAREHOUSE_FAIL = 0.05  # share of exposed users
EXPOSURE_HEALTH = (
    ("multiple_exposures", "user(s)", "were exposed to more than one variant and are left out of every metric"),
    ("unknown_variants", "exposure row(s)", "name a variant key this experiment does not have; they are not counted"),
)


def _warehouse_checks(readout: Readout) -> list[Check]:
    """multiple_exposures (users; every readout), and unknown_variants (rows; warehouse snapshots only)."""
    health = readout.health
    exposed = max(1, sum(v.exposures for v in readout.variants))
    out = []
    for code, unit, what in EXPOSURE_HEALTH:
        if code not in health and code != "multiple_exposures":
            continue
        value = int(health.get(code, 0))
        status = OK if value == 0 else (FAIL if value / exposed > WAREHOUSE_FAIL else WARN)
        message = f"{value:,} {unit} {what}." if value else f"No {code.replace('_', ' ')}."
        out.append(Check(code, status, value, {"warn": 1, "fail_share_of_exposed": WAREHOUSE_FAIL}, message))
    return out


# --- deviations ------------------------------------------------------------------------------------
def _days(start: datetime, end: datetime) -> float:
    return round((end - start).total_seconds() / 86400, 1)


def _duration(readout: Readout, now: datetime) -> Deviation | None:
    planned = readout.plan.expected_days
    if planned is None or readout.started_at is None:
        return None
    ended = readout.ended_at is not None
    ran = _days(readout.started_at, readout.ended_at or now)
    if (ended and abs(ran - planned) >= 1) or (not ended and ran >= planned + 1):
        verb = "ran" if ended else "has been running for"
        return Deviation(
            "duration",
            f"The experiment {verb} {ran:g} days; the plan expected about {planned:,}.",
            {"days_run": ran, "days_planned": planned},
        )
    return None


def _exploratory(readout: Readout, facts: ViewFacts, registered: list[str], dimension: str | None) -> list[Deviation]:
    planned = {r.key for r in readout.scorecard}
    metric_views = {k: n for k, n in facts.metric_views.items() if k and k not in planned}
    if readout.selected.role == "exploratory":
        metric_views.setdefault(readout.selected.key, 0)
    dimension_views = {k: n for k, n in facts.dimension_views.items() if k not in registered}
    if dimension and dimension not in registered:
        dimension_views.setdefault(dimension, 0)
    out = [
        Deviation(
            "exploratory_metric",
            f"Metric {k} was not pre-registered: its readout is exploratory ({n:,} recorded view(s)).",
            {"metric": k, "views": n},
        )
        for k, n in sorted(metric_views.items())
    ]
    out += [
        Deviation(
            "exploratory_dimension",
            f"Breakdown by {k} was not pre-registered: its slices are exploratory ({n:,} recorded view(s)).",
            {"dimension": k, "views": n},
        )
        for k, n in sorted(dimension_views.items())
    ]
    return out


def deviations_get(
    *,
    readout: Readout,
    checks: list[Check],
    facts: ViewFacts,
    registered_dimensions: list[str],
    dimension: str | None = None,
    now: datetime | None = None,
) -> list[Deviation]:
    """Every difference between the pre-registration and what happened."""
    out: list[Deviation] = []
    for c in checks:
        if c.status == OK:
            continue
        if c.code == "sample_progress" and readout.ended_at is not None:
            out.append(
                Deviation(
                    "stopped_early",
                    f"Stopped before the planned sample (fixed analysis): {c.message}",
                    {"progress": c.value},
                )
            )
            continue
        out.append(Deviation("check", c.message, {"check": c.code, "status": c.status}))
    out += _exploratory(readout, facts, registered_dimensions, dimension)
    if (duration := _duration(readout, now or timezone.now())) is not None:
        out.append(duration)
    return out


def governance_get(
    *, experiment: Experiment, readout: Readout, dimension: str | None = None, facts: ViewFacts | None = None
) -> Governance:
    """Checks and deviations of a readout (two queries for the view and conflict facts unless given)."""
    facts = facts or view_facts_get(experiment_id=readout.experiment_id)
    checks = checks_get(readout=readout, facts=facts)
    deviations = deviations_get(
        readout=readout,
        checks=checks,
        facts=facts,
        registered_dimensions=list(experiment.dimensions or []),
        dimension=dimension,
    )
    return Governance(checks, deviations, list(experiment.dimensions or []))


# --- the ship guard ------------------------------------------------------------------------------------
def _comparison_outcome(r: MetricReadout, variant: str) -> str | None:
    return next((c.outcome for c in r.comparisons if c.variant == variant), None)


def ship_problems_get(*, readout: Readout, governance: Governance, variant: str) -> list[ShipProblem]:
    """What blocks shipping ``variant`` (a treatment key), in SHIP_PROBLEM_CODES order."""
    problems: list[ShipProblem] = []
    srm = governance.by_code["srm"]
    if srm.status == FAIL:
        problems.append(ShipProblem("srm", srm.message))
    worse = [r.key for r in readout.results if r.role == "guardrail" and _comparison_outcome(r, variant) == "worse"]
    if worse:
        problems.append(
            ShipProblem("guardrail_worse", f"Guardrail metric(s) {', '.join(worse)} got worse with {variant}.")
        )
    primary = next((r for r in readout.results if r.role == "primary"), None)
    outcome = None if primary is None else _comparison_outcome(primary, variant)
    if outcome != "better":
        problems.append(
            ShipProblem(
                "primary_not_better",
                f"The primary metric{'' if primary is None else f' {primary.key}'} is {outcome or 'not compared'} "
                f"for {variant}, not better.",
            )
        )
    if readout.analysis == Analysis.FIXED:
        control = next((v.key for v in readout.selected.variants if v.is_control), None)
        progress = _arm_progress(readout, {variant, control} if control else {variant})
        if progress is not None and progress[0] < 1:
            problems.append(
                ShipProblem(
                    "sample_not_reached",
                    f"Fixed-horizon analysis: {progress[1]} has {formatting.pct(progress[0])} of its planned users "
                    f"({readout.plan.users_per_arm:,} per control arm).",
                )
            )
    return problems


@dataclass(frozen=True)
class ShipAssessment:
    """What the person deciding sees before pressing ship: checks, deviations and each treatment's problems."""

    readout: Readout
    governance: Governance
    problems: dict[str, list[ShipProblem]]  # treatment key → its blocking problems

    @cached_property
    def verdicts(self) -> list:
        """Each treatment's verdict (``readouts.verdicts``), from these checks and problems."""
        from readouts.verdicts import verdicts_get  # verdicts reads this module

        return verdicts_get(self.readout, governance=self.governance)

    @property
    def untrustworthy(self) -> bool:
        return any(v.label == "untrustworthy" for v in self.verdicts)


def ship_assessment_get(*, experiment: Experiment) -> ShipAssessment:
    readout = readout_get(experiment=experiment)
    governance = governance_get(experiment=experiment, readout=readout)
    problems = {
        v.key: ship_problems_get(readout=readout, governance=governance, variant=v.key)
        for v in readout.selected.variants
        if not v.is_control
    }
    return ShipAssessment(readout, governance, problems)


def readout_governance_for_view(
    *, readout: Readout, user, source: str, dimension: str | None = None
) -> tuple[Governance, DimensionBreakdown | None]:
    """For the readout page and API: record the view (people only), then checks, deviations and the breakdown.

    Queries: the experiment, the view INSERT (session users), the two view/conflict facts, and one aggregate
    when a dimension is asked for. ``dimension`` must already be validated (``dimension_key_is_valid``).
    """
    experiment = Experiment.objects.get(pk=readout.experiment_id)
    readout_view_record(
        experiment=experiment, user=user, source=source, metric=readout.metric, dimension=dimension or ""
    )
    governance = governance_get(experiment=experiment, readout=readout, dimension=dimension)
    breakdown = dimension_breakdown_get(experiment=experiment, readout=readout, key=dimension) if dimension else None
    return governance, breakdown
