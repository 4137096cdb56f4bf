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


class ShipForm(forms.Form):
    """Ship: the rationale, the treatment shipped and, when the readout blocks the ship, an override reason."""

    variant = forms.ChoiceField(help_text="The treatment that ships.")
    rationale = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Why this decision, on what evidence (required; kept with the readout snapshot).",
    )
    override_reason = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="Override reason",
        help_text=(
            "Only when the ship is blocked: why it ships anyway. It is recorded with the problems it overrides "
            "in the audit log, the decision and its bundle."
        ),
    )

    def __init__(self, *args, treatments: list[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["variant"].choices = [(k, k) for k in treatments]
        if len(treatments) == 1:
            self.fields["variant"].initial = treatments[0]
