"""Forms for the workflow steps that need input. Field names are a contract: `comment`, `rationale`."""

from __future__ import annotations

from django import forms


class RequestChangesForm(forms.Form):
    comment = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="What must change before this experiment can be approved (required).",
    )


class DecisionForm(forms.Form):
    rationale = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Why this decision, on what evidence (required; kept with the readout snapshot).",
    )
