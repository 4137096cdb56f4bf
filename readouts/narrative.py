"""The readout narrative: a deterministic fallback, and an optional AI narrative around it.

One function talks to a provider (``_call_provider``); around it: a DB cache keyed by a SHA-256
fingerprint of the readout numbers (``readouts.Narrative``), a guard that discards any narrative
stating a number that is not in the readout, and the fallback for every failure (timeout, provider
error, missing key, guard). Nothing here runs on the readout page's request: the page reads the
cache (``narrative_for_page``) and fetches a fresh one in a separate request (``narrative_generate``).
"""

from __future__ import annotations

import hashlib
import json
import logging

from readouts.selectors import Readout, format_p

logger = logging.getLogger(__name__)

PROMPT_VERSION = "v1"
SIGNIFICANCE_ALPHA = 0.05
PROVIDERS = ("openai", "anthropic")

SYSTEM_PROMPT = (
    "You summarise A/B test readouts for product teams in 3 to 5 plain sentences. "
    "Use ONLY the numbers given in the readout, copied exactly as written there; never compute, round "
    "or invent other numbers, and do not mention dates. Say what the data suggests, never that it proves "
    "anything. If p is 0.05 or more, say the data does not show a clear difference. Mention every warning."
)


# --- Numbers as they are stated (shared by the fallback, the prompt and the guard) ---------------


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.2f}%"


def _pp(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.2f} percentage points"


def readout_numbers(readout: Readout) -> dict:
    """The numbers a narrative may state, formatted once; stored with each narrative and fingerprinted."""
    return {
        "experiment": readout.experiment_slug,
        "metric": readout.metric,
        "variants": [
            {
                "key": v.key,
                "name": v.name,
                "is_control": v.is_control,
                "exposed_users": v.exposures,
                "converted_users": v.conversions,
                "rate": _pct(v.rate.rate),
                "rate_ci_95": [_pct(v.rate.ci.low), _pct(v.rate.ci.high)] if v.rate.ci else None,
            }
            for v in readout.variants
        ],
        "comparisons": [
            {
                "variant": c.variant,
                "control": c.control,
                "difference": _pp(c.diff),
                "difference_ci_95": [_pp(c.diff_ci.low), _pp(c.diff_ci.high)] if c.diff_ci else None,
                "lift": "undefined" if c.lift is None else f"{c.lift:+.2f}%",
                "lift_note": c.lift_reason,
                "z": "n/a" if c.z is None else f"{c.z:.3f}",
                "p_value": format_p(c.p_value),
                "test_note": c.test_reason,
            }
            for c in readout.comparisons
        ],
        "srm": {
            "chi2": "n/a" if readout.srm.chi2 is None else f"{readout.srm.chi2:.3f}",
            "p_value": format_p(readout.srm.p_value),
        },
        "warnings": [{"code": w["code"], "message": w["message"]} for w in readout.warnings],
    }


def fingerprint(numbers: dict) -> str:
    return hashlib.sha256(json.dumps(numbers, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# --- Deterministic fallback ---------------------------------------------------------------------


def _comparison_sentence(c) -> str:
    if c.diff is None:
        return f"{c.variant} cannot be compared with {c.control}: {c.test_reason}"
    lift = c.lift_reason if c.lift is None else f"a relative lift of {c.lift:+.2f}%"
    text = (
        f"{c.variant} differs from {c.control} by {_pp(c.diff)} "
        f"(95% CI {_pp(c.diff_ci.low)} to {_pp(c.diff_ci.high)}), {lift}."
    )
    if c.p_value is None:
        return f"{text} {c.test_reason}"
    if c.p_value < SIGNIFICANCE_ALPHA:
        verdict = "suggests a real difference, though it does not prove one"
    else:
        verdict = "does not show a clear difference"
    return f"{text} The two-sided z-test gives z = {c.z:.3f}, p = {format_p(c.p_value)}, which {verdict}."


def narrative_fallback_text(readout: Readout) -> str:
    """A plain summary built only from the readout numbers (no provider involved)."""
    parts = [f"Readout of {readout.experiment_name} on metric {readout.metric}."]
    for v in readout.variants:
        role = "Control" if v.is_control else "Variant"
        if v.exposures == 0:
            parts.append(f"{role} {v.key} has no exposed users yet.")
        else:
            parts.append(
                f"{role} {v.key}: {v.conversions} of {v.exposures} exposed users converted ({_pct(v.rate.rate)})."
            )
    parts += [_comparison_sentence(c) for c in readout.comparisons]
    if readout.warnings:
        parts.append("Warnings: " + " ".join(w["message"] for w in readout.warnings))
    else:
        parts.append("No data-quality warnings.")
    return " ".join(parts)
