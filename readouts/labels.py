"""Human labels for the codes people see on pages (the API keeps the codes)."""

from __future__ import annotations

# Readout warnings (readouts.selectors) and health checks / ship problems (readouts.governance).
WARNING_LABELS: dict[str, str] = {
    "srm": "Sample ratio mismatch",
    "missing_exposures": "Arm without exposed users",
    "small_sample": "Small sample",
    "conversion_without_exposure": "Conversions without exposure",
    "conversions_without_exposure": "Conversions without exposure",
    "variant_conflict": "Users reported in another variant",
    "variant_conflicts": "Users reported in another variant",
    "no_control": "No control variant",
    "covariate_imbalance": "Pre-exposure imbalance",
    "sample_progress": "Planned sample not reached",
    "sample_not_reached": "Planned sample not reached",
    "peeking": "Looked at before the planned sample",
    "guardrail_worse": "A guardrail got worse",
    "primary_not_better": "Primary metric not better",
}

OUTCOME_LABELS: dict[str, str] = {"better": "Better", "worse": "Worse", "inconclusive": "Inconclusive"}


def warning_label(code: str) -> str:
    """The label of a warning, check or problem code; unknown codes read as words ('a_b' → 'A b')."""
    return WARNING_LABELS.get(code) or code.replace("_", " ").capitalize()
