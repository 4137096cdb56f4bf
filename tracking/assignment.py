"""The assignment algorithm (docs/assignment.md): pure functions over published rules, no Django imports.

One user, one experiment, rules in this order, the first that decides wins:

1. a stored assignment (from an earlier call or the user's first exposure) → `assigned`, that variant;
2. targeting (GrowthBook condition on the attributes) fails → `not_targeted`;
3. holdout: the user's answer in the holdout experiment (evaluated by these same rules) is its control
   variant → `in_holdout`;
4. layer: the layer point, SHA-256("<layer salt>:<user_key>"), outside [start, end) → `outside_layer_range`;
5. coverage: the coverage point, SHA-256("<salt>.coverage:<user_key>"), outside [0, coverage) →
   `outside_coverage`;
6. weights: the variant point, SHA-256("<salt>:<user_key>"), picks a variant by weight → `assigned`.

`evaluate` is what `/api/assign`, `/api/assign/all` and the test vectors (fixtures/assignment_vectors.json)
run; the service adds storage and counting around it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from experiments.targeting import targeting_matches
from tracking.hashing import assign_variant, bucket_point, in_unit_range

ASSIGNED = "assigned"
NOT_TARGETED = "not_targeted"
IN_HOLDOUT = "in_holdout"
OUTSIDE_LAYER_RANGE = "outside_layer_range"
OUTSIDE_COVERAGE = "outside_coverage"
REASONS = (ASSIGNED, NOT_TARGETED, IN_HOLDOUT, OUTSIDE_LAYER_RANGE, OUTSIDE_COVERAGE)


@dataclass(frozen=True, slots=True)
class LayerRule:
    key: str
    salt: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Rule:
    """One running experiment's published rules (what `GET /api/assign/rules` returns for it)."""

    slug: str
    salt: str
    variants: tuple[tuple[str, int], ...]  # (key, weight)
    control: str | None = None
    coverage: float = 1.0
    targeting: Mapping[str, Any] = field(default_factory=dict)
    layer: LayerRule | None = None
    holdout: str | None = None  # the holdout experiment's slug

    def as_json(self) -> dict[str, Any]:
        return {
            "experiment": self.slug,
            "salt": self.salt,
            "variants": [{"key": k, "weight": w, "is_control": k == self.control} for k, w in self.variants],
            "coverage": self.coverage,
            "targeting": dict(self.targeting),
            "layer": (
                {"key": self.layer.key, "salt": self.layer.salt, "start": self.layer.start, "end": self.layer.end}
                if self.layer
                else None
            ),
            "holdout": self.holdout,
        }


def rule_from_json(data: Mapping[str, Any]) -> Rule:
    """A Rule from its published form (`Rule.as_json`, one item of `GET /api/assign/rules`)."""
    layer = data.get("layer")
    variants = data["variants"]
    return Rule(
        slug=data["experiment"],
        salt=data["salt"],
        variants=tuple((v["key"], v["weight"]) for v in variants),
        control=next((v["key"] for v in variants if v.get("is_control")), None),
        coverage=data.get("coverage", 1.0),
        targeting=data.get("targeting") or {},
        layer=LayerRule(layer["key"], layer["salt"], layer["start"], layer["end"]) if layer else None,
        holdout=data.get("holdout"),
    )


@dataclass(frozen=True, slots=True)
class Answer:
    experiment: str
    variant: str | None
    reason: str
    stored: bool = False  # True: the stored assignment decided (rule 1)

    @property
    def in_experiment(self) -> bool:
        return self.variant is not None


def coverage_point(salt: str, user_key: str) -> int:
    """The coverage point: SHA-256("<salt>.coverage:<user_key>"), independent of the variant point."""
    return bucket_point(f"{salt}.coverage", user_key)


def evaluate(
    rule: Rule,
    *,
    user_key: str,
    attributes: Mapping[str, Any],
    rules: Mapping[str, Rule],
    stored: Mapping[str, str] | None = None,
    memo: dict[str, Answer] | None = None,
) -> Answer:
    """The answer for one experiment. `rules`: every running experiment's rules by slug (for holdouts; a
    holdout that is not in `rules` is not running and holds nobody out). `stored`: the user's stored
    variant per experiment slug. `memo` collects every answer computed (the holdouts' too)."""
    stored = stored or {}
    memo = {} if memo is None else memo
    if rule.slug in memo:
        return memo[rule.slug]
    answer = _decide(rule, user_key, attributes, rules, stored, memo)
    memo[rule.slug] = answer
    return answer


def _decide(
    rule: Rule,
    user_key: str,
    attributes: Mapping[str, Any],
    rules: Mapping[str, Rule],
    stored: Mapping[str, str],
    memo: dict[str, Answer],
) -> Answer:
    if rule.slug in stored:
        return Answer(rule.slug, stored[rule.slug], ASSIGNED, stored=True)
    if rule.targeting and not targeting_matches(dict(rule.targeting), dict(attributes)):
        return Answer(rule.slug, None, NOT_TARGETED)
    holdout = rules.get(rule.holdout) if rule.holdout else None
    if holdout is not None and holdout.slug != rule.slug:
        held = evaluate(holdout, user_key=user_key, attributes=attributes, rules=rules, stored=stored, memo=memo)
        if held.variant is not None and held.variant == holdout.control:
            return Answer(rule.slug, None, IN_HOLDOUT)
    layer = rule.layer
    if layer is not None and not in_unit_range(bucket_point(layer.salt, user_key), layer.start, layer.end):
        return Answer(rule.slug, None, OUTSIDE_LAYER_RANGE)
    if rule.coverage < 1 and not in_unit_range(coverage_point(rule.salt, user_key), 0.0, rule.coverage):
        return Answer(rule.slug, None, OUTSIDE_COVERAGE)
    return Answer(rule.slug, assign_variant(rule.salt, user_key, rule.variants), ASSIGNED)
