"""Pure readout statistics: frozen dataclasses in and out, no Django imports, no raising on zeros.

Every function returns ``None`` for a quantity that is undefined, together with a plain-language
``reason`` saying why. Definitions are in docs/metrics.md ("Readout statistics", "Statistics engine").
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy import stats as sps
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportion_effectsize,
    proportions_ztest,
)

ALPHA = 0.05  # 95% intervals, two-sided tests
SRM_P_THRESHOLD = 0.001

# Small-sample rule (documented in docs/metrics.md): the normal approximations behind the Wald
# interval and the z-test need enough users and enough outcomes of both kinds in every arm.
SMALL_SAMPLE_MIN_EXPOSURES = 100
SMALL_SAMPLE_MIN_CONVERSIONS = 10
SMALL_SAMPLE_MIN_NON_CONVERSIONS = 10

LIFT_UNDEFINED_CONTROL_ZERO = "Lift undefined (control conversion rate is 0)"


@dataclass(frozen=True)
class Arm:
    """One variant's distinct-user counts for one metric."""

    key: str
    exposures: int
    conversions: int


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def as_list(self) -> list[float]:
        return [self.low, self.high]


@dataclass(frozen=True)
class RateResult:
    rate: float | None
    ci: Interval | None
    reason: str = ""


@dataclass(frozen=True)
class Comparison:
    variant: str
    control: str
    diff: float | None
    diff_ci: Interval | None
    lift: float | None  # percent
    z: float | None
    p_value: float | None
    lift_reason: str = ""
    test_reason: str = ""


@dataclass(frozen=True)
class SRMResult:
    chi2: float | None
    p_value: float | None
    reason: str = ""

    @property
    def mismatch(self) -> bool:
        return self.p_value is not None and self.p_value < SRM_P_THRESHOLD


@dataclass(frozen=True)
class SmallSample:
    arm: str
    exposures: int
    conversions: int
    non_conversions: int


def _finite(x: float) -> float:
    """A float for JSON: numpy scalars become floats; a p-value underflow stays 0.0."""
    value = float(x)
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"non-finite statistic {value!r}")  # guarded by the callers' zero checks
    return value


def rate_with_ci(*, conversions: int, exposures: int) -> RateResult:
    """Conversion rate and its 95% Wilson score interval."""
    if exposures <= 0:
        return RateResult(rate=None, ci=None, reason="No exposed users, so there is no rate.")
    low, high = proportion_confint(conversions, exposures, alpha=ALPHA, method="wilson")
    return RateResult(
        rate=conversions / exposures,
        ci=Interval(max(0.0, _finite(low)), min(1.0, _finite(high))),
    )


def lift_percent(*, control_rate: float, treatment_rate: float) -> tuple[float | None, str]:
    """Relative lift of treatment over control, in percent; (None, reason) when undefined."""
    if control_rate == 0:
        if treatment_rate == 0:
            return 0.0, ""
        return None, LIFT_UNDEFINED_CONTROL_ZERO
    return (treatment_rate - control_rate) / control_rate * 100.0, ""


def compare(*, control: Arm, treatment: Arm) -> Comparison:
    """Treatment minus control: difference with 95% Wald CI, lift %, pooled two-proportion z-test."""
    empty = [a.key for a in (control, treatment) if a.exposures <= 0]
    if empty:
        arms = f"the {empty[0]} arm has" if len(empty) == 1 else f"the {empty[0]} and {empty[1]} arms have"
        reason = f"No p-value: {arms} no exposed users."
        return Comparison(
            variant=treatment.key,
            control=control.key,
            diff=None,
            diff_ci=None,
            lift=None,
            z=None,
            p_value=None,
            lift_reason=reason,
            test_reason=reason,
        )
    p_c = control.conversions / control.exposures
    p_t = treatment.conversions / treatment.exposures
    lift, lift_reason = lift_percent(control_rate=p_c, treatment_rate=p_t)
    low, high = confint_proportions_2indep(
        treatment.conversions,
        treatment.exposures,
        control.conversions,
        control.exposures,
        compare="diff",
        method="wald",
        alpha=ALPHA,
    )
    pooled = (control.conversions + treatment.conversions) / (control.exposures + treatment.exposures)
    if pooled in (0.0, 1.0):
        z = p_value = None
        test_reason = (
            "No test: every user in both arms "
            + ("did not convert" if pooled == 0 else "converted")
            + ", so there is no variation to test."
        )
    else:
        z_raw, p_raw = proportions_ztest(
            [treatment.conversions, control.conversions], [treatment.exposures, control.exposures]
        )
        z, p_value, test_reason = _finite(z_raw), _finite(p_raw), ""
    return Comparison(
        variant=treatment.key,
        control=control.key,
        diff=p_t - p_c,
        diff_ci=Interval(_finite(low), _finite(high)),
        lift=lift,
        z=z,
        p_value=p_value,
        lift_reason=lift_reason,
        test_reason=test_reason,
    )


def srm_test(*, exposures: Sequence[int], weights: Sequence[int]) -> SRMResult:
    """Chi-square goodness of fit of exposures per arm against the configured traffic weights."""
    if len(exposures) != len(weights):
        raise ValueError("exposures and weights must have the same length")
    if len(exposures) < 2:
        return SRMResult(None, None, "Needs at least two variants.")
    total = sum(exposures)
    if total <= 0:
        return SRMResult(None, None, "No exposed users yet.")
    if any(w <= 0 for w in weights):
        return SRMResult(None, None, "Every variant needs a positive weight.")
    weight_sum = sum(weights)
    expected = [total * w / weight_sum for w in weights]
    chi2, p_value = sps.chisquare(list(exposures), f_exp=expected)
    return SRMResult(chi2=_finite(chi2), p_value=_finite(p_value))


def small_samples(arms: Sequence[Arm]) -> list[SmallSample]:
    """Arms (with at least one exposure) below the small-sample thresholds."""
    out = []
    for arm in arms:
        if arm.exposures <= 0:
            continue  # reported as missing_exposures instead
        non = arm.exposures - arm.conversions
        if (
            arm.exposures < SMALL_SAMPLE_MIN_EXPOSURES
            or arm.conversions < SMALL_SAMPLE_MIN_CONVERSIONS
            or non < SMALL_SAMPLE_MIN_NON_CONVERSIONS
        ):
            out.append(SmallSample(arm.key, arm.exposures, arm.conversions, non))
    return out


# ---------------------------------------------------------------------------------------------------
# Statistics engine (issue 8): sufficient statistics per arm in, GrowthBook gbstats 0.8.0 conventions.
# Relative quantities are fractions (0.05 = +5%); A = control, B = treatment. Definitions and what a
# reader may conclude: docs/metrics.md ("Statistics engine").
# ---------------------------------------------------------------------------------------------------

BINARY, MEAN, RATIO = "binary", "mean", "ratio"
INCREASE, DECREASE = "increase", "decrease"
KINDS = (BINARY, MEAN)
STAT_KINDS = (BINARY, MEAN, RATIO)  # what the lift functions take (a ratio with RatioSums)
DIRECTIONS = (INCREASE, DECREASE)
BETTER, WORSE, INCONCLUSIVE = "better", "worse", "inconclusive"
SEQUENTIAL_TUNING = 5000

# A variance this small relative to the mean square is rounding noise of identical values
# (e.g. ten users who all spent 0.1), not spread: it counts as zero variance.
_ZERO_VARIANCE_RELATIVE = 1e-12

NO_USERS_CONTROL = "No users in the control arm yet."
NO_USERS_TREATMENT = "No users in the treatment arm yet."
CONTROL_MEAN_ZERO = "Relative lift undefined: the control mean is 0."


@dataclass(frozen=True)
class SampleSums:
    """Sufficient statistics of per-user values for one variant and one metric (SQL produces these)."""

    n: int
    sum: float
    sum_squares: float
    cov_sum: float = 0.0  # covariate X (pre-exposure value), 0 for users without one
    cov_sum_squares: float = 0.0
    sum_products: float = 0.0  # Σ X·Y
    has_covariate: bool = False  # True when any covariate was sent for this metric in this experiment


@dataclass(frozen=True)
class RatioSums:
    """Sufficient statistics of a ratio metric for one variant: per-user numerator m and denominator d.

    The part kinds choose the part variance as gbstats does (binary: ProportionStatistic p(1 − p); mean:
    SampleMeanStatistic). The statistic is gbstats ``RatioStatistic``: mean Σm/Σd, delta-method variance.
    """

    n: int
    numerator_sum: float
    numerator_sum_squares: float
    denominator_sum: float
    denominator_sum_squares: float
    sum_products: float  # Σ m·d
    numerator_kind: str = MEAN
    denominator_kind: str = MEAN
    has_covariate: bool = False  # no CUPED for ratios


@dataclass(frozen=True)
class ArmSummary:
    mean: float | None
    sd: float | None
    variance: float | None
    reason: str = ""


@dataclass(frozen=True)
class MeanDiff:
    """Treatment minus control for a mean metric: Welch interval and Welch t-test."""

    diff: float | None
    diff_ci: Interval | None
    t: float | None
    df: float | None
    p_value: float | None
    reason: str = ""


@dataclass(frozen=True)
class RelativeLift:
    rel_lift: float | None
    rel_lift_ci: Interval | None
    variance: float | None  # V, the delta-method variance
    df: float | None
    reason: str = ""
    p_value: float | None = None  # two-sided Welch t-test of rel_lift = 0 (gbstats TwoSidedTTest)


@dataclass(frozen=True)
class Sequential:
    rel_lift_ci: Interval | None
    p_value: float | None
    reason: str = ""


@dataclass(frozen=True)
class Bayes:
    chance_to_beat: float | None
    expected_loss: float | None
    rel_lift_ci: Interval | None
    reason: str = ""
    posterior_mean: float | None = None  # of the relative lift
    posterior_sd: float | None = None


@dataclass(frozen=True)
class Cuped:
    theta: float
    rel_lift: float | None
    rel_lift_ci: Interval | None
    p_value: float | None
    variance_reduction: float | None
    reason: str = ""


@dataclass(frozen=True)
class PowerPlan:
    users_per_arm: int | None  # users in the control arm; arm i needs users_per_arm × w_i / w_control
    expected_days: int | None
    reason: str = ""
    total_users: int | None = None  # ceil(users_per_arm × Σ weights / control weight)


@dataclass(frozen=True)
class _ArmStat:
    """gbstats' Statistic: n, the (possibly CUPED-adjusted) mean, the unadjusted mean, the variance."""

    n: int
    mean: float
    unadjusted_mean: float
    variance: float
    undefined: str = ""  # why the arm's mean is undefined (a ratio's zero denominator), "" when defined


@dataclass(frozen=True)
class _Estimate:
    lift: float
    variance: float  # delta-method variance of the relative lift
    df: float  # Welch-Satterthwaite


def _check(kind: str | None = None, alpha: float | None = None, direction: str | None = None, sums=None) -> None:
    """Configuration errors (not data) raise: an unknown kind or direction, alpha outside (0, 1).

    ``ratio`` is a kind only with ``RatioSums`` (``sums``); the per-arm SampleSums functions never take it.
    """
    ratio_ok = isinstance(sums, RatioSums)
    if kind is not None and (kind not in STAT_KINDS or (kind == RATIO) != ratio_ok):
        raise ValueError(f"unknown metric kind {kind!r} for {type(sums).__name__} (expected one of {STAT_KINDS})")
    if direction is not None and direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r} (expected one of {DIRECTIONS})")
    if alpha is not None and not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


def _as_floats(s: SampleSums) -> SampleSums:
    """Plain int/float copies: SQL may hand over Decimal sums (PostgreSQL SUM) or numpy scalars."""
    return SampleSums(
        n=int(s.n),
        sum=float(s.sum),
        sum_squares=float(s.sum_squares),
        cov_sum=float(s.cov_sum),
        cov_sum_squares=float(s.cov_sum_squares),
        sum_products=float(s.sum_products),
        has_covariate=bool(s.has_covariate),
    )


def _sample_variance(n: int, total: float, sum_squares: float) -> float:
    """gbstats SampleMeanStatistic.variance: n − 1 denominator, 0 for n ≤ 1, rounding noise → 0."""
    if n <= 1:
        return 0.0
    variance = (sum_squares - total * total / n) / (n - 1)
    if variance <= _ZERO_VARIANCE_RELATIVE * abs(sum_squares) / n:
        return 0.0
    return variance


def _arm_mean(s: SampleSums) -> float:
    return s.sum / s.n if s.n > 0 else 0.0


def _arm_variance(s: SampleSums, kind: str) -> float:
    """Binary: p(1 − p) (gbstats ProportionStatistic); mean: sample variance (SampleMeanStatistic)."""
    if kind == BINARY:
        p = _arm_mean(s)
        return max(0.0, p * (1.0 - p))
    return _sample_variance(s.n, s.sum, s.sum_squares)


def _ratio_stat(s: RatioSums) -> _ArmStat:
    """gbstats RatioStatistic: mean Σm/Σd (0 when Σd = 0), delta-method variance (0 for n ≤ 1 or mean d = 0)."""
    n = int(s.n)
    m = SampleSums(n, float(s.numerator_sum), float(s.numerator_sum_squares))
    d = SampleSums(n, float(s.denominator_sum), float(s.denominator_sum_squares))
    if d.sum == 0:
        reason = "The ratio is undefined: the denominator sum is 0 in this arm." if n > 0 else ""
        return _ArmStat(n=n, mean=0.0, unadjusted_mean=0.0, variance=0.0, undefined=reason)
    mean = m.sum / d.sum
    mu_m, mu_d = _arm_mean(m), _arm_mean(d)
    variance = 0.0
    if n > 1 and mu_d != 0:
        var_m, var_d = _arm_variance(m, s.numerator_kind), _arm_variance(d, s.denominator_kind)
        cov = _covariance(n, m.sum, d.sum, float(s.sum_products))
        variance = var_m / mu_d**2 - 2.0 * cov * mu_m / mu_d**3 + mu_m**2 * var_d / mu_d**4
    return _ArmStat(n=n, mean=mean, unadjusted_mean=mean, variance=variance)


def _arm_stat(s: SampleSums | RatioSums, kind: str) -> _ArmStat:
    if isinstance(s, RatioSums):
        return _ratio_stat(s)
    s = _as_floats(s)
    mean = _arm_mean(s)
    return _ArmStat(n=s.n, mean=mean, unadjusted_mean=mean, variance=_arm_variance(s, kind))


def arm_summary(s: SampleSums, *, kind: str) -> ArmSummary:
    """Mean (binary: rate), variance and sd of one arm's per-user values."""
    _check(kind=kind)
    s = _as_floats(s)
    if s.n <= 0:
        return ArmSummary(mean=None, sd=None, variance=None, reason="No users in this arm yet.")
    variance = _arm_variance(s, kind)
    reason = ""
    if s.n == 1:
        reason = "Only one user: the spread cannot be estimated, so the variance is taken as 0."
    return ArmSummary(
        mean=_finite(s.sum / s.n), sd=_finite(math.sqrt(variance)), variance=_finite(variance), reason=reason
    )


def _welch_df(a: _ArmStat, b: _ArmStat) -> float:
    """Welch–Satterthwaite degrees of freedom (gbstats TTest.dof); callers ensure n ≥ 2 and a variance > 0."""
    va, vb = a.variance / a.n, b.variance / b.n
    return (va + vb) ** 2 / (va * va / (a.n - 1) + vb * vb / (b.n - 1))


def _two_sided_t(estimate: float, se: float, df: float, alpha: float) -> tuple[float, float, Interval]:
    """t statistic, two-sided p-value (survival function: no 1 − cdf cancellation) and interval."""
    t_stat = estimate / se
    p_value = 2.0 * float(sps.t.sf(abs(t_stat), df))
    half = float(sps.t.ppf(1.0 - alpha / 2.0, df)) * se
    return t_stat, min(1.0, p_value), Interval(_finite(estimate - half), _finite(estimate + half))


def welch_diff(*, control: SampleSums, treatment: SampleSums, alpha: float) -> MeanDiff:
    """Treatment mean minus control mean with a Welch interval and Welch t-test (mean metrics)."""
    _check(alpha=alpha)
    control, treatment = _as_floats(control), _as_floats(treatment)
    small = [name for name, s in (("control", control), ("treatment", treatment)) if s.n < 2]
    if small:
        arms = " and ".join(small)
        diff = treatment.sum / treatment.n - control.sum / control.n if min(control.n, treatment.n) > 0 else None
        reason = f"No interval or test: the {arms} arm{'s' if len(small) > 1 else ''} need at least two users."
        return MeanDiff(diff=diff, diff_ci=None, t=None, df=None, p_value=None, reason=reason)
    a, b = _arm_stat(control, MEAN), _arm_stat(treatment, MEAN)
    diff = b.mean - a.mean
    se2 = a.variance / a.n + b.variance / b.n
    if se2 <= 0:
        reason = "No interval or test: every user in each arm has the same value, so there is no variation."
        return MeanDiff(diff=_finite(diff), diff_ci=None, t=None, df=None, p_value=None, reason=reason)
    df = _welch_df(a, b)
    t_stat, p_value, ci = _two_sided_t(diff, math.sqrt(se2), df, alpha)
    return MeanDiff(diff=_finite(diff), diff_ci=ci, t=_finite(t_stat), df=_finite(df), p_value=_finite(p_value))


def ratio_summary(s: RatioSums) -> ArmSummary:
    """An arm's ratio Σm/Σd with its delta-method variance (per user) and sd; None with a reason when undefined."""
    if s.n <= 0:
        return ArmSummary(mean=None, sd=None, variance=None, reason="No users in this arm yet.")
    stat = _ratio_stat(s)
    if stat.undefined:
        return ArmSummary(mean=None, sd=None, variance=None, reason=stat.undefined)
    variance = max(0.0, stat.variance)
    return ArmSummary(mean=_finite(stat.mean), sd=_finite(math.sqrt(variance)), variance=_finite(variance))


def ratio_diff(*, control: RatioSums, treatment: RatioSums, alpha: float) -> MeanDiff:
    """Treatment ratio minus control ratio: gbstats TwoSidedTTest (absolute) on RatioStatistic, Welch df."""
    _check(alpha=alpha)
    a, b = _ratio_stat(control), _ratio_stat(treatment)
    for name, arm in (("control", a), ("treatment", b)):
        if arm.undefined:
            return MeanDiff(None, None, None, None, None, arm.undefined.replace("this arm", f"the {name} arm"))
    small = [name for name, arm in (("control", a), ("treatment", b)) if arm.n < 2]
    if small:
        arms = f"{' and '.join(small)} arm{'s' if len(small) > 1 else ''}"
        reason = f"No interval or test: the {arms} need at least two users."
        return MeanDiff(diff=_finite(b.mean - a.mean), diff_ci=None, t=None, df=None, p_value=None, reason=reason)
    diff = b.mean - a.mean
    if a.variance <= 0 or b.variance <= 0:
        reason = "No interval or test: a ratio's delta-method variance is 0 in an arm, so there is no variation."
        return MeanDiff(diff=_finite(diff), diff_ci=None, t=None, df=None, p_value=None, reason=reason)
    se2 = a.variance / a.n + b.variance / b.n
    df = _welch_df(a, b)
    t_stat, p_value, ci = _two_sided_t(diff, math.sqrt(se2), df, alpha)
    return MeanDiff(diff=_finite(diff), diff_ci=ci, t=_finite(t_stat), df=_finite(df), p_value=_finite(p_value))


def _delta_variance(a: _ArmStat, b: _ArmStat) -> float:
    """gbstats frequentist_variance(relative=True): Var((μB − μA)/μA) by the delta method."""
    mu_a, mu_b = a.unadjusted_mean, b.unadjusted_mean
    return b.variance / (mu_a**2 * b.n) + a.variance * mu_b**2 / (mu_a**4 * a.n)


def _relative_estimate(a: _ArmStat, b: _ArmStat) -> tuple[_Estimate | None, str]:
    """The relative lift, its delta-method variance and Welch df; (None, reason) when undefined."""
    for name, arm in (("control", a), ("treatment", b)):
        if arm.undefined:
            return None, arm.undefined.replace("this arm", f"the {name} arm")
    if a.n <= 0:
        return None, NO_USERS_CONTROL
    if b.n <= 0:
        return None, NO_USERS_TREATMENT
    if a.mean == 0 or a.unadjusted_mean == 0:
        return None, CONTROL_MEAN_ZERO
    flat = [name for name, arm in (("control", a), ("treatment", b)) if arm.variance <= 0]
    if flat:
        arms = " and ".join(flat)
        return None, (
            f"No variation in the {arms} arm{'s' if len(flat) > 1 else ''} (one user, or every user has the same "
            "value), so the uncertainty of the lift cannot be estimated."
        )
    lift = (b.mean - a.mean) / a.unadjusted_mean
    variance = _delta_variance(a, b)
    if not variance > 0 or math.isinf(variance):
        return None, "The variance of the lift is not a positive finite number."
    return _Estimate(lift=lift, variance=variance, df=_welch_df(a, b)), ""


def relative_lift(*, control: SampleSums, treatment: SampleSums, kind: str, alpha: float) -> RelativeLift:
    """(μB − μA)/μA with a delta-method Student-t interval (Welch df) and two-sided p-value (gbstats TTest)."""
    _check(kind=kind, alpha=alpha, sums=control)
    est, reason = _relative_estimate(_arm_stat(control, kind), _arm_stat(treatment, kind))
    if est is None:
        return RelativeLift(rel_lift=None, rel_lift_ci=None, variance=None, df=None, reason=reason)
    _, p_value, ci = _two_sided_t(est.lift, math.sqrt(est.variance), est.df, alpha)
    return RelativeLift(
        rel_lift=_finite(est.lift),
        rel_lift_ci=ci,
        variance=_finite(est.variance),
        df=_finite(est.df),
        p_value=_finite(p_value),
    )


def _sequential_rho_squared(alpha: float, tuning: float) -> float:
    """Waudby-Smith et al. (2023) eq. 161, as gbstats SequentialTwoSidedTTest.rho (squared)."""
    return (-2.0 * math.log(alpha) + math.log(1.0 - 2.0 * math.log(alpha))) / tuning


def sequential_lift(
    *, control: SampleSums, treatment: SampleSums, kind: str, alpha: float, tuning: float = SEQUENTIAL_TUNING
) -> Sequential:
    """Always-valid interval and p-value for the relative lift (asymptotic confidence sequence)."""
    _check(kind=kind, alpha=alpha, sums=control)
    if not tuning > 0:
        raise ValueError(f"tuning must be positive, got {tuning!r}")
    est, reason = _relative_estimate(_arm_stat(control, kind), _arm_stat(treatment, kind))
    if est is None:
        return Sequential(rel_lift_ci=None, p_value=None, reason=reason)
    n_total = int(control.n) + int(treatment.n)
    rho2 = _sequential_rho_squared(alpha, tuning)
    nr = n_total * rho2 + 1.0
    half = math.sqrt(est.variance * n_total) * math.sqrt(
        2.0 * nr * math.log(math.sqrt(nr) / alpha) / (n_total**2 * rho2)
    )
    # e-value in logs: exp(ρ²·s/(2(Nρ² + 1))) / √(Nρ² + 1) overflows for large s; p = min(1, 1/e).
    s = est.lift**2 * n_total / est.variance
    log_e = rho2 * s / (2.0 * nr) - 0.5 * math.log(nr)
    p_value = 1.0 if log_e <= 0 else math.exp(-log_e)
    return Sequential(
        rel_lift_ci=Interval(_finite(est.lift - half), _finite(est.lift + half)), p_value=_finite(p_value)
    )


def _posterior(est: _Estimate, prior_sd: float | None) -> tuple[float, float]:
    """Normal posterior of the relative lift (gbstats EffectBayesianABTest; prior N(0, prior_sd²) if proper)."""
    if prior_sd is None:
        return est.lift, math.sqrt(est.variance)
    precision = 1.0 / est.variance + 1.0 / prior_sd**2
    return (est.lift / est.variance) / precision, math.sqrt(1.0 / precision)


def _expected_loss(mean: float, sd: float, direction: str) -> float:
    """E[loss of shipping B] = P(worse)·E[|lift| | worse], closed form for a normal posterior."""
    z = mean / sd
    pdf = float(sps.norm.pdf(z))
    if direction == INCREASE:  # worse = lift < 0: −E[X; X < 0]
        loss = sd * pdf - mean * float(sps.norm.sf(z))
    else:  # worse = lift > 0: E[X; X > 0]
        loss = sd * pdf + mean * float(sps.norm.cdf(z))
    return max(0.0, loss)  # cancellation far in the tail can leave a tiny negative number


def bayes_lift(
    *,
    control: SampleSums,
    treatment: SampleSums,
    kind: str,
    direction: str,
    alpha: float,
    prior_sd: float | None = None,
) -> Bayes:
    """Chance to beat control, expected loss and credible interval of the relative lift (Gaussian model)."""
    _check(kind=kind, alpha=alpha, direction=direction, sums=control)
    if prior_sd is not None and not prior_sd > 0:
        raise ValueError(f"prior_sd must be positive or None, got {prior_sd!r}")
    est, reason = _relative_estimate(_arm_stat(control, kind), _arm_stat(treatment, kind))
    if est is None:
        return Bayes(chance_to_beat=None, expected_loss=None, rel_lift_ci=None, reason=reason)
    mean, sd = _posterior(est, prior_sd)
    z = mean / sd
    chance = float(sps.norm.cdf(z)) if direction == INCREASE else float(sps.norm.sf(z))
    low, high = (float(sps.norm.ppf(q, loc=mean, scale=sd)) for q in (alpha / 2.0, 1.0 - alpha / 2.0))
    return Bayes(
        chance_to_beat=_finite(chance),
        expected_loss=_finite(_expected_loss(mean, sd, direction)),
        rel_lift_ci=Interval(_finite(low), _finite(high)),
        posterior_mean=_finite(mean),
        posterior_sd=_finite(sd),
    )


def _covariance(n: int, sum_x: float, sum_y: float, sum_xy: float) -> float:
    """Sample covariance (n − 1), 0 for n ≤ 1 (gbstats RegressionAdjustedStatistic.covariance)."""
    if n <= 1:
        return 0.0
    return (sum_xy - sum_x * sum_y / n) / (n - 1)


def _theta(control: SampleSums, treatment: SampleSums, kind: str) -> float:
    """gbstats compute_theta: cov(Y, X)/var(X) over both arms pooled; 0 when either has no variance."""
    pooled = SampleSums(
        n=control.n + treatment.n,
        sum=control.sum + treatment.sum,
        sum_squares=control.sum_squares + treatment.sum_squares,
    )
    var_y = _arm_variance(pooled, kind)
    var_x = _sample_variance(
        pooled.n, control.cov_sum + treatment.cov_sum, control.cov_sum_squares + treatment.cov_sum_squares
    )
    if var_x == 0 or var_y == 0:
        return 0.0
    cov = _covariance(
        pooled.n,
        control.cov_sum + treatment.cov_sum,
        pooled.sum,
        control.sum_products + treatment.sum_products,
    )
    return cov / var_x


def _adjusted_stat(s: SampleSums, kind: str, theta: float) -> _ArmStat:
    """gbstats RegressionAdjustedStatistic: mean Ȳ − θX̄, variance σY² + θ²σX² − 2θσXY (0 for n ≤ 1)."""
    base = _arm_stat(s, kind)
    if s.n <= 1:
        return _ArmStat(n=s.n, mean=base.mean, unadjusted_mean=base.mean, variance=0.0)
    var_x = _sample_variance(s.n, s.cov_sum, s.cov_sum_squares)
    cov = _covariance(s.n, s.cov_sum, s.sum, s.sum_products)
    variance = base.variance + theta**2 * var_x - 2.0 * theta * cov
    return _ArmStat(n=s.n, mean=base.mean - theta * s.cov_sum / s.n, unadjusted_mean=base.mean, variance=variance)


def cuped_lift(*, control: SampleSums, treatment: SampleSums, kind: str, alpha: float) -> Cuped | None:
    """CUPED (regression-adjusted) relative lift; None when no covariate was sent for either arm."""
    _check(kind=kind, alpha=alpha)
    if not (control.has_covariate or treatment.has_covariate):
        return None
    control, treatment = _as_floats(control), _as_floats(treatment)
    if control.n <= 0 or treatment.n <= 0:
        reason = NO_USERS_CONTROL if control.n <= 0 else NO_USERS_TREATMENT
        return Cuped(theta=0.0, rel_lift=None, rel_lift_ci=None, p_value=None, variance_reduction=None, reason=reason)
    theta = _theta(control, treatment, kind)
    est, reason = _relative_estimate(_adjusted_stat(control, kind, theta), _adjusted_stat(treatment, kind, theta))
    if est is None:
        return Cuped(
            theta=_finite(theta), rel_lift=None, rel_lift_ci=None, p_value=None, variance_reduction=None, reason=reason
        )
    _, p_value, ci = _two_sided_t(est.lift, math.sqrt(est.variance), est.df, alpha)
    unadjusted, _ = _relative_estimate(_arm_stat(control, kind), _arm_stat(treatment, kind))
    reduction = None if unadjusted is None else _finite(1.0 - est.variance / unadjusted.variance)
    return Cuped(
        theta=_finite(theta),
        rel_lift=_finite(est.lift),
        rel_lift_ci=ci,
        p_value=_finite(p_value),
        variance_reduction=reduction,
        reason="" if reduction is not None else "No variance reduction: the unadjusted lift has no variance estimate.",
    )


def holm_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm step-down adjusted p-values over the family of non-None entries (None stays None)."""
    present = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(present)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(present):
        running = max(running, min(1.0, (m - rank) * float(p)))
        adjusted[index] = running
    return adjusted


def outcome(*, p_value: float | None, effect: float | None, alpha: float, direction: str) -> str:
    """'better' / 'worse' when p < alpha (sign of the effect read through the direction), else 'inconclusive'."""
    _check(alpha=alpha, direction=direction)
    if p_value is None or effect is None or p_value >= alpha or effect == 0:
        return INCONCLUSIVE
    improves = effect > 0 if direction == INCREASE else effect < 0
    return BETTER if improves else WORSE


def _effect_size(
    *,
    kind: str,
    mde: float,
    baseline_rate: float | None,
    baseline_mean: float | None,
    baseline_sd: float | None,
) -> tuple[float | None, str]:
    """Standardised effect for the power solver: Cohen's h (binary) or mde·μ0/σ0 (mean); (None, reason)."""
    if kind == BINARY:
        if baseline_rate is None or not 0.0 < baseline_rate < 1.0:
            return None, "A baseline conversion rate strictly between 0 and 1 is needed."
        target = baseline_rate * (1.0 + mde)
        if not 0.0 <= target <= 1.0:
            return None, "The baseline rate with the minimum detectable effect is not a rate between 0 and 1."
        effect = float(proportion_effectsize(target, baseline_rate))
    else:
        if baseline_mean is None or baseline_sd is None or not baseline_sd > 0:
            return None, "A baseline mean and a positive baseline standard deviation are needed."
        effect = mde * baseline_mean / baseline_sd
    if effect == 0 or not math.isfinite(effect):
        return None, "The minimum detectable effect is zero, so no sample size can detect it."
    return abs(effect), ""


@functools.lru_cache(maxsize=4096)
def _solve_users(effect: float, *, alpha: float, power: float, ratio: float) -> int:
    """statsmodels' NormalIndPower root-find, memoised on its four inputs (issue 17: the list solved it per row
    per request, ~60% of the page). A pure function of hashable floats, so the cache can never go stale; 4,096
    distinct plans per process is far more than a program runs."""
    nobs1 = NormalIndPower().solve_power(
        effect_size=effect, nobs1=None, alpha=alpha, power=power, ratio=ratio, alternative="two-sided"
    )
    return math.ceil(np.asarray(nobs1).item())


def users_per_arm(
    *,
    kind: str,
    alpha: float,
    power: float,
    mde: float,
    baseline_rate: float | None = None,
    baseline_mean: float | None = None,
    baseline_sd: float | None = None,
    ratio: float = 1.0,
) -> int | None:
    """Users needed in the control arm (the treatment arm needs ratio × that), two-sided z-test power."""
    _check(kind=kind, alpha=alpha)
    if not 0.0 < power < 1.0 or not ratio > 0:
        raise ValueError(f"power must be in (0, 1) and ratio positive, got {power!r}, {ratio!r}")
    effect, _ = _effect_size(
        kind=kind, mde=mde, baseline_rate=baseline_rate, baseline_mean=baseline_mean, baseline_sd=baseline_sd
    )
    if effect is None:
        return None
    return _solve_users(effect, alpha=alpha, power=power, ratio=ratio)


def _plan_weights(weights: Sequence[float], control_index: int) -> str:
    if len(weights) < 2:
        return "Needs a control and at least one treatment."
    if not 0 <= control_index < len(weights):
        return "The control arm is not among the weights."
    if any(not w > 0 for w in weights):
        return "Every variant needs a positive weight."
    return ""


def power_plan(
    *,
    kind: str,
    alpha: float,
    power: float,
    mde: float,
    weights: Sequence[int],
    control_index: int,
    baseline_rate: float | None = None,
    baseline_mean: float | None = None,
    baseline_sd: float | None = None,
    expected_daily_users: int | None = None,
) -> PowerPlan:
    """Control-arm size for the primary metric (largest over treatments), total users and expected days.

    Arm i gets users_per_arm × w_i / w_control users; total = ceil(users_per_arm × Σw / w_control);
    days = ceil(users_per_arm × Σw / (w_control × expected_daily_users)), exact rational arithmetic.
    """
    _check(kind=kind, alpha=alpha)
    reason = _plan_weights(weights, control_index)
    effect, effect_reason = _effect_size(
        kind=kind, mde=mde, baseline_rate=baseline_rate, baseline_mean=baseline_mean, baseline_sd=baseline_sd
    )
    if reason or effect is None:
        return PowerPlan(users_per_arm=None, expected_days=None, reason=reason or effect_reason)
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must be in (0, 1), got {power!r}")
    w_control = Fraction(weights[control_index])
    needed = max(
        _solve_users(effect, alpha=alpha, power=power, ratio=float(Fraction(w) / w_control))
        for i, w in enumerate(weights)
        if i != control_index
    )
    total = needed * sum(Fraction(w) for w in weights) / w_control
    if expected_daily_users is None or expected_daily_users <= 0:
        return PowerPlan(
            users_per_arm=needed,
            expected_days=None,
            reason="No positive expected number of daily users, so no duration.",
            total_users=math.ceil(total),
        )
    days = math.ceil(total / expected_daily_users)
    return PowerPlan(users_per_arm=needed, expected_days=days, total_users=math.ceil(total))
