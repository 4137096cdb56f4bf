"""A/A simulation: peeking every day inflates the fixed-horizon test's false positives; the always-valid
(sequential) test stays at or below alpha.

500 seeded A/A experiments per metric kind, 28 daily looks, ~150 new users per arm per day (Poisson).
Per-user outcomes are generated with numpy (binary: Bernoulli(0.1); mean: lognormal revenue), reduced to
cumulative SampleSums per day, and fed to readouts.stats; an experiment counts as a false positive when
any look up to the last day has p < alpha (the experimenter stops at the first significant look).
Tolerances: sequential ≤ alpha + 0.02; naive peeking > alpha + 0.05; a single look at day 28 within
alpha ± 0.03 (checks the simulation itself). Runs in a few seconds (the data generation is vectorised).
"""

from __future__ import annotations

import numpy as np
import pytest

from readouts import stats
from readouts.stats import BINARY, MEAN, SampleSums

ALPHA = 0.05
EXPERIMENTS = 500
DAYS = 28
USERS_PER_ARM_PER_DAY = 150


def daily_sums(kind: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (n, sum, sum_squares) per experiment, day and arm, from per-user values of an A/A test."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(USERS_PER_ARM_PER_DAY, size=(EXPERIMENTS, DAYS, 2))
    group = np.repeat(np.arange(counts.size), counts.ravel())  # which (experiment, day, arm) each user joined
    if kind == BINARY:
        y = (rng.random(group.size) < 0.1).astype(float)
    else:
        y = rng.lognormal(mean=2.0, sigma=0.8, size=group.size)  # same distribution in both arms
    total = np.bincount(group, weights=y, minlength=counts.size).reshape(counts.shape)
    squares = np.bincount(group, weights=y * y, minlength=counts.size).reshape(counts.shape)
    return counts.cumsum(axis=1), total.cumsum(axis=1), squares.cumsum(axis=1)


def arm(n: np.ndarray, s: np.ndarray, ss: np.ndarray, e: int, d: int, a: int) -> SampleSums:
    return SampleSums(n=int(n[e, d, a]), sum=float(s[e, d, a]), sum_squares=float(ss[e, d, a]))


def first_significant_look(kind: str, n, s, ss, e: int) -> tuple[bool, bool]:
    """(naive fixed-horizon test rejected at some look, sequential test rejected at some look)."""
    naive = sequential = False
    for d in range(DAYS):
        control, treatment = arm(n, s, ss, e, d, 0), arm(n, s, ss, e, d, 1)
        if not naive:
            p = stats.relative_lift(control=control, treatment=treatment, kind=kind, alpha=ALPHA).p_value
            naive = p is not None and p < ALPHA
        if not sequential:
            p = stats.sequential_lift(control=control, treatment=treatment, kind=kind, alpha=ALPHA).p_value
            sequential = p is not None and p < ALPHA
        if naive and sequential:
            break
    return naive, sequential


@pytest.mark.parametrize(("kind", "seed"), [(BINARY, 11), (MEAN, 12)])
def test_sequential_lift__daily_peeking_in_aa_tests__false_positive_rate_at_most_alpha(kind, seed):
    # Given 500 A/A experiments looked at every day for four weeks
    n, s, ss = daily_sums(kind, seed)
    # When each experiment stops at its first significant look
    results = np.array([first_significant_look(kind, n, s, ss, e) for e in range(EXPERIMENTS)])
    naive_rate, sequential_rate = results.mean(axis=0)
    # Then the always-valid test keeps its promise
    assert sequential_rate <= ALPHA + 0.02, f"sequential false-positive rate {sequential_rate:.3f}"
    # And the naive fixed-horizon test, peeked at daily, is clearly inflated
    assert naive_rate > ALPHA + 0.05, f"naive peeking false-positive rate {naive_rate:.3f}"


@pytest.mark.parametrize(("kind", "seed"), [(BINARY, 11), (MEAN, 12)])
def test_relative_lift__single_look_in_aa_tests__false_positive_rate_near_alpha(kind, seed):
    # Given the same simulated A/A experiments
    n, s, ss = daily_sums(kind, seed)
    # When each is tested once, at the planned end (day 28)
    last = DAYS - 1
    p = [
        stats.relative_lift(
            control=arm(n, s, ss, e, last, 0), treatment=arm(n, s, ss, e, last, 1), kind=kind, alpha=ALPHA
        ).p_value
        for e in range(EXPERIMENTS)
    ]
    rate = np.mean(np.array(p) < ALPHA)
    # Then the fixed-horizon test has its nominal size (the simulation itself is sound)
    assert abs(rate - ALPHA) <= 0.03, f"single-look false-positive rate {rate:.3f}"
