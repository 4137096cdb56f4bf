"""Generate tests/readouts/data/gbstats_ratio_reference.json: ratio-metric reference values from gbstats 0.8.0.

Like gen_gbstats_reference.py (whose helpers it reuses), run it in a throw-away venv with gbstats, never in
the app's environment (gbstats pins numpy<2):

    python3 -m venv /tmp/gbstats-venv
    /tmp/gbstats-venv/bin/pip install gbstats==0.8.0
    /tmp/gbstats-venv/bin/python tests/readouts/gen_gbstats_ratio_reference.py

Each case stores per arm the RatioSums fields (n, Σm, Σm², Σd, Σd², Σm·d and the part kinds) of seeded
per-user numerator/denominator values, and what gbstats returns for ``RatioStatistic`` pairs:
TwoSidedTTest (relative and absolute), SequentialTwoSidedTTest and EffectBayesianABTest.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path

import numpy as np
from gbstats.frequentist.tests import FrequentistConfig, SequentialConfig, SequentialTwoSidedTTest, TwoSidedTTest
from gbstats.models.statistics import ProportionStatistic, RatioStatistic, SampleMeanStatistic

sys.path.insert(0, str(Path(__file__).parent))
from gen_gbstats_reference import GBSTATS_VERSION, bayesian, clean, frequentist  # noqa: E402

OUT = Path(__file__).parent / "data" / "gbstats_ratio_reference.json"


def part(n: int, total: float, squares: float, kind: str):
    if kind == "binary":
        return ProportionStatistic(n=n, sum=total)
    return SampleMeanStatistic(n=n, sum=total, sum_squares=squares)


def ratio_stat(s: dict) -> RatioStatistic:
    return RatioStatistic(
        n=s["n"],
        m_statistic=part(s["n"], s["numerator_sum"], s["numerator_sum_squares"], s["numerator_kind"]),
        d_statistic=part(s["n"], s["denominator_sum"], s["denominator_sum_squares"], s["denominator_kind"]),
        m_d_sum_of_products=s["sum_products"],
    )


def arm_sums(m: np.ndarray, d: np.ndarray, m_kind: str, d_kind: str) -> dict:
    return {
        "n": len(m),
        "numerator_sum": float(m.sum()),
        "numerator_sum_squares": float((m * m).sum()),
        "denominator_sum": float(d.sum()),
        "denominator_sum_squares": float((d * d).sum()),
        "sum_products": float((m * d).sum()),
        "numerator_kind": m_kind,
        "denominator_kind": d_kind,
    }


def random_arm(rng: np.random.Generator, shift: float, m_kind: str, d_kind: str) -> dict:
    n = int(rng.integers(30, 3000))
    orders = rng.poisson(1.2, size=n).astype(float)  # e.g. orders per user (count denominator)
    if d_kind == "binary":
        orders = (orders > 0).astype(float)
    revenue = orders * rng.gamma(2.0, 20.0 * (1 + shift), size=n)
    if m_kind == "binary":
        revenue = (revenue > 30).astype(float)
    return arm_sums(revenue, orders, m_kind, d_kind)


def reference(case: dict) -> dict:
    alpha = case["alpha"]

    def pair():
        return ratio_stat(case["control"]), ratio_stat(case["treatment"])

    return {
        "relative": frequentist(TwoSidedTTest(*pair(), FrequentistConfig(alpha=alpha))),
        "absolute": frequentist(TwoSidedTTest(*pair(), FrequentistConfig(alpha=alpha, difference_type="absolute"))),
        "sequential": frequentist(
            SequentialTwoSidedTTest(*pair(), SequentialConfig(alpha=alpha, sequential_tuning_parameter=case["tuning"]))
        ),
        "bayes": bayesian(*pair(), case),
        "means": [clean(s.mean) for s in pair()],
        "variances": [clean(s.variance) for s in pair()],
    }


def cases() -> list[dict]:
    rng = np.random.default_rng(20261202)
    kinds = [("mean", "mean"), ("mean", "binary"), ("binary", "mean"), ("binary", "binary")]
    out = []
    for i in range(48):
        m_kind, d_kind = kinds[i % 4]
        lift = rng.normal(0, 0.1)
        out.append(
            {
                "name": f"ratio_{i}_{m_kind}_{d_kind}",
                "alpha": [0.05, 0.1, 0.01][i % 3],
                "tuning": [5000, 1000, 20000][i % 3],
                "direction": ["increase", "decrease"][(i // 2) % 2],
                "prior_sd": [None, None, 0.3, 0.05][i % 4],
                "control": random_arm(rng, 0.0, m_kind, d_kind),
                "treatment": random_arm(rng, lift, m_kind, d_kind),
            }
        )
    zero = arm_sums(np.zeros(40), np.zeros(40), "mean", "mean")
    some = arm_sums(np.arange(40.0), np.ones(40), "mean", "mean")
    base = {"alpha": 0.05, "tuning": 5000, "direction": "increase", "prior_sd": None}
    out.append({"name": "zero_denominator_control", "control": zero, "treatment": some} | base)
    out.append({"name": "zero_denominator_treatment", "control": some, "treatment": zero} | base)
    return out


def main() -> None:
    assert importlib.metadata.version("gbstats") == GBSTATS_VERSION
    data = [case | {"gbstats": reference(case)} for case in cases()]
    OUT.write_text(
        json.dumps({"gbstats_version": GBSTATS_VERSION, "generator": Path(__file__).name, "cases": data}, indent=1)
    )
    print(f"wrote {len(data)} cases to {OUT}")


if __name__ == "__main__":
    main()
