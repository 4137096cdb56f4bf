"""Pure readout statistics: frozen dataclasses in and out, no Django imports, no raising on zeros.

Every function returns ``None`` for a quantity that is undefined, together with a plain-language
``reason`` saying why. Definitions are in docs/metrics.md ("Readout statistics").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as sps
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint, proportions_ztest

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
