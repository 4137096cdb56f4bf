"""readouts.stats against independent textbook formulas (scipy.stats for the normal/chi-square tails)."""

from __future__ import annotations

import math

import pytest
from scipy.stats import chi2 as chi2_dist
from scipy.stats import norm

from readouts import stats

Z = norm.isf(0.025)


def wilson(k: int, n: int) -> tuple[float, float]:
    p = k / n
    denom = 1 + Z**2 / n
    centre = (p + Z**2 / (2 * n)) / denom
    half = Z / denom * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2))
    return centre - half, centre + half


def textbook(kc: int, nc: int, kt: int, nt: int) -> dict:
    pc, pt = kc / nc, kt / nt
    se_unpooled = math.sqrt(pt * (1 - pt) / nt + pc * (1 - pc) / nc)
    pooled = (kc + kt) / (nc + nt)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / nt + 1 / nc))
    z = (pt - pc) / se_pooled
    return {
        "diff": pt - pc,
        "diff_ci": (pt - pc - Z * se_unpooled, pt - pc + Z * se_unpooled),
        "lift": (pt - pc) / pc * 100 if pc else None,
        "z": z,
        "p": 2 * norm.sf(abs(z)),
    }


# (control conversions, control exposures, treatment conversions, treatment exposures)
REGULAR_CASES = [
    (100, 1000, 130, 1000),
    (5, 200, 12, 210),
    (5000, 100000, 5200, 100000),
    (10, 500, 0, 500),  # zero treatment conversions: lift -100%
    (0, 500, 8, 500),  # zero control conversions: lift undefined, test defined
    (1, 3, 2, 3),
    (480, 500, 499, 500),
    (37, 1234, 41, 987),
]


@pytest.mark.parametrize(("kc", "nc", "kt", "nt"), REGULAR_CASES)
def test_compare__regular_counts__matches_textbook_formulas(kc, nc, kt, nt):
    # Given two arms
    control, treatment = stats.Arm("control", nc, kc), stats.Arm("treatment", nt, kt)
    expected = textbook(kc, nc, kt, nt)
    # When
    result = stats.compare(control=control, treatment=treatment)
    # Then
    assert result.diff == pytest.approx(expected["diff"], abs=1e-12)
    assert result.diff_ci.as_list() == pytest.approx(list(expected["diff_ci"]), abs=1e-12)
    assert result.z == pytest.approx(expected["z"], rel=1e-9)
    assert result.p_value == pytest.approx(expected["p"], rel=1e-9, abs=1e-300)
    if expected["lift"] is None:
        assert result.lift is None
        assert result.lift_reason == "Lift undefined (control conversion rate is 0)"
    else:
        assert result.lift == pytest.approx(expected["lift"], rel=1e-12)


@pytest.mark.parametrize(("k", "n"), [(0, 100), (100, 100), (1, 1), (13, 100), (5000, 100000), (3, 7)])
def test_rate_with_ci__counts__matches_wilson_formula(k, n):
    # Given / When
    result = stats.rate_with_ci(conversions=k, exposures=n)
    # Then
    assert result.rate == pytest.approx(k / n)
    assert result.ci.as_list() == pytest.approx(list(wilson(k, n)), abs=1e-12)
    assert 0.0 <= result.ci.low <= result.rate <= result.ci.high <= 1.0


def test_rate_with_ci__no_exposures__none_with_reason():
    result = stats.rate_with_ci(conversions=0, exposures=0)
    assert result.rate is None and result.ci is None
    assert "No exposed users" in result.reason


def test_compare__both_rates_zero__lift_zero_and_no_test():
    # Given two arms where nobody converted
    result = stats.compare(control=stats.Arm("c", 400, 0), treatment=stats.Arm("t", 300, 0))
    # Then lift is 0, the difference is exactly 0 with a degenerate interval, and the test says why it is absent
    assert result.lift == 0.0
    assert result.diff == 0.0
    assert result.diff_ci.as_list() == [0.0, 0.0]
    assert result.z is None and result.p_value is None
    assert "no variation" in result.test_reason


def test_compare__everyone_converted__no_test_and_reason():
    result = stats.compare(control=stats.Arm("c", 50, 50), treatment=stats.Arm("t", 60, 60))
    assert result.lift == 0.0
    assert result.z is None and result.p_value is None
    assert "converted" in result.test_reason


@pytest.mark.parametrize(
    ("nc", "nt", "empty"), [(0, 100, "the c arm has"), (100, 0, "the t arm has"), (0, 0, "the c and t arms have")]
)
def test_compare__arm_without_exposures__no_p_value_and_says_why(nc, nt, empty):
    # Given an arm with no exposed users
    result = stats.compare(control=stats.Arm("c", nc, 0), treatment=stats.Arm("t", nt, min(nt, 5)))
    # Then nothing is computed, and the reason names the empty arm
    assert (result.diff, result.diff_ci, result.lift, result.z, result.p_value) == (None, None, None, None, None)
    assert f"{empty} no exposed users" in result.test_reason


def test_compare__p_value_below_float_precision__reported_as_zero_not_none():
    # Given a huge, obvious difference (|z| ~ 160: the normal tail underflows double precision)
    kc, nc, kt, nt = 50_000, 1_000_000, 100_000, 1_000_000
    assert 2 * norm.sf(abs(textbook(kc, nc, kt, nt)["z"])) == 0.0
    # When
    result = stats.compare(control=stats.Arm("c", nc, kc), treatment=stats.Arm("t", nt, kt))
    # Then
    assert result.p_value == 0.0
    assert result.z == pytest.approx(textbook(kc, nc, kt, nt)["z"], rel=1e-9)


@pytest.mark.parametrize(
    ("observed", "weights"),
    [([5000, 5000], [1, 1]), ([5200, 4800], [1, 1]), ([1000, 2100, 2900], [1, 2, 3]), ([10, 90], [1, 1])],
)
def test_srm_test__counts__matches_chi_square_formula(observed, weights):
    # Given expected counts from the weights
    total = sum(observed)
    expected = [total * w / sum(weights) for w in weights]
    chi2 = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    # When
    result = stats.srm_test(exposures=observed, weights=weights)
    # Then
    assert result.chi2 == pytest.approx(chi2, rel=1e-12)
    assert result.p_value == pytest.approx(chi2_dist.sf(chi2, len(observed) - 1), rel=1e-9, abs=1e-300)
    assert result.mismatch == (result.p_value < 0.001)


def test_srm_test__extreme_imbalance__p_value_zero_and_mismatch():
    result = stats.srm_test(exposures=[1_000_000, 10], weights=[1, 1])
    assert result.p_value == 0.0
    assert result.mismatch is True


@pytest.mark.parametrize(
    ("exposures", "weights", "reason"),
    [([0, 0], [1, 1], "No exposed users"), ([10], [1], "at least two variants")],
)
def test_srm_test__undefined__none_with_reason(exposures, weights, reason):
    result = stats.srm_test(exposures=exposures, weights=weights)
    assert result.chi2 is None and result.p_value is None
    assert reason in result.reason
    assert result.mismatch is False


def test_small_samples__below_thresholds__flags_only_those_arms():
    # Given arms: big enough, too few users, too few conversions, too few non-conversions, empty
    arms = [
        stats.Arm("ok", 1000, 100),
        stats.Arm("few_users", 99, 50),
        stats.Arm("few_conv", 1000, 9),
        stats.Arm("few_non", 1000, 991),
        stats.Arm("empty", 0, 0),
    ]
    # When
    flagged = [s.arm for s in stats.small_samples(arms)]
    # Then
    assert flagged == ["few_users", "few_conv", "few_non"]


@pytest.mark.parametrize(
    ("control", "treatment", "expected"),
    [(0.1, 0.13, 30.0), (0.0, 0.0, 0.0), (0.2, 0.0, -100.0), (0.0, 0.05, None)],
)
def test_lift_percent__rates__relative_change_in_percent(control, treatment, expected):
    lift, reason = stats.lift_percent(control_rate=control, treatment_rate=treatment)
    if expected is None:
        assert lift is None and reason == "Lift undefined (control conversion rate is 0)"
    else:
        assert lift == pytest.approx(expected) and reason == ""
