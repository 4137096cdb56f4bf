"""Generate tests/readouts/data/gbstats_reference.json: reference values from GrowthBook's gbstats 0.8.0.

gbstats pins numpy<2 and pandas, so it must never enter the app's dependencies. Run this script in a
separate, throw-away venv (from the repository root):

    python3 -m venv /tmp/gbstats-venv
    /tmp/gbstats-venv/bin/pip install gbstats==0.8.0
    /tmp/gbstats-venv/bin/python tests/readouts/gen_gbstats_reference.py

Each case stores the inputs as SampleSums fields (sums of seeded numpy per-user values) and what
gbstats returns for them: TwoSidedTTest (relative and absolute), SequentialTwoSidedTTest,
EffectBayesianABTest (flat or proper prior) and, with a covariate, the regression-adjusted (CUPED)
TwoSidedTTest. An ``error`` is gbstats' error_message when it declines to compute (its default output
is then 0 lift / p = 1, which readouts.stats reports as None with a reason instead).
tests/readouts/test_stats_engine.py compares readouts.stats with these values.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
from pathlib import Path

import numpy as np
from gbstats.bayesian.tests import EffectBayesianABTest, EffectBayesianConfig, GaussianPrior
from gbstats.frequentist.tests import FrequentistConfig, SequentialConfig, SequentialTwoSidedTTest, TwoSidedTTest
from gbstats.models.statistics import (
    ProportionStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    compute_theta,
)

OUT = Path(__file__).parent / "data" / "gbstats_reference.json"
GBSTATS_VERSION = "0.8.0"


def clean(x):
    """JSON-safe floats: non-finite values (gbstats can produce them) become None."""
    if isinstance(x, list | tuple):
        return [clean(v) for v in x]
    x = float(x)
    return x if math.isfinite(x) else None


def sums(y: np.ndarray, x: np.ndarray | None) -> dict:
    out = {"n": len(y), "sum": float(y.sum()), "sum_squares": float((y * y).sum())}
    if x is not None:
        out |= {
            "cov_sum": float(x.sum()),
            "cov_sum_squares": float((x * x).sum()),
            "sum_products": float((x * y).sum()),
            "has_covariate": True,
        }
    return out


def statistic(s: dict, kind: str):
    if kind == "binary":
        return ProportionStatistic(n=s["n"], sum=s["sum"])
    return SampleMeanStatistic(n=s["n"], sum=s["sum"], sum_squares=s["sum_squares"])


def ra_statistic(s: dict, kind: str) -> RegressionAdjustedStatistic:
    return RegressionAdjustedStatistic(
        n=s["n"],
        post_statistic=statistic(s, kind),
        pre_statistic=SampleMeanStatistic(n=s["n"], sum=s["cov_sum"], sum_squares=s["cov_sum_squares"]),
        post_pre_sum_of_products=s["sum_products"],
        theta=0,
    )


def dof(test) -> float | None:
    try:
        return clean(test.dof)
    except ZeroDivisionError:
        return None


def frequentist(test) -> dict:
    r = test.compute_result()
    return {
        "error": r.error_message,
        "expected": clean(r.expected),
        "ci": clean(r.ci),
        "p_value": clean(r.p_value),
        "stddev": clean(r.uplift.stddev),
        "dof": dof(test),
    }


def bayesian(a, b, case: dict) -> dict:
    prior = GaussianPrior() if case["prior_sd"] is None else GaussianPrior(0, case["prior_sd"] ** 2, True)
    config = EffectBayesianConfig(alpha=case["alpha"], inverse=case["direction"] == "decrease", prior_effect=prior)
    r = EffectBayesianABTest(a, b, config).compute_result()
    return {
        "error": r.error_message,
        "chance_to_win": clean(r.chance_to_win),
        "risk_treatment": clean(r.risk[1]),  # after gbstats' flip for inverse metrics: the loss of shipping B
        "ci": clean(r.ci),
        "mean": clean(r.uplift.mean),
        "stddev": clean(r.uplift.stddev),
    }


def cuped(case: dict) -> dict:
    kind, a_sums, b_sums = case["kind"], case["control"], case["treatment"]
    theta = compute_theta(ra_statistic(a_sums, kind), ra_statistic(b_sums, kind))
    test = TwoSidedTTest(ra_statistic(a_sums, kind), ra_statistic(b_sums, kind), FrequentistConfig(alpha=case["alpha"]))
    return {"theta": clean(theta)} | frequentist(test)


def reference(case: dict) -> dict:
    kind, alpha = case["kind"], case["alpha"]

    def pair():
        return statistic(case["control"], kind), statistic(case["treatment"], kind)

    out = {
        "relative": frequentist(TwoSidedTTest(*pair(), FrequentistConfig(alpha=alpha))),
        "absolute": frequentist(TwoSidedTTest(*pair(), FrequentistConfig(alpha=alpha, difference_type="absolute"))),
        "sequential": frequentist(
            SequentialTwoSidedTTest(*pair(), SequentialConfig(alpha=alpha, sequential_tuning_parameter=case["tuning"]))
        ),
        "bayes": bayesian(*pair(), case),
    }
    if case["control"].get("has_covariate"):
        out["cuped"] = cuped(case)
    return out


def random_arms(rng: np.random.Generator, kind: str, covariate: bool) -> tuple[dict, dict]:
    arms = []
    lift = rng.normal(0, 0.08)
    for shift in (0.0, lift):
        n = int(rng.integers(50, 4000))
        x = rng.gamma(2.0, 5.0, size=n)  # pre-exposure value
        if kind == "binary":
            p = np.clip(0.02 + 0.01 * x * (1 + shift), 0, 1)
            y = (rng.random(n) < p).astype(float)
        else:
            y = np.maximum(0.0, (3.0 + 0.8 * x) * (1 + shift) + rng.normal(0, 4.0, size=n))
        if covariate:
            x = np.where(rng.random(n) < 0.1, 0.0, x)  # users without a covariate send 0
        arms.append(sums(y, x if covariate else None))
    return arms[0], arms[1]


def random_cases(count: int) -> list[dict]:
    rng = np.random.default_rng(20240620)
    cases = []
    for i in range(count):
        kind = ("binary", "mean")[i % 2]
        control, treatment = random_arms(rng, kind, covariate=i % 3 != 0)
        cases.append(
            {
                "name": f"random_{i}_{kind}",
                "kind": kind,
                "alpha": [0.05, 0.1, 0.01][i % 3],
                "tuning": [5000, 1000, 20000][i % 3],
                "direction": ["increase", "decrease"][(i // 2) % 2],
                "prior_sd": [None, None, 0.3, 0.05][i % 4],
                "control": control,
                "treatment": treatment,
            }
        )
    return cases


def edge(name: str, kind: str, control: dict, treatment: dict, **settings) -> dict:
    base = {"alpha": 0.05, "tuning": 5000, "direction": "increase", "prior_sd": None}
    return {"name": name, "kind": kind, "control": control, "treatment": treatment} | base | settings


def edge_cases() -> list[dict]:
    ones = np.ones
    return [
        edge("zero_control_mean", "binary", sums(np.zeros(500), None), sums(np.r_[ones(8), np.zeros(492)], None)),
        edge("zero_variance_both", "mean", sums(np.full(20, 2.0), None), sums(np.full(20, 3.0), None)),
        edge(
            "zero_variance_control",
            "mean",
            sums(np.full(30, 2.0), None),
            sums(np.arange(30.0), None),
        ),
        edge("empty_treatment", "binary", sums(np.r_[ones(10), np.zeros(90)], None), sums(np.zeros(0), None)),
        edge("empty_control", "mean", sums(np.zeros(0), None), sums(np.arange(5.0), None)),
        edge("single_user_treatment", "mean", sums(np.arange(1.0, 9.0), None), sums(np.array([5.0]), None)),
        edge(
            "huge_effect_underflow",
            "binary",
            {"n": 1_000_000, "sum": 10_000.0, "sum_squares": 10_000.0},
            {"n": 1_000_000, "sum": 100_000.0, "sum_squares": 100_000.0},
        ),
        edge(
            "negative_lift_decrease",
            "binary",
            {"n": 20_000, "sum": 2_400.0, "sum_squares": 2_400.0},
            {"n": 19_500, "sum": 2_150.0, "sum_squares": 2_150.0},
            direction="decrease",
            prior_sd=0.1,
        ),
        edge(
            "cuped_no_covariate_variance",
            "mean",
            sums(np.arange(1.0, 41.0), np.zeros(40)),
            sums(np.arange(2.0, 42.0), np.zeros(40)),
        ),
    ]


def main() -> None:
    version = importlib.metadata.version("gbstats")
    if version != GBSTATS_VERSION:
        raise SystemExit(f"needs gbstats {GBSTATS_VERSION}, found {version}")
    cases = random_cases(60) + edge_cases()
    for case in cases:
        case["gbstats"] = reference(case)
    payload = {"gbstats_version": version, "generator": Path(__file__).name, "cases": cases}
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
