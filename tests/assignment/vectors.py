"""fixtures/assignment_vectors.json: published rules and cases (inputs and expected answers), generated from the
implementation so that an SDK in any language can prove it agrees (docs/assignment.md).

Regenerate (only when the algorithm changes on purpose, with a new `algorithm` version):
    .venv/bin/python -m tests.assignment.vectors
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from tracking.assignment import coverage_point, evaluate, rule_from_json
from tracking.hashing import bucket_point

PATH = Path(__file__).resolve().parents[2] / "fixtures" / "assignment_vectors.json"
ALGORITHM = "signaldash-assign-1"
CASES = 1200

# Published rules (the shape of GET /api/assign/rules): plain, coverage, targeting, a layer split in two,
# a holdout and an experiment held out by it, uneven weights, three variants.
RULES: list[dict[str, Any]] = [
    {
        "experiment": "plain",
        "salt": "5f1c0a9e2b7d4c36a8e0f1b2c3d4e5f6",
        "variants": [
            {"key": "control", "weight": 1, "is_control": True},
            {"key": "treatment", "weight": 1, "is_control": False},
        ],
        "coverage": 1.0,
        "targeting": {},
        "layer": None,
        "holdout": None,
    },
    {
        "experiment": "coverage-30",
        "salt": "0b6e2f7a9c1d4e58b3a6c9d2e5f8a1b4",
        "variants": [{"key": "a", "weight": 3, "is_control": True}, {"key": "b", "weight": 1, "is_control": False}],
        "coverage": 0.3,
        "targeting": {},
        "layer": None,
        "holdout": None,
    },
    {
        "experiment": "targeted",
        "salt": "c4d8e2f6a0b4c8d2e6f0a4b8c2d6e0f4",
        "variants": [
            {"key": "control", "weight": 1, "is_control": True},
            {"key": "v1", "weight": 1, "is_control": False},
            {"key": "v2", "weight": 2, "is_control": False},
        ],
        "coverage": 0.8,
        "targeting": {
            "$and": [
                {"$or": [{"country": {"$in": ["DE", "AT", "CH"]}}, {"plan": "pro"}]},
                {"app_version": {"$vgte": "2.10.0"}},
                {"$not": {"platform": "web"}},
            ]
        },
        "layer": None,
        "holdout": None,
    },
    {
        "experiment": "checkout-left",
        "salt": "1a2b3c4d5e6f708192a3b4c5d6e7f809",
        "variants": [
            {"key": "control", "weight": 1, "is_control": True},
            {"key": "treatment", "weight": 1, "is_control": False},
        ],
        "coverage": 1.0,
        "targeting": {},
        "layer": {"key": "checkout", "salt": "9f8e7d6c5b4a39281706f5e4d3c2b1a0", "start": 0.0, "end": 0.5},
        "holdout": "holdout-2026",
    },
    {
        "experiment": "checkout-right",
        "salt": "a1b2c3d4e5f60718293a4b5c6d7e8f90",
        "variants": [
            {"key": "control", "weight": 1, "is_control": True},
            {"key": "treatment", "weight": 1, "is_control": False},
        ],
        "coverage": 0.5,
        "targeting": {"age": {"$gte": 18}},
        "layer": {"key": "checkout", "salt": "9f8e7d6c5b4a39281706f5e4d3c2b1a0", "start": 0.5, "end": 1.0},
        "holdout": "holdout-2026",
    },
    {
        "experiment": "holdout-2026",
        "salt": "f0e1d2c3b4a5968778695a4b3c2d1e0f",
        "variants": [
            {"key": "held-out", "weight": 5, "is_control": True},
            {"key": "general", "weight": 95, "is_control": False},
        ],
        "coverage": 1.0,
        "targeting": {},
        "layer": None,
        "holdout": None,
    },
]


def _attributes(rng: random.Random) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    if rng.random() < 0.9:
        attributes["country"] = rng.choice(["DE", "AT", "CH", "FR", "US", "GB"])
    if rng.random() < 0.8:
        attributes["plan"] = rng.choice(["free", "pro", "team"])
    if rng.random() < 0.85:
        attributes["app_version"] = rng.choice(["2.9.1", "2.10.0", "2.10.1", "3.0.0", "1.12.4", "2.10.0-beta"])
    if rng.random() < 0.85:
        attributes["platform"] = rng.choice(["ios", "android", "web"])
    if rng.random() < 0.7:
        attributes["age"] = rng.choice([15, 17, 18, 30, 64, "30", None])
    return attributes


def case_answers(user_key: str, attributes: dict[str, Any]) -> list[dict[str, Any]]:
    rules = {r["experiment"]: rule_from_json(r) for r in RULES}
    memo: dict = {}
    answers = []
    for slug in sorted(rules):
        answer = evaluate(rules[slug], user_key=user_key, attributes=attributes, rules=rules, memo=memo)
        answers.append({"experiment": slug, "variant": answer.variant, "reason": answer.reason})
    return answers


def build() -> dict[str, Any]:
    rng = random.Random(20261202)  # noqa: S311 - reproducible test data
    cases = []
    for index in range(CASES):
        user_key = rng.choice([f"user-{index}", f"u{rng.randrange(10**9)}", f"ü-{index}:ß", f"{index}@example.com"])
        attributes = _attributes(rng)
        cases.append(
            {
                "user_key": user_key,
                "attributes": attributes,
                # intermediate values, to debug an SDK step by step
                "points": {
                    "checkout_layer": str(bucket_point("9f8e7d6c5b4a39281706f5e4d3c2b1a0", user_key)),
                    "plain_variant": str(bucket_point(RULES[0]["salt"], user_key)),
                    "coverage-30_coverage": str(coverage_point(RULES[1]["salt"], user_key)),
                },
                "expected": case_answers(user_key, attributes),
            }
        )
    return {"algorithm": ALGORITHM, "rules": {"algorithm": ALGORITHM, "experiments": RULES}, "cases": cases}


if __name__ == "__main__":
    data = build()
    cases = ",\n".join(json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in data["cases"])
    rules = json.dumps(data["rules"], ensure_ascii=False, indent=1)
    text = f'{{"algorithm": "{ALGORITHM}",\n"rules": {rules},\n"cases": [\n{cases}\n]}}\n'
    assert json.loads(text) == data
    PATH.write_text(text, encoding="utf-8")
    print(f"wrote {PATH}")
