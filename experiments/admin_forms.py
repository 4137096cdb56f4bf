"""Admin forms that say in plain words what the database constraints would refuse.

Each check mirrors a named constraint in experiments/models.py and fires first, as a field error, so ops
never see `Constraint "variant_weight_positive" is violated.`; the constraints still guard every other path.
"""

from __future__ import annotations

from django import forms
from django.utils.html import format_html, format_html_join

from experiments.models import ASSIGNMENT_PLAN_FIELDS, POWER_PLAN_FIELDS, Experiment, Variant

# constraint name -> (field, plain words); the forms below enforce the same rule on that field
CONSTRAINT_MESSAGES: dict[str, tuple[str, str]] = {
    "variant_weight_positive": ("weight", "The weight must be 1 or more: it is this variant's share of the traffic."),
    "experiment_alpha_range": ("alpha", "Alpha must be above 0 and below 0.5 (0.05 is usual)."),
    "experiment_power_range": ("power", "Power must be above 0 and below 1 (0.8 is usual)."),
    "experiment_mde_positive": ("mde", "The minimum detectable effect must be above 0 (0.05 means +5%)."),
    "experiment_baseline_rate_range": ("baseline_rate", "The baseline rate must be above 0 and below 1 (0.1 = 10%)."),
    "experiment_baseline_sd_positive": ("baseline_sd", "The standard deviation must be above 0."),
}


def _message(constraint: str) -> str:
    return CONSTRAINT_MESSAGES[constraint][1]


class MetricSuggestionsWidget(forms.TextInput):
    """A text input with a <datalist> of metric keys already seen in events (suggestions, not a limit)."""

    def __init__(self, *args, suggestions: list[str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.suggestions = suggestions or []

    def render(self, name, value, attrs=None, renderer=None):
        list_id = f"{(attrs or {}).get('id', name)}-suggestions"
        attrs = {**(attrs or {}), "list": list_id}
        options = format_html_join("", '<option value="{}"></option>', ((s,) for s in self.suggestions))
        return format_html(
            '{}<datalist id="{}">{}</datalist>', super().render(name, value, attrs, renderer), list_id, options
        )


def metrics_seen(limit: int = 50) -> list[str]:
    from tracking.models import Event  # tracking depends on experiments; only the admin form needs this

    return list(Event.objects.exclude(metric="").order_by("metric").values_list("metric", flat=True).distinct()[:limit])


class ExperimentAdminForm(forms.ModelForm):
    """The plan form: the primary metric is chosen from the metric plan (or suggested from metrics seen)."""

    class Meta:
        model = Experiment
        fields = (
            "name",
            "slug",
            "owner",
            "hypothesis",
            "primary_metric",
            *POWER_PLAN_FIELDS,
            "dimensions",
            *ASSIGNMENT_PLAN_FIELDS,
        )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields.get("primary_metric")
        if field is None:  # read-only once the plan is frozen
            return
        planned = list(self.instance.metrics.values_list("key", "role")) if self.instance.pk else []
        if planned:
            keys = sorted(planned, key=lambda kr: (kr[1] != "primary", kr[0]))
            self.fields["primary_metric"] = forms.ChoiceField(
                choices=[(k, f"{k} ({role})") for k, role in keys],
                help_text="A planned metric; the row marked primary in the metric plan below wins on save.",
            )
        else:
            field.widget = MetricSuggestionsWidget(suggestions=metrics_seen())
            field.help_text = (
                "The `metric` your services send on conversions; suggestions are metrics already received. "
                "Add a metric plan below to choose from planned metrics."
            )

    def _range(self, name: str, low: float | None, high: float | None, constraint: str):
        value = self.cleaned_data.get(name)
        if value is not None and ((low is not None and value <= low) or (high is not None and value >= high)):
            raise forms.ValidationError(_message(constraint))
        return value

    def clean_alpha(self):
        return self._range("alpha", 0, 0.5, "experiment_alpha_range")

    def clean_power(self):
        return self._range("power", 0, 1, "experiment_power_range")

    def clean_mde(self):
        return self._range("mde", 0, None, "experiment_mde_positive")

    def clean_baseline_rate(self):
        return self._range("baseline_rate", 0, 1, "experiment_baseline_rate_range")

    def clean_baseline_sd(self):
        return self._range("baseline_sd", 0, None, "experiment_baseline_sd_positive")


class VariantAdminForm(forms.ModelForm):
    class Meta:
        model = Variant
        fields = ("key", "name", "is_control", "weight")

    def clean_weight(self):
        weight = self.cleaned_data.get("weight")
        if weight is not None and weight < 1:
            raise forms.ValidationError(_message("variant_weight_positive"))
        return weight
