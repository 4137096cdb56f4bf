"""The narrative guard: every number a narrative states must be the readout's number for that quantity.

A number in the text is classified by what the sentence attaches it to — its unit (``pp``, ``%``), the
words just before it (``p =``, ``z =``, ``lift``, ``rate``, ``chance``…), the arm named in the same
clause, and its sign (explicit ``+``/``-``/``−``, or a direction word such as *lowered* or *rose*) —
and must match a readout value of that kind, for that arm, with that sign, at the precision written.
So a sign-flipped difference, a rate attributed to the wrong arm, or a z statistic quoted as a p-value
are all refused, where a bare "is this number anywhere in the readout" check would let them through.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

NUMBER_RE = re.compile(r"(?<![\w.])[-+\u2212]?\d(?:[\d,]*\d)?(?:\.\d+)?(?:[eE][-+]?\d+)?")
# Numbers a narrative may state without them being readout values: the confidence level and the
# conventional threshold it may cite. ("p < 0.001" is allowed only where the readout itself says it.)
ALLOWED_CONSTANTS = (95.0, 0.05, 0.0)

# Which kind of quantity each key of ``readout_numbers`` holds (anything else: kind "any").
KEY_KINDS = {
    "exposed_users": "count",
    "converted_users": "count",
    "rate": "rate",
    "rate_ci_95": "rate",
    "mean": "mean",
    "mean_ci_95": "mean",
    "sd": "mean",
    "difference": "diff",
    "difference_ci_95": "diff",
    "lift": "lift",
    "lift_ci_95": "lift",
    "always_valid_lift_ci_95": "lift",
    "cuped_lift": "lift",
    "cuped_lift_ci_95": "lift",
    "p_value": "p",
    "p_value_holm": "p",
    "always_valid_p_value": "p",
    "z": "stat",
    "t": "stat",
    "chi2": "stat",
    "chance_to_beat": "chance",
}
NEGATIVE_WORDS = re.compile(
    r"\b(lower(?:ed)?|decreas(?:e|ed|ing)|drop(?:ped)?|fell|down|worse|reduc(?:e|ed|ing)|declin(?:e|ed)|loss|lost|"
    r"shrank|cut)\b",
    re.IGNORECASE,
)
POSITIVE_WORDS = re.compile(
    r"\b(higher|rais(?:e|ed)|increas(?:e|ed|ing)|rose|up|gain(?:ed)?|improv(?:e|ed|ement)|lift(?:ed)?|grew|better)\b",
    re.IGNORECASE,
)
CLAUSE_SPLIT = re.compile(r"[;,()]|\b(?:and|against|vs\.?|versus|while|whereas|compared with|than)\b", re.IGNORECASE)
SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Quantity:
    kind: str
    arm: str | None  # the variant it belongs to (per-variant values, or the treatment of a comparison)
    value: float  # signed


@dataclass(frozen=True)
class Token:
    text: str
    value: float  # absolute value as written
    decimals: int
    scientific: bool
    sign: int  # -1, 0 (none written or implied), +1
    kind: str  # count | rate | mean | diff | lift | p | stat | chance | percent (rate or lift or chance) | plain
    arm: str | None


# --- the readout side ------------------------------------------------------------------------------
def _parse(token: str) -> tuple[float, int, bool, int]:
    """(absolute value, decimals written, scientific?, explicit sign) of a number token."""
    sign = -1 if token[:1] in "-\u2212" else 1 if token[:1] == "+" else 0
    text = token.lstrip("+-\u2212").replace(",", "")
    scientific = "e" in text.lower()
    mantissa = text.lower().split("e")[0]
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    return abs(float(text)), decimals, scientific, sign


def _values(text: str) -> list[float]:
    out = []
    for token in NUMBER_RE.findall(text):
        value, _, _, sign = _parse(token)
        out.append(-value if sign < 0 else value)
    return out


def _walk(obj, key: str, arm: str | None, identifiers: list[str], out: list[Quantity]) -> None:
    if isinstance(obj, dict):
        arm = obj.get("variant") or obj.get("key") or arm
        for k, v in obj.items():
            if k not in ("variant", "key", "name", "control", "metric", "code", "experiment", "experiment_name"):
                _walk(v, k, arm, identifiers, out)
    elif isinstance(obj, list | tuple):
        for v in obj:
            _walk(v, key, arm, identifiers, out)
    elif isinstance(obj, str | int | float) and not isinstance(obj, bool):
        text = _strip(str(obj), identifiers)
        kind = KEY_KINDS.get(key, "any")
        out += [Quantity(kind, arm if kind != "any" else None, v) for v in _values(text)]


def allowed_quantities(numbers: dict) -> list[Quantity]:
    out: list[Quantity] = []
    _walk(numbers, "", None, identifiers(numbers), out)
    return out


def identifiers(numbers: dict) -> list[str]:
    names = [numbers.get("experiment", ""), numbers.get("experiment_name", ""), numbers.get("metric", "")]
    names += [m.get("metric", "") for m in numbers.get("scorecard", [])]
    for v in numbers.get("variants", []):
        names += [v["key"], v["name"]]
    return sorted({n for n in names if n}, key=len, reverse=True)


def _strip(text: str, names: list[str]) -> str:
    for name in names:
        text = text.replace(name, " ")
    return text


# --- the narrative side ------------------------------------------------------------------------------
def _arm_names(numbers: dict) -> list[tuple[str, str]]:
    """(text to find, variant key), longest first (names and keys)."""
    pairs = []
    for v in numbers.get("variants", []):
        pairs += [(v["key"], v["key"]), (v["name"], v["key"])]
    return sorted({p for p in pairs if p[0]}, key=lambda p: len(p[0]), reverse=True)


def _arm_in(text: str, arms: list[tuple[str, str]]) -> str | None:
    best, best_pos = None, -1
    lowered = text.lower()
    for name, key in arms:
        pos = lowered.rfind(name.lower())
        if pos > best_pos:
            best, best_pos = key, pos
    return best


_P_CUE = re.compile(r"\bp(?:-value)?(?:\s*\(holm\)|\s+adjusted|-adjusted)?\s*(?:=|<|>|≤|≥|of|is|was|at)?\s*$", re.I)
_STAT_CUE = re.compile(r"\b(z|t|chi-square|chi²|chi2|statistic)\s*(?:=|of|is|was)?\s*$", re.IGNORECASE)
_UNIT = re.compile(r"\s*(pp\b|percentage points?\b|%)", re.IGNORECASE)
_RANGE_TAIL = re.compile(r"\s*(?:to|and|–|—)\s*[-+\u2212]?\d[\d,]*(?:\.\d+)?", re.IGNORECASE)


def _unit(text: str, end: int) -> str:
    """The unit written after the number at ``end`` (or after the range it opens: '-0.48 to +3.68 pp')."""
    m = _UNIT.match(text, end)
    if m is None:
        r = _RANGE_TAIL.match(text, end)
        if r is not None:
            m = _UNIT.match(text, r.end())
    if m is None:
        return ""
    return "pp" if m.group(1).lower().startswith("p") else "%"


def _kind(before: str, unit: str, written_sign: int) -> str:
    window = before[-40:].lower()
    if _P_CUE.search(before):
        return "p"
    if _STAT_CUE.search(before):
        return "stat"
    if unit == "pp":
        return "diff"
    if unit == "%":
        if "chance" in window or "probabilit" in window:
            return "chance"
        if written_sign or re.search(r"lift|relative|uplift", window):
            return "lift"
        return "percent"
    return "diff" if written_sign else "plain"  # a signed bare number: a difference of means


def _sign(written: int, clause: str, kind: str) -> int:
    if written or kind not in ("diff", "lift"):
        return written
    if NEGATIVE_WORDS.search(clause):
        return -1
    if POSITIVE_WORDS.search(clause):
        return 1
    return 0


def tokens(text: str, numbers: dict) -> list[Token]:
    """Every number of the narrative with what it is attached to."""
    names = identifiers(numbers)
    arms = _arm_names(numbers)
    out = []
    for sentence in SENTENCE_SPLIT.split(text):
        inherited = None
        for clause in CLAUSE_SPLIT.split(sentence):
            if not clause:
                continue
            arm = _arm_in(clause, arms) or inherited
            inherited = arm
            stripped = _strip(clause, names)
            for m in NUMBER_RE.finditer(stripped):
                value, decimals, scientific, written = _parse(m.group())
                unit = _unit(stripped, m.end())
                kind = _kind(stripped[: m.start()], unit, written)
                if kind == "p" and unit == "%":
                    kind = "percent"
                out.append(Token(m.group(), value, decimals, scientific, _sign(written, clause, kind), kind, arm))
        # clauses are re-split per sentence: an arm never carries over a sentence boundary
    return out


# --- matching ------------------------------------------------------------------------------------------
def _close(t: Token, allowed: float) -> bool:
    if t.scientific or allowed and abs(allowed) < 1e-4:
        return math.isclose(t.value, allowed, rel_tol=0.01, abs_tol=0.0) or t.value == allowed
    # Written with `decimals` places: it matches a readout value rounded to that many places.
    return abs(round(allowed, t.decimals) - t.value) < 0.5 * 10 ** (-t.decimals - 3) or abs(allowed - t.value) < 1e-9


ACCEPTS = {
    "count": ("count", "any"),
    "rate": ("rate",),
    "mean": ("mean",),
    "diff": ("diff",),
    "lift": ("lift",),
    "p": ("p",),
    "stat": ("stat",),
    "chance": ("chance",),
    "percent": ("rate", "lift", "chance", "any"),
    "plain": ("count", "mean", "diff", "p", "stat", "any"),
}
PER_ARM = ("count", "rate", "mean")


def _matches(t: Token, q: Quantity) -> bool:
    if q.kind not in ACCEPTS[t.kind]:
        return False
    if t.arm is not None and q.arm is not None and q.kind in PER_ARM and q.arm != t.arm:
        return False
    if t.sign and q.value and (t.sign < 0) != (q.value < 0):
        return False
    return _close(t, abs(q.value))


def narrative_guard(text: str, numbers: dict) -> list[str]:
    """The numbers stated in ``text`` that are not the readout's numbers for what they are attached to."""
    allowed = allowed_quantities(numbers)
    bad = []
    for t in tokens(text, numbers):
        if t.sign >= 0 and any(_close(t, c) for c in ALLOWED_CONSTANTS) and t.kind not in ("diff", "lift"):
            continue
        if not any(_matches(t, q) for q in allowed):
            bad.append(t.text)
    return bad


def verdict_guard(text: str, numbers: dict) -> list[str]:
    """What the narrative leaves out of the verdicts (``readouts.verdicts``) it must not contradict.

    An untrustworthy treatment must be called untrustworthy, and a winner whose ship is blocked must say so;
    a narrative that calls an untrustworthy result a win, or forgets the block, is discarded.
    """
    lowered = text.lower()
    missing = []
    for v in numbers.get("verdicts", []):
        if v.get("label") == "untrustworthy" and "untrustworthy" not in lowered:
            missing.append(f"{v.get('variant')} is untrustworthy")
        elif v.get("label") == "won" and v.get("blocked_by") and "blocked" not in lowered:
            missing.append(f"{v.get('variant')}: {v.get('headline')}")
    return missing
