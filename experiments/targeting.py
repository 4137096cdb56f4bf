"""Targeting conditions: GrowthBook's condition syntax, validated here, evaluated by GrowthBook's own SDK.

Evaluation is `growthbook.core.evalCondition` from the official `growthbook` Python SDK (the function its
`GrowthBook` class calls for experiment and feature-rule conditions), so a condition behaves exactly as
in a GrowthBook-compatible SDK: missing attributes and type mismatches never raise, they just do not
match. The SDK does not validate conditions; `targeting_problems` does, on save, and names the place
of each problem (`$and[1].country.$in: must be a list`).

Supported operators (a subset of GrowthBook's, the ones our contract names): `$eq $ne $in $nin $gt $gte
$lt $lte $exists $regex $not` on values, `$and $or $not` on conditions, `$vgt $vgte $vlt $vlte` on
dotted version strings. A value that is not an operator object is compared for equality.
"""

from __future__ import annotations

import json
import re
from typing import Any

from growthbook.core import evalCondition

TARGETING_MAX_BYTES = 8 * 1024
TARGETING_MAX_DEPTH = 10
CONDITION_OPERATORS = ("$and", "$or", "$not")
VALUE_OPERATORS = (
    "$eq",
    "$ne",
    "$in",
    "$nin",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$exists",
    "$regex",
    "$not",
    "$vgt",
    "$vgte",
    "$vlt",
    "$vlte",
)
_ORDERED = ("$gt", "$gte", "$lt", "$lte")
_VERSIONS = ("$vgt", "$vgte", "$vlt", "$vlte")
_SCALAR = (str, int, float, bool, type(None))


def targeting_matches(targeting: dict[str, Any] | None, attributes: dict[str, Any]) -> bool:
    """True when the user's attributes satisfy the condition (an empty condition matches everyone)."""
    if not targeting:
        return True
    return evalCondition(attributes, targeting)


def targeting_problems(targeting: Any) -> list[str]:
    """Every problem of a condition, each prefixed with where it is (empty when the condition is valid)."""
    if targeting is None or targeting == {}:
        return []
    if not isinstance(targeting, dict):
        return ['(top): must be a JSON object (a condition such as {"country": {"$in": ["DE", "FR"]}}).']
    try:
        size = len(json.dumps(targeting, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    except (TypeError, ValueError, RecursionError):
        return ["(top): must be plain JSON."]
    if size > TARGETING_MAX_BYTES:
        return [f"(top): must be at most {TARGETING_MAX_BYTES} bytes as JSON (is {size})."]
    problems: list[str] = []
    _condition(targeting, "", 1, problems)
    return problems


def _where(path: str, key: str) -> str:
    if not path:
        return key
    return f"{path}{key}" if key.startswith("[") else f"{path}.{key}"


def _condition(condition: Any, path: str, depth: int, problems: list[str]) -> None:
    here = path or "(top)"
    if depth > TARGETING_MAX_DEPTH:
        problems.append(f"{here}: nested more than {TARGETING_MAX_DEPTH} levels.")
        return
    if not isinstance(condition, dict):
        problems.append(f"{here}: must be a condition (a JSON object).")
        return
    for key, value in condition.items():
        where = _where(path, key)
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                problems.append(f"{where}: must be a non-empty list of conditions.")
                continue
            for index, item in enumerate(value):
                _condition(item, _where(where, f"[{index}]"), depth + 1, problems)
        elif key == "$not":
            _condition(value, where, depth + 1, problems)
        elif key.startswith("$"):
            combine = ", ".join(CONDITION_OPERATORS)
            problems.append(f"{where}: unknown operator here (conditions combine with {combine}).")
        elif not key:
            problems.append(f"{here}: an attribute name must not be empty.")
        else:
            _value_condition(value, where, depth + 1, problems)


def _value_condition(value: Any, path: str, depth: int, problems: list[str]) -> None:
    if depth > TARGETING_MAX_DEPTH:
        problems.append(f"{path}: nested more than {TARGETING_MAX_DEPTH} levels.")
        return
    if not isinstance(value, dict):
        return  # plain equality (GrowthBook compares JSON values strictly)
    operators = [k for k in value if k.startswith("$")]
    if operators and len(operators) != len(value):
        problems.append(f"{path}: mixes operators ({', '.join(operators)}) with plain keys.")
        return
    for operator, operand in value.items():
        _operator(operator, operand, _where(path, operator), depth, problems)


def _operator(operator: str, operand: Any, where: str, depth: int, problems: list[str]) -> None:  # noqa: C901
    if operator not in VALUE_OPERATORS:
        problems.append(f"{where}: unknown operator (supported: {' '.join(VALUE_OPERATORS)}).")
    elif operator in ("$in", "$nin"):
        if not isinstance(operand, list):
            problems.append(f"{where}: must be a list of values.")
    elif operator in _ORDERED:
        if isinstance(operand, bool) or not isinstance(operand, int | float | str):
            problems.append(f"{where}: must be a number or a string.")
    elif operator in _VERSIONS:
        if not isinstance(operand, str) or not re.fullmatch(r"v?\d+(\.\d+)*([-+][0-9A-Za-z.+-]*)?", operand):
            problems.append(f'{where}: must be a version string such as "2.10.0".')
    elif operator == "$exists":
        if not isinstance(operand, bool):
            problems.append(f"{where}: must be true or false.")
    elif operator == "$regex":
        if not isinstance(operand, str):
            problems.append(f"{where}: must be a regular expression (a string).")
        else:
            try:
                re.compile(operand)
            except re.error as exc:
                problems.append(f"{where}: not a valid regular expression ({exc}).")
    elif operator == "$not":
        _value_condition(operand, where, depth + 1, problems)
    elif operator in ("$eq", "$ne") and not isinstance(operand, _SCALAR):
        problems.append(f"{where}: must be a string, number, boolean or null.")
