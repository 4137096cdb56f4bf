"""The readout API's documented body (OpenAPI, drf-spectacular). The body itself is ``exports.readout_as_json``;
a test renders every demo readout through ``ReadoutSerializer`` to keep the two identical."""

from __future__ import annotations

from rest_framework import serializers

from readouts import governance


def _interval(help_text: str) -> serializers.ListField:
    """[low, high] or null (a fresh child field each time: DRF binds fields to one parent)."""
    return serializers.ListField(
        child=serializers.FloatField(), allow_null=True, min_length=2, max_length=2, help_text=help_text
    )


class VariantSerializer(serializers.Serializer):
    key = serializers.CharField()
    name = serializers.CharField()
    is_control = serializers.BooleanField()
    weight = serializers.IntegerField()
    exposures = serializers.IntegerField(help_text="Distinct exposed users.")
    conversions = serializers.IntegerField(help_text="Distinct users with a counted conversion (at or after exposure).")
    rate = serializers.FloatField(allow_null=True, help_text="conversions / exposures (fraction); null without users.")
    rate_ci = _interval("95% Wilson interval of the rate [low, high].")
    n = serializers.IntegerField(help_text="Exposed users (sufficient statistic).")
    sum = serializers.FloatField(help_text="Sum of per-user values (binary: converted users).")
    sum_squares = serializers.FloatField(help_text="Sum of squared per-user values.")
    mean = serializers.FloatField(allow_null=True, help_text="sum / n (binary: the rate).")
    sd = serializers.FloatField(allow_null=True, help_text="Binary: sqrt(p(1-p)); mean: sample SD (n-1).")
    note = serializers.CharField(required=False)


class SequentialSerializer(serializers.Serializer):
    rel_lift_ci = _interval("Always-valid confidence sequence for the relative lift (Waudby-Smith et al. 2023).")
    p_value = serializers.FloatField(allow_null=True, help_text="Always-valid p-value.")
    p_value_adjusted = serializers.FloatField(allow_null=True, help_text="Holm over the family (null outside it).")


class BayesSerializer(serializers.Serializer):
    chance_to_beat = serializers.FloatField(allow_null=True, help_text="P(treatment is better), read with direction.")
    expected_loss = serializers.FloatField(allow_null=True, help_text="Relative expected loss of shipping it.")
    rel_lift_ci = _interval("Credible interval of the relative lift.")


class CupedSerializer(serializers.Serializer):
    theta = serializers.FloatField()
    rel_lift = serializers.FloatField(allow_null=True)
    rel_lift_ci = _interval("CUPED-adjusted interval of the relative lift.")
    p_value = serializers.FloatField(allow_null=True)
    variance_reduction = serializers.FloatField(allow_null=True)
    note = serializers.CharField(required=False)


class ComparisonSerializer(serializers.Serializer):
    variant = serializers.CharField()
    control = serializers.CharField()
    diff = serializers.FloatField(allow_null=True, help_text="Treatment minus control (binary: rate fraction).")
    diff_ci = _interval("Binary: 95% Wald; mean: Welch interval.")
    lift = serializers.FloatField(allow_null=True, help_text="Relative lift in percent; null when undefined.")
    z = serializers.FloatField(allow_null=True, help_text="Binary: pooled two-proportion z; null for mean metrics.")
    t = serializers.FloatField(required=False, allow_null=True, help_text="Mean metrics: Welch t.")
    df = serializers.FloatField(required=False, allow_null=True, help_text="Mean metrics: Welch-Satterthwaite df.")
    p_value = serializers.FloatField(allow_null=True, help_text="Binary: pooled z-test; mean: Welch t-test.")
    rel_lift = serializers.FloatField(allow_null=True, help_text="(mean_B - mean_A) / mean_A, a fraction.")
    rel_lift_ci = _interval("Delta-method interval, Student t with Welch-Satterthwaite df.")
    p_value_adjusted = serializers.FloatField(
        allow_null=True, help_text="Holm over every treatment x primary and secondary metric; null for others."
    )
    sequential = SequentialSerializer()
    bayes = BayesSerializer()
    cuped = CupedSerializer(allow_null=True)
    outcome = serializers.ChoiceField(choices=["better", "worse", "inconclusive"])
    lift_note = serializers.CharField(required=False)
    note = serializers.CharField(required=False)


class ScorecardComparisonSerializer(serializers.Serializer):
    variant = serializers.CharField()
    rel_lift = serializers.FloatField(allow_null=True)
    rel_lift_ci = _interval("As in comparisons.")
    p_value = serializers.FloatField(allow_null=True)
    p_value_adjusted = serializers.FloatField(allow_null=True)
    outcome = serializers.ChoiceField(choices=["better", "worse", "inconclusive"])


class ScorecardMetricSerializer(serializers.Serializer):
    metric = serializers.CharField()
    role = serializers.ChoiceField(choices=["primary", "secondary", "guardrail"])
    kind = serializers.ChoiceField(choices=["binary", "mean"])
    direction = serializers.ChoiceField(choices=["increase", "decrease"])
    comparisons = ScorecardComparisonSerializer(many=True)


class WarningSerializer(serializers.Serializer):
    code = serializers.ChoiceField(
        choices=[
            "small_sample",
            "srm",
            "missing_exposures",
            "conversion_without_exposure",
            "variant_conflict",
            "no_control",
        ]
    )
    message = serializers.CharField()


class SRMSerializer(serializers.Serializer):
    chi2 = serializers.FloatField(allow_null=True)
    p_value = serializers.FloatField(allow_null=True)
    note = serializers.CharField(required=False)


class PlanSerializer(serializers.Serializer):
    users_per_arm = serializers.IntegerField(allow_null=True, help_text="Control-arm users the power plan needs.")
    expected_days = serializers.IntegerField(allow_null=True)
    progress = serializers.FloatField(allow_null=True, help_text="Smallest arm's n / users_per_arm.")
    note = serializers.CharField(required=False)


class ExperimentRefSerializer(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    status = serializers.CharField()


class CorrectionSerializer(serializers.Serializer):
    method = serializers.ChoiceField(choices=["holm"])
    family_size = serializers.IntegerField()


class DataQualitySerializer(serializers.Serializer):
    conversions_without_exposure = serializers.IntegerField()
    variant_conflicts = serializers.IntegerField(allow_null=True)


class CheckSerializer(serializers.Serializer):
    # Every check governance can report (the readout's checks, then the warehouse exposure checks).
    code = serializers.ChoiceField(
        choices=list(dict.fromkeys([*governance.CHECK_CODES, *(code for code, _, _ in governance.EXPOSURE_HEALTH)]))
    )
    status = serializers.ChoiceField(choices=["ok", "warn", "fail"])
    value = serializers.FloatField(
        allow_null=True,
        help_text=(
            "srm, covariate_imbalance: a p-value; conversions_without_exposure, variant_conflicts: a share (0-1); "
            "sample_progress: smallest arm's users / its planned users; peeking: views while running; "
            "multiple_exposures: users exposed to more than one variant; unknown_variants (warehouse sources only): "
            "exposure rows naming no variant of the experiment. "
            "Null when not computable (the message says why)."
        ),
    )
    threshold = serializers.DictField(
        child=serializers.FloatField(),
        help_text='{"warn": x} and/or {"fail": y}: p-values below, shares/counts above, progress below (see docs).',
    )
    message = serializers.CharField()


class DeviationSerializer(serializers.Serializer):
    code = serializers.ChoiceField(
        choices=["check", "stopped_early", "exploratory_metric", "exploratory_dimension", "duration"]
    )
    message = serializers.CharField()
    check = serializers.CharField(required=False, help_text="code=check: the check's code.")
    status = serializers.ChoiceField(choices=["warn", "fail"], required=False, help_text="code=check.")
    progress = serializers.FloatField(required=False, allow_null=True, help_text="code=stopped_early.")
    metric = serializers.CharField(required=False, help_text="code=exploratory_metric.")
    dimension = serializers.CharField(required=False, help_text="code=exploratory_dimension.")
    views = serializers.IntegerField(required=False, help_text="Recorded readout views (people, not API keys).")
    days_run = serializers.FloatField(required=False, help_text="code=duration.")
    days_planned = serializers.IntegerField(required=False, help_text="code=duration.")


class SliceVariantSerializer(serializers.Serializer):
    key = serializers.CharField()
    n = serializers.IntegerField(help_text="Exposed users in the slice.")
    mean = serializers.FloatField(allow_null=True, help_text="Per-user mean (binary: the conversion rate).")


class SliceComparisonSerializer(serializers.Serializer):
    variant = serializers.CharField()
    rel_lift = serializers.FloatField(allow_null=True)
    rel_lift_ci = _interval("Delta-method interval, as in comparisons.")
    p_value = serializers.FloatField(allow_null=True, help_text="Binary: pooled z-test; mean: Welch t-test.")
    p_value_adjusted = serializers.FloatField(allow_null=True, help_text="Holm over all slices x treatments.")
    chance_to_beat = serializers.FloatField(
        allow_null=True, help_text="Registered dimensions only (null for an exploratory breakdown)."
    )


class SliceSerializer(serializers.Serializer):
    value = serializers.CharField(help_text="The prop's value as text; '(other)' beyond the 20 largest; '(none)'.")
    variants = SliceVariantSerializer(many=True)
    comparisons = SliceComparisonSerializer(many=True)


class DimensionSerializer(serializers.Serializer):
    key = serializers.CharField()
    registered = serializers.BooleanField(help_text="False: not pre-registered, exploratory.")
    unavailable = serializers.CharField(
        required=False, help_text="Why there are no slices (an experiment on a warehouse source); absent otherwise."
    )
    slices = SliceSerializer(many=True)


class VerdictSerializer(serializers.Serializer):
    variant = serializers.CharField(help_text="The treatment's key.")
    label = serializers.ChoiceField(
        choices=["won", "lost", "inconclusive", "untrustworthy"],
        help_text="untrustworthy: a sample-ratio mismatch or a failing health check; else the primary outcome.",
    )
    reason = serializers.CharField(help_text="The verdict in one or two sentences, numbers in words.")
    blocked_by = serializers.ListField(
        child=serializers.ChoiceField(choices=["srm", "guardrail_worse", "primary_not_better", "sample_not_reached"]),
        help_text="The ship-guard problem codes that hold for this treatment.",
    )


class ReadoutSerializer(serializers.Serializer):
    experiment = ExperimentRefSerializer()
    verdicts = VerdictSerializer(many=True, help_text="One per treatment, judged on the primary metric.")
    metric = serializers.CharField()
    metrics = serializers.ListField(child=serializers.CharField())
    metric_kind = serializers.ChoiceField(choices=["binary", "mean"])
    metric_role = serializers.ChoiceField(choices=["primary", "secondary", "guardrail", "exploratory"])
    direction = serializers.ChoiceField(choices=["increase", "decrease"])
    alpha = serializers.FloatField()
    analysis = serializers.ChoiceField(choices=["fixed", "sequential"])
    correction = CorrectionSerializer()
    computed_at = serializers.DateTimeField()
    variants = VariantSerializer(many=True)
    comparisons = ComparisonSerializer(many=True)
    scorecard = ScorecardMetricSerializer(many=True)
    plan = PlanSerializer()
    warnings = WarningSerializer(many=True)
    srm = SRMSerializer()
    data_quality = DataQualitySerializer()
    checks = CheckSerializer(many=True, help_text="Every health check, always all six codes.")
    deviations = DeviationSerializer(many=True, help_text="Every difference from the pre-registration.")
    dimension = DimensionSerializer(required=False, help_text="Only with ?dimension=<prop>.")


class TimeseriesPointSerializer(serializers.Serializer):
    day = serializers.DateField()
    rel_lift = serializers.FloatField(allow_null=True)
    rel_lift_ci = _interval("Fixed-horizon interval, as of that day (cumulative).")
    sequential = serializers.DictField(help_text='{"rel_lift_ci": [low, high]}: the always-valid interval.')
    n = serializers.DictField(child=serializers.IntegerField(), help_text="Exposed users so far per arm.")


class TimeseriesTreatmentSerializer(serializers.Serializer):
    variant = serializers.CharField()
    points = TimeseriesPointSerializer(many=True)


class TimeseriesSerializer(serializers.Serializer):
    experiment = serializers.CharField()
    metric = serializers.CharField()
    metric_kind = serializers.ChoiceField(choices=["binary", "mean"])
    alpha = serializers.FloatField()
    days = serializers.ListField(child=serializers.DateField())
    treatments = TimeseriesTreatmentSerializer(many=True)


class ReadoutErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


class ReadoutBadRequestSerializer(serializers.Serializer):
    metric = serializers.CharField(required=False, help_text="Why the metric key is malformed.")
    dimension = serializers.CharField(required=False, help_text="Why the dimension key is malformed.")


class DatabaseUnavailableSerializer(serializers.Serializer):
    error = serializers.ChoiceField(choices=["database_unavailable"])
    detail = serializers.CharField()
