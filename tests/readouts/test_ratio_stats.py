"""Ratio metrics: readouts.stats on RatioSums against gbstats 0.8.0 RatioStatistic (reference file made by
tests/readouts/gen_gbstats_ratio_reference.py in a separate venv), to 1e-9."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from readouts import stats
from readouts.stats import RatioSums

REFERENCE = json.loads((Path(__file__).parent / "data" / "gbstats_ratio_reference.json").read_text())
CASES = REFERENCE["cases"]
IDS = [c["name"] for c in CASES]
CLOSE = {"rel": 1e-9, "abs": 1e-12}


def sums(case: dict) -> tuple[RatioSums, RatioSums]:
    return RatioSums(**case["control"]), RatioSums(**case["treatment"])


def test_ratio_reference__file__generated_by_gbstats_0_8_0():
    assert REFERENCE["gbstats_version"] == "0.8.0"
    kinds = {(c["control"]["numerator_kind"], c["control"]["denominator_kind"]) for c in CASES}
    assert len(CASES) >= 50 and len(kinds) == 4


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ratio_summary__reference__mean_and_delta_method_variance_of_ratio_statistic(case):
    for s, mean, variance in zip(sums(case), case["gbstats"]["means"], case["gbstats"]["variances"], strict=True):
        summary = stats.ratio_summary(s)
        if s.denominator_sum == 0:
            assert summary.mean is None and "denominator" in summary.reason
            continue
        assert summary.mean == pytest.approx(mean, **CLOSE)
        assert summary.variance == pytest.approx(variance, rel=1e-9)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ratio_relative_lift__reference__matches_two_sided_ttest(case):
    control, treatment = sums(case)
    ref = case["gbstats"]["relative"]
    result = stats.relative_lift(control=control, treatment=treatment, kind="ratio", alpha=case["alpha"])
    if ref["error"]:
        assert result.rel_lift is None and result.p_value is None and "denominator" in result.reason
        return
    assert result.rel_lift == pytest.approx(ref["expected"], **CLOSE)
    assert result.rel_lift_ci.as_list() == pytest.approx(ref["ci"], **CLOSE)
    assert result.p_value == pytest.approx(ref["p_value"], **CLOSE)
    assert result.variance == pytest.approx(ref["stddev"] ** 2, rel=1e-9)
    assert result.df == pytest.approx(ref["dof"], rel=1e-9)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ratio_diff__reference__matches_absolute_two_sided_ttest(case):
    control, treatment = sums(case)
    ref = case["gbstats"]["absolute"]
    result = stats.ratio_diff(control=control, treatment=treatment, alpha=case["alpha"])
    if ref["error"]:
        assert result.p_value is None and result.reason
        return
    assert result.diff == pytest.approx(ref["expected"], **CLOSE)
    assert result.diff_ci.as_list() == pytest.approx(ref["ci"], **CLOSE)
    assert result.p_value == pytest.approx(ref["p_value"], **CLOSE)
    assert result.df == pytest.approx(ref["dof"], rel=1e-9)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ratio_sequential__reference__matches_sequential_two_sided_ttest(case):
    control, treatment = sums(case)
    ref = case["gbstats"]["sequential"]
    result = stats.sequential_lift(
        control=control, treatment=treatment, kind="ratio", alpha=case["alpha"], tuning=case["tuning"]
    )
    if ref["error"]:
        assert result.rel_lift_ci is None and result.p_value is None and result.reason
        return
    assert result.rel_lift_ci.as_list() == pytest.approx(ref["ci"], **CLOSE)
    assert result.p_value == pytest.approx(ref["p_value"], **CLOSE)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ratio_bayes__reference__matches_effect_bayesian_ab_test(case):
    control, treatment = sums(case)
    ref = case["gbstats"]["bayes"]
    result = stats.bayes_lift(
        control=control,
        treatment=treatment,
        kind="ratio",
        direction=case["direction"],
        alpha=case["alpha"],
        prior_sd=case["prior_sd"],
    )
    if ref["error"]:
        assert result.chance_to_beat is None and result.reason
        return
    assert result.chance_to_beat == pytest.approx(ref["chance_to_win"], **CLOSE)
    assert result.expected_loss == pytest.approx(ref["risk_treatment"], rel=1e-8, abs=1e-12)
    assert result.rel_lift_ci.as_list() == pytest.approx(ref["ci"], **CLOSE)


def test_ratio_stats__zero_denominator__nulls_with_reason_never_raise():
    zero = RatioSums(10, 0.0, 0.0, 0.0, 0.0, 0.0)
    some = RatioSums(10, 5.0, 9.0, 10.0, 10.0, 5.0)
    for control, treatment in ((zero, some), (some, zero), (zero, zero)):
        rel = stats.relative_lift(control=control, treatment=treatment, kind="ratio", alpha=0.05)
        diff = stats.ratio_diff(control=control, treatment=treatment, alpha=0.05)
        assert rel.rel_lift is None and "denominator sum is 0" in rel.reason
        assert diff.diff is None and "denominator sum is 0" in diff.reason


def test_ratio_summary__random_values__textbook_delta_method():
    # An independent computation: Var(m̄/d̄) ≈ (σm² − 2R σmd + R² σd²)/d̄², per user (n − 1 moments)
    rng = np.random.default_rng(7)
    d = rng.poisson(2.0, 500).astype(float)
    m = d * rng.gamma(2.0, 3.0, 500)
    s = RatioSums(500, m.sum(), (m * m).sum(), d.sum(), (d * d).sum(), (m * d).sum())
    r = m.sum() / d.sum()
    cov = np.cov(m, d, ddof=1)
    expected = (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / d.mean() ** 2
    summary = stats.ratio_summary(s)
    assert summary.mean == pytest.approx(r, rel=1e-12)
    assert summary.variance == pytest.approx(expected, rel=1e-9)
