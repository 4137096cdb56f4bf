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
from scipy.integrate import quad
from scipy.stats import norm
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

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


# --- sequential_lift -----------------------------------------------------------------------------


def textbook_sequential(a: np.ndarray, b: np.ndarray, alpha: float, tuning: float, *, binary: bool) -> dict:
    """Waudby-Smith et al. (2023) asymptotic confidence sequence, eq. 9 / 155 / 161, from raw arrays."""
    rel = textbook_relative(a, b, alpha, binary=binary)
    n = len(a) + len(b)
    rho = np.sqrt((-2 * np.log(alpha) + np.log(1 - 2 * np.log(alpha))) / tuning)
    sigma2 = rel["v"] * n  # per-observation variance of the estimator
    width = np.sqrt(sigma2 * 2 * (n * rho**2 + 1) / (n**2 * rho**2) * np.log(np.sqrt(n * rho**2 + 1) / alpha))
    e_value = np.exp(rho**2 * rel["lift"] ** 2 * n / rel["v"] / (2 * (n * rho**2 + 1))) / np.sqrt(n * rho**2 + 1)
    return {"ci": [rel["lift"] - width, rel["lift"] + width], "p": min(1.0, 1 / e_value), "fixed": rel}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", [BINARY, MEAN])
def test_sequential_lift__random_data__matches_confidence_sequence_formula(seed, kind):
    # Given raw per-user values and a tuning parameter
    a, b = binary_arms(seed) if kind == BINARY else mean_arms(seed)
    tuning = [5000, 500, 50_000][seed % 3]
    # When the always-valid result is computed from sums
    result = stats.sequential_lift(control=sums(a), treatment=sums(b), kind=kind, alpha=0.05, tuning=tuning)
    # Then it matches the paper's formulas computed from the raw arrays
    ref = textbook_sequential(a, b, 0.05, tuning, binary=kind == BINARY)
    assert result.rel_lift_ci.as_list() == pytest.approx(ref["ci"], rel=1e-9)
    assert result.p_value == pytest.approx(ref["p"], rel=1e-9, abs=1e-15)
    # And the always-valid interval is wider than the fixed-horizon one
    assert result.rel_lift_ci.low < ref["fixed"]["ci"][0] and result.rel_lift_ci.high > ref["fixed"]["ci"][1]


def test_sequential_lift__default_tuning__is_5000():
    # Given one data set
    a, b = binary_arms(1)
    # When computed with and without the explicit default
    implicit = stats.sequential_lift(control=sums(a), treatment=sums(b), kind=BINARY, alpha=0.05)
    explicit = stats.sequential_lift(control=sums(a), treatment=sums(b), kind=BINARY, alpha=0.05, tuning=5000)
    # Then they agree
    assert implicit == explicit and stats.SEQUENTIAL_TUNING == 5000


def test_sequential_lift__p_value_underflow__returns_finite_zero():
    # Given a 10x lift on a million users per arm (the e-value overflows a float)
    control = SampleSums(n=1_000_000, sum=10_000, sum_squares=10_000)
    treatment = SampleSums(n=1_000_000, sum=100_000, sum_squares=100_000)
    # When computed
    result = stats.sequential_lift(control=control, treatment=treatment, kind=BINARY, alpha=0.05)
    # Then p is a finite 0.0
    assert result.p_value == 0.0


@pytest.mark.parametrize(
    ("control", "treatment", "kind", "reason"),
    [
        (SampleSums(500, 0, 0), SampleSums(500, 8, 8), BINARY, "control mean is 0"),
        (SampleSums(20, 40, 80), SampleSums(20, 60, 180), MEAN, "No variation"),
        (SampleSums(0, 0, 0), SampleSums(10, 3, 3), BINARY, "No users in the control"),
        (SampleSums(10, 3, 3), SampleSums(1, 1, 1), BINARY, "No variation in the treatment"),
    ],
    ids=["zero_control_mean", "zero_variance_both", "empty_control", "single_user"],
)
def test_sequential_and_bayes__undefined_inputs__return_none_with_reason(control, treatment, kind, reason):
    # Given inputs where the relative lift or its variance is undefined
    # When the sequential and Bayesian results are computed
    seq = stats.sequential_lift(control=control, treatment=treatment, kind=kind, alpha=0.05)
    bayes = stats.bayes_lift(control=control, treatment=treatment, kind=kind, direction=INCREASE, alpha=0.05)
    # Then both are None with the plain-language reason
    assert seq.rel_lift_ci is None and seq.p_value is None and reason in seq.reason
    assert bayes.chance_to_beat is None and bayes.expected_loss is None and reason in bayes.reason


# --- bayes_lift ----------------------------------------------------------------------------------


def integrated_loss(mean: float, sd: float, direction: str) -> float:
    """E[|lift|; lift on the wrong side], by numerical integration of the normal density."""
    density = sps.norm(mean, sd).pdf
    if direction == INCREASE:
        return quad(lambda x: -x * density(x), mean - 40 * sd, min(0.0, mean + 40 * sd))[0]
    return quad(lambda x: x * density(x), max(0.0, mean - 40 * sd), mean + 40 * sd)[0]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("direction", [INCREASE, DECREASE])
def test_bayes_lift__flat_prior__gaussian_posterior_on_relative_lift(seed, direction):
    # Given raw per-user values
    a, b = binary_arms(seed)
    # When the Bayesian result is computed with the default flat prior
    result = stats.bayes_lift(control=sums(a), treatment=sums(b), kind=BINARY, direction=direction, alpha=0.1)
    # Then the posterior is N(lift, V) from the delta method
    ref = textbook_relative(a, b, 0.1, binary=True)
    mean, sd = ref["lift"], math.sqrt(ref["v"])
    assert (result.posterior_mean, result.posterior_sd) == pytest.approx((mean, sd), rel=1e-9)
    # And the chance to beat control is the posterior mass on the good side
    good = sps.norm(mean, sd).sf(0) if direction == INCREASE else sps.norm(mean, sd).cdf(0)
    assert result.chance_to_beat == pytest.approx(good, rel=1e-9)
    # And the expected loss is the integral of |lift| over the bad side
    assert result.expected_loss == pytest.approx(integrated_loss(mean, sd, direction), rel=1e-6, abs=1e-12)
    # And the credible interval holds the central 90%
    assert result.rel_lift_ci.as_list() == pytest.approx(list(sps.norm(mean, sd).ppf([0.05, 0.95])), rel=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_bayes_lift__proper_prior__conjugate_normal_update(seed):
    # Given raw per-user values and a N(0, 0.05²) prior on the relative lift
    a, b = mean_arms(seed)
    prior_var = 0.05**2
    # When computed
    result = stats.bayes_lift(
        control=sums(a), treatment=sums(b), kind=MEAN, direction=INCREASE, alpha=0.05, prior_sd=0.05
    )
    # Then the posterior is the textbook shrinkage of the estimate towards 0
    ref = textbook_relative(a, b, 0.05, binary=False)
    shrink = prior_var / (prior_var + ref["v"])
    assert result.posterior_mean == pytest.approx(shrink * ref["lift"], rel=1e-9)
    assert result.posterior_sd == pytest.approx(math.sqrt(ref["v"] * prior_var / (ref["v"] + prior_var)), rel=1e-9)
    assert abs(result.posterior_mean) <= abs(ref["lift"])


def test_bayes_lift__far_tail__loss_not_negative_and_chance_one():
    # Given a lift hundreds of standard errors above zero
    control = SampleSums(n=1_000_000, sum=10_000, sum_squares=10_000)
    treatment = SampleSums(n=1_000_000, sum=100_000, sum_squares=100_000)
    # When computed
    result = stats.bayes_lift(control=control, treatment=treatment, kind=BINARY, direction=INCREASE, alpha=0.05)
    # Then the chance is 1 and the loss a finite non-negative (zero) number
    assert result.chance_to_beat == 1.0
    assert result.expected_loss == 0.0


def test_bayes_lift__non_positive_prior_sd__raises_value_error():
    # Given / When / Then a configuration error raises
    a, b = binary_arms(0)
    with pytest.raises(ValueError, match="prior_sd"):
        stats.bayes_lift(control=sums(a), treatment=sums(b), kind=BINARY, direction=INCREASE, alpha=0.05, prior_sd=0)


# --- cuped_lift ----------------------------------------------------------------------------------


def covariate_arms(seed: int, *, binary: bool) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(2000 + seed)
    arms = []
    for lift in (0.0, rng.normal(0, 0.05)):
        n = int(rng.integers(300, 3000))
        x = rng.gamma(2.0, 5.0, size=n)
        if binary:
            y = (rng.random(n) < np.clip(0.02 + 0.012 * x * (1 + lift), 0, 1)).astype(float)
        else:
            y = (3.0 + 0.8 * x) * (1 + lift) + rng.normal(0, 3.0, size=n)
        x = np.where(rng.random(n) < 0.1, 0.0, x)  # users without a pre-exposure value send 0
        arms.append((y, x))
    return arms[0], arms[1]


def textbook_cuped(control, treatment, alpha: float, *, binary: bool) -> dict:
    """Regression adjustment from raw arrays: pooled OLS slope, per-user adjusted values, delta method."""
    (ya, xa), (yb, xb) = control, treatment
    theta = np.polyfit(np.r_[xa, xb], np.r_[ya, yb], 1)[0]  # pooled least-squares slope of Y on X
    adj_a, adj_b = ya - theta * xa, yb - theta * xb

    def adjusted_variance(y, adj):
        # var(Y − θX) with n − 1; for a binary Y gbstats uses p(1 − p) instead of var(Y, ddof=1)
        return adj.var(ddof=1) - y.var(ddof=1) + (y.mean() * (1 - y.mean()) if binary else y.var(ddof=1))

    va, vb = adjusted_variance(ya, adj_a), adjusted_variance(yb, adj_b)
    mu_a, mu_b = ya.mean(), yb.mean()  # unadjusted means in the delta method
    lift = (adj_b.mean() - adj_a.mean()) / mu_a
    v = vb / (len(yb) * mu_a**2) + va * mu_b**2 / (len(ya) * mu_a**4)
    df = (va / len(ya) + vb / len(yb)) ** 2 / (
        (va / len(ya)) ** 2 / (len(ya) - 1) + (vb / len(yb)) ** 2 / (len(yb) - 1)
    )
    half = t_crit(alpha, df) * math.sqrt(v)
    unadjusted = textbook_relative(ya, yb, alpha, binary=binary)
    return {
        "theta": theta,
        "lift": lift,
        "ci": [lift - half, lift + half],
        "p": 2 * sps.t.sf(abs(lift) / math.sqrt(v), df),
        "reduction": 1 - v / unadjusted["v"],
    }


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", [BINARY, MEAN])
def test_cuped_lift__random_data__matches_regression_adjustment_from_raw_values(seed, kind):
    # Given per-user outcomes Y and pre-exposure covariates X
    control, treatment = covariate_arms(seed, binary=kind == BINARY)
    # When the CUPED lift is computed from sums
    result = stats.cuped_lift(control=sums(*control), treatment=sums(*treatment), kind=kind, alpha=0.05)
    # Then it matches the regression adjustment computed from raw arrays
    ref = textbook_cuped(control, treatment, 0.05, binary=kind == BINARY)
    assert result.theta == pytest.approx(ref["theta"], rel=1e-8)
    assert result.rel_lift == pytest.approx(ref["lift"], rel=1e-8, abs=1e-12)
    assert result.rel_lift_ci.as_list() == pytest.approx(ref["ci"], rel=1e-8)
    assert result.p_value == pytest.approx(ref["p"], rel=1e-7, abs=1e-12)
    assert result.variance_reduction == pytest.approx(ref["reduction"], rel=1e-8)


def test_cuped_lift__strongly_correlated_covariate__reduces_variance_by_about_rho_squared():
    # Given a covariate with correlation about 0.9 with the outcome
    rng = np.random.default_rng(7)
    arms = []
    for shift in (0.0, 0.3):
        x = rng.normal(10, 2, 20_000)
        arms.append((x + shift + rng.normal(0, 2 * math.sqrt(1 / 0.81 - 1), 20_000), x))
    # When adjusted
    result = stats.cuped_lift(control=sums(*arms[0]), treatment=sums(*arms[1]), kind=MEAN, alpha=0.05)
    # Then the variance of the lift shrinks by about ρ² = 0.81, and the lift stays near 0.3/10
    assert result.variance_reduction == pytest.approx(0.81, abs=0.02)
    assert result.rel_lift == pytest.approx(0.03, abs=0.003)


def test_cuped_lift__no_covariates__returns_none():
    # Given sums without any covariate
    a, b = mean_arms(0)
    # When CUPED is asked for
    result = stats.cuped_lift(control=sums(a), treatment=sums(b), kind=MEAN, alpha=0.05)
    # Then there is no CUPED result at all
    assert result is None


def test_cuped_lift__covariate_without_variance__theta_zero_equals_unadjusted():
    # Given covariates sent but all zero (no user had a pre-exposure value)
    a, b = mean_arms(4)
    control, treatment = sums(a, np.zeros_like(a)), sums(b, np.zeros_like(b))
    # When adjusted
    result = stats.cuped_lift(control=control, treatment=treatment, kind=MEAN, alpha=0.05)
    # Then theta is 0 (gbstats falls back to the unadjusted test) and nothing changes
    plain = stats.relative_lift(control=control, treatment=treatment, kind=MEAN, alpha=0.05)
    assert result.theta == 0.0
    assert result.rel_lift == plain.rel_lift and result.p_value == plain.p_value
    assert result.variance_reduction == 0.0


@pytest.mark.parametrize(
    ("control", "treatment", "reason"),
    [
        (SampleSums(0, 0, 0, has_covariate=True), SampleSums(5, 3, 3, 10, 30, 6, True), "No users in the control"),
        (SampleSums(5, 0, 0, 10, 30, 0, True), SampleSums(5, 3, 3, 10, 30, 6, True), "control mean is 0"),
        (SampleSums(1, 1, 1, 2, 4, 2, True), SampleSums(5, 3, 3, 10, 30, 6, True), "No variation in the control"),
    ],
    ids=["empty_control", "zero_control_mean", "single_user"],
)
def test_cuped_lift__undefined_inputs__return_none_fields_with_reason(control, treatment, reason):
    # Given covariate sums where the adjusted lift is undefined
    # When adjusted
    result = stats.cuped_lift(control=control, treatment=treatment, kind=BINARY, alpha=0.05)
    # Then the result exists (covariates were sent) but its numbers are None, with the reason
    assert result is not None
    assert result.rel_lift is None and result.p_value is None and result.variance_reduction is None
    assert reason in result.reason
    assert math.isfinite(result.theta)


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


# --- power ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "kwargs"),
    [
        (BINARY, {"baseline_rate": 0.1, "mde": 0.1}),
        (BINARY, {"baseline_rate": 0.4, "mde": -0.05}),
        (BINARY, {"baseline_rate": 0.02, "mde": 0.25}),
        (MEAN, {"baseline_mean": 50.0, "baseline_sd": 80.0, "mde": 0.05}),
        (MEAN, {"baseline_mean": 3.0, "baseline_sd": 1.0, "mde": -0.02}),
    ],
)
@pytest.mark.parametrize("ratio", [1.0, 2.0, 0.5])
def test_users_per_arm__matches_statsmodels_solver_and_textbook(kind, kwargs, ratio):
    # Given a baseline and a minimum detectable effect
    # When the control-arm size is solved
    n = stats.users_per_arm(kind=kind, alpha=0.05, power=0.8, ratio=ratio, **kwargs)
    # Then it is statsmodels' NormalIndPower solution, rounded up
    if kind == BINARY:
        p0 = kwargs["baseline_rate"]
        effect = proportion_effectsize(p0 * (1 + kwargs["mde"]), p0)
    else:
        effect = kwargs["mde"] * kwargs["baseline_mean"] / kwargs["baseline_sd"]
    solved = NormalIndPower().solve_power(effect_size=abs(effect), alpha=0.05, power=0.8, ratio=ratio)
    assert n == math.ceil(solved) and type(n) is int
    # And the textbook (z_{1-α/2} + z_power)² (1 + 1/ratio) / effect² agrees to within one user
    # (the solver also counts the far rejection tail, which the textbook formula ignores)
    textbook = (norm.isf(0.025) + norm.ppf(0.8)) ** 2 * (1 + 1 / ratio) / effect**2
    assert abs(n - math.ceil(textbook)) <= 1


def test_users_per_arm__classic_two_proportion_formula__within_half_a_percent():
    # Given a 10% baseline and +10% relative MDE (10% → 11%)
    p0, p1 = 0.10, 0.11
    # When solved
    n = stats.users_per_arm(kind=BINARY, alpha=0.05, power=0.8, mde=0.1, baseline_rate=p0)
    # Then the classic pooled/unpooled two-proportion formula gives nearly the same (arcsine vs normal scale)
    z_a, z_b, p_bar = norm.isf(0.025), norm.ppf(0.8), (p0 + p1) / 2
    classic = (z_a * math.sqrt(2 * p_bar * (1 - p_bar)) + z_b * math.sqrt(p0 * (1 - p0) + p1 * (1 - p1))) ** 2
    classic /= (p1 - p0) ** 2
    assert n == pytest.approx(classic, rel=0.005)
    assert n == 14745


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": BINARY, "mde": 0.1, "baseline_rate": 0.0},
        {"kind": BINARY, "mde": 0.1, "baseline_rate": None},
        {"kind": BINARY, "mde": 1.5, "baseline_rate": 0.5},
        {"kind": BINARY, "mde": 0.0, "baseline_rate": 0.5},
        {"kind": MEAN, "mde": 0.1, "baseline_mean": 0.0, "baseline_sd": 1.0},
        {"kind": MEAN, "mde": 0.1, "baseline_mean": 5.0, "baseline_sd": 0.0},
    ],
    ids=["rate_zero", "rate_missing", "rate_above_one", "mde_zero", "mean_zero", "sd_zero"],
)
def test_users_per_arm__undefined_inputs__returns_none(kwargs):
    # Given a baseline or MDE for which no sample size exists
    # When solved
    # Then None; power_plan carries the reason
    assert stats.users_per_arm(alpha=0.05, power=0.8, **kwargs) is None
    plan = stats.power_plan(alpha=0.05, power=0.8, weights=[1, 1], control_index=0, expected_daily_users=100, **kwargs)
    assert plan.users_per_arm is None and plan.expected_days is None and plan.reason


def test_power_plan__several_treatments__largest_requirement_and_days():
    # Given control weight 2 and treatments with weights 1 and 3
    kwargs = {"kind": BINARY, "alpha": 0.05, "power": 0.8, "mde": 0.1, "baseline_rate": 0.1}
    # When planned with 1,000 users a day
    plan = stats.power_plan(weights=[1, 2, 3], control_index=1, expected_daily_users=1000, **kwargs)
    # Then the control arm needs the largest of the per-treatment requirements (ratio = w_t / w_c)
    per_treatment = [stats.users_per_arm(ratio=r, **kwargs) for r in (0.5, 1.5)]
    assert plan.users_per_arm == max(per_treatment) == per_treatment[0]
    # And the total is users × Σw / w_control, the days ceil(total / daily)
    assert plan.total_users == math.ceil(plan.users_per_arm * 6 / 2)
    assert plan.expected_days == math.ceil(plan.users_per_arm * 6 / 2 / 1000)
    assert plan.reason == ""


def test_power_plan__equal_weights__days_exact_rational():
    # Given two equal arms, 14,745 users each, and 29,490 users a day
    kwargs = {"kind": BINARY, "alpha": 0.05, "power": 0.8, "mde": 0.1, "baseline_rate": 0.1}
    # When planned
    plan = stats.power_plan(weights=[1, 1], control_index=0, expected_daily_users=29_490, **kwargs)
    # Then exactly one day (no floating-point ceil overshoot)
    assert (plan.users_per_arm, plan.total_users, plan.expected_days) == (14_745, 29_490, 1)


@pytest.mark.parametrize(
    ("weights", "control_index", "daily", "reason"),
    [
        ([1], 0, 100, "at least one treatment"),
        ([1, 1], 2, 100, "control arm"),
        ([1, 0], 0, 100, "positive weight"),
        ([1, 1], 0, None, "daily users"),
        ([1, 1], 0, 0, "daily users"),
    ],
)
def test_power_plan__missing_inputs__none_with_reason(weights, control_index, daily, reason):
    # Given incomplete plan inputs
    # When planned
    plan = stats.power_plan(
        kind=MEAN,
        alpha=0.05,
        power=0.8,
        mde=0.05,
        baseline_mean=10.0,
        baseline_sd=5.0,
        weights=weights,
        control_index=control_index,
        expected_daily_users=daily,
    )
    # Then the missing part is None with the reason (users per arm still given when only days are missing)
    assert plan.expected_days is None and reason in plan.reason
    assert (plan.users_per_arm is not None) == (reason == "daily users")


# --- input and output types ----------------------------------------------------------------------


def test_engine__decimal_and_numpy_inputs__return_python_floats():
    # Given sums as PostgreSQL (Decimal) and numpy (int64/float64) would hand them over
    from decimal import Decimal

    a, b = covariate_arms(1, binary=False)
    plain_a, plain_b = sums(*a), sums(*b)
    control = SampleSums(
        n=np.int64(plain_a.n),
        sum=Decimal(repr(plain_a.sum)),
        sum_squares=Decimal(repr(plain_a.sum_squares)),
        cov_sum=np.float64(plain_a.cov_sum),
        cov_sum_squares=Decimal(repr(plain_a.cov_sum_squares)),
        sum_products=Decimal(repr(plain_a.sum_products)),
        has_covariate=True,
    )
    # When every engine function is run
    results = [
        stats.arm_summary(control, kind=MEAN),
        stats.welch_diff(control=control, treatment=plain_b, alpha=0.05),
        stats.relative_lift(control=control, treatment=plain_b, kind=MEAN, alpha=0.05),
        stats.sequential_lift(control=control, treatment=plain_b, kind=MEAN, alpha=0.05),
        stats.bayes_lift(control=control, treatment=plain_b, kind=MEAN, direction=INCREASE, alpha=0.05),
        stats.cuped_lift(control=control, treatment=plain_b, kind=MEAN, alpha=0.05),
    ]
    # Then they equal the plain-float results, and every number is a finite Python float
    assert results[2] == stats.relative_lift(control=plain_a, treatment=plain_b, kind=MEAN, alpha=0.05)
    assert results[5] == stats.cuped_lift(control=plain_a, treatment=plain_b, kind=MEAN, alpha=0.05)
    for result in results:
        for value in vars(result).values():
            numbers = value.as_list() if isinstance(value, stats.Interval) else [value]
            for number in numbers:
                if not isinstance(number, str):
                    assert type(number) is float and math.isfinite(number), (result, number)


def test_power_plan__same_inputs_twice__solver_runs_once_and_answer_unchanged():
    # Given an empty solver cache and one plan's inputs
    stats._solve_users.cache_clear()
    kwargs = {"kind": BINARY, "alpha": 0.05, "power": 0.8, "mde": 0.1, "baseline_rate": 0.1}
    # When the plan is computed twice (as the experiment list does on every request)
    first = stats.power_plan(weights=[1, 1], control_index=0, expected_daily_users=1000, **kwargs)
    second = stats.power_plan(weights=[1, 1], control_index=0, expected_daily_users=1000, **kwargs)
    # Then statsmodels is solved once and the second plan is a cache hit
    info = stats._solve_users.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    # And both equal the uncached statsmodels solution
    solved = NormalIndPower().solve_power(
        effect_size=abs(proportion_effectsize(0.11, 0.1)), alpha=0.05, power=0.8, ratio=1.0
    )
    assert first == second and first.users_per_arm == math.ceil(solved) == 14_745
    # And different inputs are a separate entry, not a stale answer
    other = stats.power_plan(weights=[1, 1], control_index=0, expected_daily_users=1000, **{**kwargs, "mde": 0.2})
    assert stats._solve_users.cache_info().misses == 2 and other.users_per_arm < first.users_per_arm
