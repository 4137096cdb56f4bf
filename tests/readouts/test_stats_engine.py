"""readouts.stats engine (issue 8) against independent computations.

Randomized per-user data (seeded numpy) is reduced to SampleSums; every statistic is checked against
scipy/statsmodels on the raw arrays or a textbook re-implementation written here from raw arrays.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from readouts import stats
from readouts.stats import BINARY, DECREASE, INCREASE, MEAN, SampleSums

SEEDS = range(20)


def sums(y: np.ndarray, x: np.ndarray | None = None) -> SampleSums:
    """SampleSums of per-user values y (and covariate x), as the SQL would produce them."""
    if x is None:
        return SampleSums(n=len(y), sum=float(y.sum()), sum_squares=float((y * y).sum()))
    return SampleSums(
        n=len(y),
        sum=float(y.sum()),
        sum_squares=float((y * y).sum()),
        cov_sum=float(x.sum()),
        cov_sum_squares=float((x * x).sum()),
        sum_products=float((x * y).sum()),
        has_covariate=True,
    )


def mean_arms(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_a, n_b = rng.integers(20, 400, size=2)
    a = rng.lognormal(mean=1.0, sigma=rng.uniform(0.3, 1.2), size=n_a)
    b = rng.lognormal(mean=1.0 + rng.normal(0, 0.15), sigma=rng.uniform(0.3, 1.2), size=n_b)
    return a, b


def binary_arms(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1000 + seed)
    n_a, n_b = rng.integers(200, 5000, size=2)
    p = rng.uniform(0.03, 0.6)
    a = (rng.random(n_a) < p).astype(float)
    b = (rng.random(n_b) < p * (1 + rng.normal(0, 0.2))).astype(float)
    return a, b


def t_crit(alpha: float, df: float) -> float:
    return float(sps.t.ppf(1 - alpha / 2, df))


# --- arm_summary ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_arm_summary__mean_metric__matches_numpy_sample_variance(seed):
    # Given per-user values of one arm
    y, _ = mean_arms(seed)
    # When summarised from their sums
    result = stats.arm_summary(sums(y), kind=MEAN)
    # Then mean, variance (n − 1) and sd match numpy on the raw values
    assert result.mean == pytest.approx(y.mean(), rel=1e-12)
    assert result.variance == pytest.approx(y.var(ddof=1), rel=1e-9)
    assert result.sd == pytest.approx(y.std(ddof=1), rel=1e-9)
    assert result.reason == ""


def test_arm_summary__binary_metric__uses_rate_times_one_minus_rate():
    # Given 30 converters out of 120 users
    s = SampleSums(n=120, sum=30, sum_squares=30)
    # When summarised as a binary metric
    result = stats.arm_summary(s, kind=BINARY)
    # Then variance is p(1 − p) (population form, as gbstats ProportionStatistic)
    assert result.mean == 0.25
    assert result.variance == pytest.approx(0.25 * 0.75)
    assert result.sd == pytest.approx(math.sqrt(0.1875))


def test_arm_summary__empty_arm__returns_none_with_reason():
    # Given an arm without users
    s = SampleSums(n=0, sum=0.0, sum_squares=0.0)
    # When summarised
    result = stats.arm_summary(s, kind=MEAN)
    # Then nothing is defined, and the reason says why
    assert (result.mean, result.sd, result.variance) == (None, None, None)
    assert "No users" in result.reason


def test_arm_summary__single_user__variance_zero_with_reason():
    # Given one user with value 7
    s = SampleSums(n=1, sum=7.0, sum_squares=49.0)
    # When summarised
    result = stats.arm_summary(s, kind=MEAN)
    # Then the mean is the value, the variance is 0 by gbstats' convention, and the reason says so
    assert result.mean == 7.0
    assert result.variance == 0.0 and result.sd == 0.0
    assert "one user" in result.reason


def test_arm_summary__identical_values__variance_exactly_zero():
    # Given ten users who all spent 0.1 (the sums carry rounding noise)
    y = np.full(10, 0.1)
    # When summarised
    result = stats.arm_summary(sums(y), kind=MEAN)
    # Then the rounding noise is not reported as spread
    assert result.variance == 0.0


def test_arm_summary__unknown_kind__raises_value_error():
    # Given / When / Then a configuration error (not a data condition) raises
    with pytest.raises(ValueError, match="kind"):
        stats.arm_summary(SampleSums(n=1, sum=1, sum_squares=1), kind="ratio")


# --- welch_diff ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_welch_diff__random_data__matches_scipy_ttest_ind_and_textbook_interval(seed, alpha):
    # Given raw per-user values of two arms
    a, b = mean_arms(seed)
    # When the Welch difference is computed from their sums
    result = stats.welch_diff(control=sums(a), treatment=sums(b), alpha=alpha)
    # Then t and p match scipy's Welch test on the raw arrays
    ref = sps.ttest_ind(b, a, equal_var=False)
    assert result.t == pytest.approx(ref.statistic, rel=1e-9)
    assert result.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    # And the interval matches the textbook Welch interval
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_crit(alpha, df) * math.sqrt(va + vb)
    diff = b.mean() - a.mean()
    assert result.diff == pytest.approx(diff, rel=1e-9)
    assert result.df == pytest.approx(df, rel=1e-9)
    assert result.diff_ci.low == pytest.approx(diff - half, rel=1e-9)
    assert result.diff_ci.high == pytest.approx(diff + half, rel=1e-9)
    assert isinstance(result.p_value, float) and type(result.diff_ci.low) is float


def test_welch_diff__confidence_interval_from_scipy__agrees():
    # Given one fixed data set
    a, b = mean_arms(3)
    # When computed
    result = stats.welch_diff(control=sums(a), treatment=sums(b), alpha=0.05)
    # Then scipy's own Welch interval (difference b − a) agrees
    ci = sps.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    assert result.diff_ci.as_list() == pytest.approx([ci.low, ci.high], rel=1e-9)


def test_welch_diff__zero_variance_in_both_arms__diff_without_test():
    # Given every user in each arm with the same value
    control, treatment = sums(np.full(10, 2.0)), sums(np.full(12, 3.0))
    # When compared
    result = stats.welch_diff(control=control, treatment=treatment, alpha=0.05)
    # Then the difference is reported, but no interval or test, with the reason
    assert result.diff == pytest.approx(1.0)
    assert result.diff_ci is None and result.p_value is None and result.t is None
    assert "no variation" in result.reason


@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")  # scipy, on the constant arm
def test_welch_diff__zero_variance_in_one_arm__matches_scipy():
    # Given a constant control arm and a varying treatment arm
    a, b = np.full(15, 2.0), mean_arms(5)[1]
    # When compared
    result = stats.welch_diff(control=sums(a), treatment=sums(b), alpha=0.05)
    # Then the test is defined and agrees with scipy (df = n_B − 1)
    ref = sps.ttest_ind(b, a, equal_var=False)
    assert result.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert result.df == pytest.approx(len(b) - 1)


def test_welch_diff__empty_arm__returns_none_with_reason():
    # Given an empty treatment arm
    control, treatment = sums(np.arange(5.0)), SampleSums(n=0, sum=0.0, sum_squares=0.0)
    # When compared
    result = stats.welch_diff(control=control, treatment=treatment, alpha=0.05)
    # Then nothing is defined
    assert result.diff is None and result.p_value is None and result.diff_ci is None
    assert "treatment arm" in result.reason


def test_welch_diff__single_user_arm__diff_but_no_test():
    # Given a control arm with one user
    control, treatment = sums(np.array([4.0])), sums(np.arange(6.0))
    # When compared
    result = stats.welch_diff(control=control, treatment=treatment, alpha=0.05)
    # Then the difference of means is shown but no interval or test
    assert result.diff == pytest.approx(2.5 - 4.0)
    assert result.p_value is None and result.diff_ci is None
    assert "at least two users" in result.reason


def test_welch_diff__p_value_underflow__returns_zero_not_nan():
    # Given two arms that differ by hundreds of standard errors
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 5000), rng.normal(50, 1, 5000)
    # When compared
    result = stats.welch_diff(control=sums(a), treatment=sums(b), alpha=0.05)
    # Then the p-value is a finite 0.0
    assert result.p_value == 0.0
    assert math.isfinite(result.diff_ci.low)


# --- relative_lift -------------------------------------------------------------------------------


def textbook_relative(a: np.ndarray, b: np.ndarray, alpha: float, *, binary: bool) -> dict:
    """Delta-method CI of (mean_b − mean_a)/mean_a from raw arrays, Welch df."""
    ma, mb = a.mean(), b.mean()
    sa2 = ma * (1 - ma) if binary else a.var(ddof=1)
    sb2 = mb * (1 - mb) if binary else b.var(ddof=1)
    na, nb = len(a), len(b)
    gradient = np.array([-mb / ma**2, 1 / ma])  # d/d(ma, mb) of mb/ma − 1
    cov = np.diag([sa2 / na, sb2 / nb])
    v = float(gradient @ cov @ gradient)
    df = (sa2 / na + sb2 / nb) ** 2 / ((sa2 / na) ** 2 / (na - 1) + (sb2 / nb) ** 2 / (nb - 1))
    lift = mb / ma - 1
    half = t_crit(alpha, df) * math.sqrt(v)
    p = 2 * sps.t.sf(abs(lift) / math.sqrt(v), df)
    return {"lift": lift, "v": v, "df": df, "ci": [lift - half, lift + half], "p": p}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", [BINARY, MEAN])
def test_relative_lift__random_data__matches_textbook_delta_method(seed, kind):
    # Given raw per-user values
    a, b = binary_arms(seed) if kind == BINARY else mean_arms(seed)
    # When the relative lift is computed from sums
    result = stats.relative_lift(control=sums(a), treatment=sums(b), kind=kind, alpha=0.05)
    # Then it matches a gradient-form delta method computed from the raw arrays
    ref = textbook_relative(a, b, 0.05, binary=kind == BINARY)
    assert result.rel_lift == pytest.approx(ref["lift"], rel=1e-9)
    assert result.variance == pytest.approx(ref["v"], rel=1e-9)
    assert result.df == pytest.approx(ref["df"], rel=1e-9)
    assert result.rel_lift_ci.as_list() == pytest.approx(ref["ci"], rel=1e-9)
    assert result.p_value == pytest.approx(ref["p"], rel=1e-9)
    assert result.reason == ""


def test_relative_lift__zero_control_mean__returns_none_with_reason():
    # Given a control arm where nobody converted
    control, treatment = SampleSums(n=500, sum=0, sum_squares=0), SampleSums(n=500, sum=8, sum_squares=8)
    # When the relative lift is asked for
    result = stats.relative_lift(control=control, treatment=treatment, kind=BINARY, alpha=0.05)
    # Then it is undefined, with a plain reason
    assert result.rel_lift is None and result.rel_lift_ci is None and result.variance is None
    assert result.reason == stats.CONTROL_MEAN_ZERO


def test_relative_lift__zero_variance_in_both_arms__returns_none_with_reason():
    # Given constant values in both arms
    control, treatment = sums(np.full(20, 2.0)), sums(np.full(20, 3.0))
    # When the relative lift is asked for
    result = stats.relative_lift(control=control, treatment=treatment, kind=MEAN, alpha=0.05)
    # Then it is undefined (as gbstats: no uncertainty estimate), naming both arms
    assert result.rel_lift is None
    assert "control and treatment arms" in result.reason


def test_relative_lift__empty_arm__returns_none_with_reason():
    # Given an empty treatment arm
    control, treatment = SampleSums(n=100, sum=10, sum_squares=10), SampleSums(n=0, sum=0, sum_squares=0)
    # When computed
    result = stats.relative_lift(control=control, treatment=treatment, kind=BINARY, alpha=0.05)
    # Then undefined
    assert result.rel_lift is None and result.reason == stats.NO_USERS_TREATMENT


def test_relative_lift__single_user__returns_none_with_reason():
    # Given a treatment arm with one user
    control, treatment = sums(np.arange(1.0, 9.0)), sums(np.array([5.0]))
    # When computed
    result = stats.relative_lift(control=control, treatment=treatment, kind=MEAN, alpha=0.05)
    # Then undefined: one user carries no spread (gbstats variance 0 for n ≤ 1)
    assert result.rel_lift is None
    assert "one user" in result.reason


def test_relative_lift__p_value_underflow__returns_finite_zero():
    # Given a 10x lift on a million users
    control = SampleSums(n=1_000_000, sum=10_000, sum_squares=10_000)
    treatment = SampleSums(n=1_000_000, sum=100_000, sum_squares=100_000)
    # When computed
    result = stats.relative_lift(control=control, treatment=treatment, kind=BINARY, alpha=0.05)
    # Then the p-value is a finite 0.0, not NaN
    assert result.p_value == 0.0
    assert result.rel_lift == pytest.approx(9.0)


# --- holm_adjust ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_holm_adjust__random_family__matches_statsmodels_multipletests(seed):
    # Given a family of raw p-values (with ties and tiny values)
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 0.2, size=rng.integers(1, 12))
    p[::3] = p[0]
    # When adjusted
    result = stats.holm_adjust(list(p))
    # Then it equals statsmodels' Holm step-down
    assert result == pytest.approx(list(multipletests(p, method="holm")[1]), rel=1e-12)
    assert all(type(x) is float for x in result)


def test_holm_adjust__none_entries__skipped_and_stay_none():
    # Given a family with undefined p-values
    raw = [0.01, None, 0.04, None, 0.03]
    # When adjusted
    result = stats.holm_adjust(raw)
    # Then the family is the three defined values, and the None positions stay None
    expected = multipletests([0.01, 0.04, 0.03], method="holm")[1]
    assert result[1] is None and result[3] is None
    assert [result[0], result[2], result[4]] == pytest.approx(list(expected))


def test_holm_adjust__empty_and_all_none__returned_unchanged():
    # Given / When / Then nothing to adjust
    assert stats.holm_adjust([]) == []
    assert stats.holm_adjust([None, None]) == [None, None]


# --- outcome -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p_value", "effect", "direction", "expected"),
    [
        (0.01, 0.1, INCREASE, "better"),
        (0.01, -0.1, INCREASE, "worse"),
        (0.01, -0.1, DECREASE, "better"),
        (0.01, 0.1, DECREASE, "worse"),
        (0.05, 0.1, INCREASE, "inconclusive"),  # p must be strictly below alpha
        (0.2, -0.1, DECREASE, "inconclusive"),
        (None, 0.1, INCREASE, "inconclusive"),
        (0.01, None, INCREASE, "inconclusive"),
        (0.0, 0.0, INCREASE, "inconclusive"),
    ],
)
def test_outcome__significance_and_direction__classified(p_value, effect, direction, expected):
    # Given a p-value, an effect and the metric's desired direction
    # When classified at alpha 0.05
    result = stats.outcome(p_value=p_value, effect=effect, alpha=0.05, direction=direction)
    # Then better / worse only when significant, read through the direction
    assert result == expected


def test_outcome__unknown_direction__raises_value_error():
    # Given / When / Then a configuration error raises
    with pytest.raises(ValueError, match="direction"):
        stats.outcome(p_value=0.01, effect=0.1, alpha=0.05, direction="up")


# --- gbstats 0.8.0 itself ------------------------------------------------------------------------
# Reference values computed by GrowthBook's gbstats 0.8.0 (tests/readouts/gen_gbstats_reference.py, run in a
# separate venv because gbstats pins numpy<2). gbstats declines (error_message) exactly where we return None.

REFERENCE = json.loads((Path(__file__).parent / "data" / "gbstats_reference.json").read_text())
CASES = REFERENCE["cases"]
IDS = [case["name"] for case in CASES]
CLOSE = {"rel": 1e-9, "abs": 1e-12}  # gbstats' p = 2(1 − cdf) carries ~1e-16 absolute cancellation error


# gbstats' absolute test also declines on a zero control mean or one constant arm, where a difference and a
# Welch test are still defined; welch_diff's own edge-case tests (against scipy) cover those.
WELCH_CASES = [c for c in CASES if c["kind"] == MEAN and not c["gbstats"]["absolute"]["error"]]
CUPED_CASES = [c for c in CASES if "cuped" in c["gbstats"]]


def case_sums(case: dict) -> tuple[SampleSums, SampleSums]:
    return SampleSums(**case["control"]), SampleSums(**case["treatment"])


def test_gbstats_reference__file__generated_by_gbstats_0_8_0():
    # Given / When the committed reference file / Then it names the pinned gbstats version and has edge cases
    assert REFERENCE["gbstats_version"] == "0.8.0"
    assert len(CASES) >= 60 and sum("cuped" in case["gbstats"] for case in CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gbstats_reference__relative_lift__matches_two_sided_ttest(case):
    # Given the sums of one reference case
    control, treatment = case_sums(case)
    ref = case["gbstats"]["relative"]
    # When the relative lift is computed
    result = stats.relative_lift(control=control, treatment=treatment, kind=case["kind"], alpha=case["alpha"])
    # Then it is gbstats' TwoSidedTTest (or None with a reason where gbstats declines)
    if ref["error"]:
        assert result.rel_lift is None and result.p_value is None and result.reason
        return
    assert result.rel_lift == pytest.approx(ref["expected"], **CLOSE)
    assert result.rel_lift_ci.as_list() == pytest.approx(ref["ci"], **CLOSE)
    assert result.p_value == pytest.approx(ref["p_value"], **CLOSE)
    assert result.variance == pytest.approx(ref["stddev"] ** 2, rel=1e-9)
    assert result.df == pytest.approx(ref["dof"], rel=1e-9)


@pytest.mark.parametrize("case", WELCH_CASES, ids=[c["name"] for c in WELCH_CASES])
def test_gbstats_reference__welch_diff__matches_absolute_ttest(case):
    # Given a mean-metric reference case
    control, treatment = case_sums(case)
    ref = case["gbstats"]["absolute"]
    # When the Welch difference is computed
    result = stats.welch_diff(control=control, treatment=treatment, alpha=case["alpha"])
    # Then it is gbstats' absolute TwoSidedTTest
    assert result.diff == pytest.approx(ref["expected"], **CLOSE)
    assert result.diff_ci.as_list() == pytest.approx(ref["ci"], **CLOSE)
    assert result.p_value == pytest.approx(ref["p_value"], **CLOSE)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gbstats_reference__sequential_lift__matches_sequential_two_sided_ttest(case):
    # Given the sums of one reference case and its tuning parameter
    control, treatment = case_sums(case)
    ref = case["gbstats"]["sequential"]
    # When the always-valid interval is computed
    result = stats.sequential_lift(
        control=control, treatment=treatment, kind=case["kind"], alpha=case["alpha"], tuning=case["tuning"]
    )
    # Then it is gbstats' SequentialTwoSidedTTest
    if ref["error"]:
        assert result.rel_lift_ci is None and result.p_value is None and result.reason
        return
    assert result.rel_lift_ci.as_list() == pytest.approx(ref["ci"], **CLOSE)
    assert result.p_value == pytest.approx(ref["p_value"], **CLOSE)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gbstats_reference__bayes_lift__matches_effect_bayesian_ab_test(case):
    # Given the sums of one reference case, its direction and prior
    control, treatment = case_sums(case)
    ref = case["gbstats"]["bayes"]
    # When the Bayesian result is computed
    result = stats.bayes_lift(
        control=control,
        treatment=treatment,
        kind=case["kind"],
        direction=case["direction"],
        alpha=case["alpha"],
        prior_sd=case["prior_sd"],
    )
    # Then it is gbstats' EffectBayesianABTest (chance to win, the treatment's risk, credible interval)
    if ref["error"]:
        assert result.chance_to_beat is None and result.expected_loss is None and result.reason
        return
    assert result.chance_to_beat == pytest.approx(ref["chance_to_win"], **CLOSE)
    assert result.expected_loss == pytest.approx(ref["risk_treatment"], rel=1e-8, abs=1e-12)
    assert result.rel_lift_ci.as_list() == pytest.approx(ref["ci"], **CLOSE)
    assert result.posterior_mean == pytest.approx(ref["mean"], **CLOSE)
    assert result.posterior_sd == pytest.approx(ref["stddev"], **CLOSE)


@pytest.mark.parametrize("case", CUPED_CASES, ids=[c["name"] for c in CUPED_CASES])
def test_gbstats_reference__cuped_lift__matches_regression_adjusted_ttest(case):
    # Given a reference case with a covariate
    control, treatment = case_sums(case)
    ref, unadjusted = case["gbstats"]["cuped"], case["gbstats"]["relative"]
    # When the CUPED lift is computed
    result = stats.cuped_lift(control=control, treatment=treatment, kind=case["kind"], alpha=case["alpha"])
    # Then theta, lift, interval and p are gbstats' RegressionAdjustedStatistic TwoSidedTTest
    assert result.theta == pytest.approx(ref["theta"], **CLOSE)
    assert result.rel_lift == pytest.approx(ref["expected"], **CLOSE)
    assert result.rel_lift_ci.as_list() == pytest.approx(ref["ci"], **CLOSE)
    assert result.p_value == pytest.approx(ref["p_value"], **CLOSE)
    # And the variance reduction is 1 − (adjusted / unadjusted variance of the relative lift)
    expected_reduction = 1 - ref["stddev"] ** 2 / unadjusted["stddev"] ** 2
    assert result.variance_reduction == pytest.approx(expected_reduction, rel=1e-8, abs=1e-12)
