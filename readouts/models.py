"""Cached AI narratives (keyed by a fingerprint of the readout numbers) and recorded readout views (peeking)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class Narrative(models.Model):
    class Source(models.TextChoices):
        OPENAI = "openai", "OpenAI"
        ANTHROPIC = "anthropic", "Anthropic"
        FALLBACK = "fallback", "Deterministic fallback"

    experiment = models.ForeignKey("experiments.Experiment", on_delete=models.CASCADE, related_name="narratives")
    metric = models.CharField(max_length=100)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the readout numbers.")
    provider = models.CharField(max_length=16)
    model = models.CharField(max_length=100, blank=True)
    prompt_version = models.CharField(max_length=16)
    source = models.CharField(max_length=16, choices=Source.choices)
    text = models.TextField()
    readout_numbers = models.JSONField(default=dict)
    failure_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("regenerate_narrative", "Can regenerate the AI narrative of a readout")]
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "metric", "fingerprint", "provider", "model", "prompt_version"],
                name="narrative_unique_per_fingerprint",
            ),
            models.CheckConstraint(
                condition=Q(source__in=["openai", "anthropic", "fallback"]), name="narrative_source_valid"
            ),
            models.CheckConstraint(
                condition=Q(fingerprint__regex=r"^[0-9a-f]{64}$"), name="narrative_fingerprint_sha256"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.experiment_id} {self.source} {self.fingerprint[:8]}"


class ReadoutView(models.Model):
    """A person (session user, never an API key) opened an experiment's readout: page or API.

    The peeking check counts the views made while the experiment was running (fixed-horizon analysis);
    views of metrics or dimensions that were not pre-registered are reported as exploratory deviations.
    Written only by ``readouts.governance.readout_view_record``.
    """

    class Source(models.TextChoices):
        PAGE = "page", "Readout page"
        API = "api", "Readout API"

    experiment = models.ForeignKey("experiments.Experiment", on_delete=models.CASCADE, related_name="readout_views")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    viewed_at = models.DateTimeField(auto_now_add=True)
    status_at_view = models.CharField(max_length=16)
    source = models.CharField(max_length=8, choices=Source.choices)
    metric = models.CharField(max_length=100, blank=True)
    dimension = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-viewed_at"]
        indexes = [models.Index(fields=["experiment", "status_at_view"], name="readoutview_experiment_status")]
        constraints = [
            models.CheckConstraint(condition=Q(source__in=["page", "api"]), name="readoutview_source_valid"),
            models.CheckConstraint(condition=~Q(status_at_view=""), name="readoutview_status_not_empty"),
        ]

    def __str__(self) -> str:
        return f"{self.experiment_id} viewed by {self.user_id} while {self.status_at_view}"


class RollupWatermark(models.Model):
    """How far the incremental readout sums (``Rollup``) have read an experiment's events and covariates.

    Row-locked (``SELECT … FOR UPDATE``) by every catch-up of the experiment, so catch-ups of one
    experiment run one at a time. Written only by ``readouts.rollups``.
    """

    experiment = models.OneToOneField(
        "experiments.Experiment", on_delete=models.CASCADE, primary_key=True, related_name="rollup_watermark"
    )
    event_id = models.BigIntegerField(default=0, help_text="Events with id up to this are in the rollups.")
    covariate_id = models.BigIntegerField(default=0, help_text="Covariates with id up to this are in the rollups.")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.experiment_id}: events ≤ {self.event_id}, covariates ≤ {self.covariate_id}"


class Rollup(models.Model):
    """The readout aggregate's rows (``readouts.queries.SumsRow``) kept up to date incrementally.

    One row per (experiment, kind, variant, metric, UTC day) holding the additive increments the
    aggregate query defines; ``variant_id`` 0 stands for "no variant" (uncounted conversions), so the
    unique key has no NULL. Derived data: ``manage.py recompute_readouts`` rebuilds it from the events.
    """

    experiment = models.ForeignKey("experiments.Experiment", on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=16)
    variant_id = models.BigIntegerField()  # 0: none (uncounted); not a foreign key: derived data
    metric = models.CharField(max_length=100, blank=True)
    day = models.DateField()
    users = models.BigIntegerField(default=0)
    total = models.FloatField(default=0.0)
    total_sq = models.FloatField(default=0.0)
    products = models.FloatField(default=0.0)
    products_bin = models.FloatField(default=0.0)
    events = models.BigIntegerField(default=0)
    late = models.BigIntegerField(default=0)
    unexposed = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["experiment", "kind", "variant_id", "metric", "day"], name="rollup_key"),
            models.CheckConstraint(
                condition=Q(kind__in=["exposure", "covariate", "conversion", "uncounted"]), name="rollup_kind_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.experiment_id} {self.kind} {self.variant_id} {self.metric} {self.day}"


class DataSource(models.Model):
    """A warehouse or lake an experiment's readout is computed in (``readouts/sources/``).

    The connection URL is never stored: ``url_env`` names the environment variable that holds it
    (``postgresql://…``, ``duckdb:///path/file.duckdb``, ``sc://host:port``), read only by the runner
    at refresh time. Managed by superusers in the admin only.
    """

    class Engine(models.TextChoices):
        POSTGRESQL = "postgresql", "PostgreSQL"
        DUCKDB = "duckdb", "DuckDB"
        SPARK = "spark", "Apache Spark (Spark Connect)"

    key = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    engine = models.CharField(max_length=16, choices=Engine.choices)
    url_env = models.CharField(
        max_length=100,
        help_text="Name of the environment variable holding the connection URL (the URL itself is never stored).",
    )
    exposure_sql = models.TextField(
        help_text="A SELECT returning experiment_key, variant_key, user_key, timestamp (extra columns: dimensions)."
    )
    events_sql = models.TextField(
        help_text="A SELECT returning user_key, timestamp, event, value (nullable); optionally event_id, props."
    )
    cuped_lookback_days = models.PositiveIntegerField(
        default=14, help_text="CUPED covariate: the metric's per-user value in this many days before exposure."
    )
    timeout_s = models.PositiveIntegerField(default=300, help_text="Longest a refresh query may run (seconds).")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]
        constraints = [
            models.CheckConstraint(
                condition=Q(engine__in=["postgresql", "duckdb", "spark"]), name="datasource_engine_valid"
            ),
            models.CheckConstraint(condition=Q(url_env__regex=r"^[A-Z_][A-Z0-9_]*$"), name="datasource_url_env_name"),
            models.CheckConstraint(condition=Q(timeout_s__gt=0), name="datasource_timeout_positive"),
            models.CheckConstraint(condition=~Q(key=""), name="datasource_key_not_empty"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.engine})"


class ReadoutSnapshot(models.Model):
    """One refresh of a warehouse experiment's sums: what ran (``sql``), what came back (``rows``), or why not.

    ``rows`` holds the ``SumsRow``s as JSON (variants by key) plus the source's health counts; the
    readout reads the latest ``ok`` snapshot. Written only by ``readouts.sources.refresh``.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        OK = "ok", "OK"
        FAILED = "failed", "Failed"

    experiment = models.ForeignKey("experiments.Experiment", on_delete=models.CASCADE, related_name="snapshots")
    data_source = models.ForeignKey(DataSource, on_delete=models.PROTECT, related_name="snapshots")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    rows = models.JSONField(default=dict, blank=True)
    sql = models.TextField(blank=True)
    error = models.TextField(blank=True)
    triggered_by = models.CharField(max_length=150, blank=True, help_text="Username, or 'command' / 'cron'.")
    task_id = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["experiment", "status", "created_at"], name="snapshot_experiment_status")]
        permissions = [("refresh_readout", "Can refresh a warehouse readout")]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["queued", "running", "ok", "failed"]), name="readoutsnapshot_status_valid"
            ),
            # One refresh per experiment at a time: a second request joins the queued or running one.
            models.UniqueConstraint(
                fields=["experiment"],
                condition=Q(status__in=["queued", "running"]),
                name="readoutsnapshot_one_active_per_experiment",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.experiment_id} {self.status} {self.created_at:%Y-%m-%d %H:%M}"


class VerdictSummary(models.Model):
    """What the experiment list and its CSV show of one experiment, keyed by a fingerprint of its inputs.

    One row per experiment (the primary key); ``fingerprint`` is the SHA-256 of everything the summary is
    computed from (``readouts.summaries.summary_fingerprint``), and a reader uses the row only when it equals
    the fingerprint of the inputs it has just read. ``data``: the verdict per treatment, the primary metric's
    lift, interval and p per treatment, the failing checks, the exposed users and the result line. Derived
    data, written only by ``readouts.summaries``.
    """

    experiment = models.OneToOneField(
        "experiments.Experiment", on_delete=models.CASCADE, primary_key=True, related_name="verdict_summary"
    )
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the summary's inputs.")
    data = models.JSONField(default=dict)
    computed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(fingerprint__regex=r"^[0-9a-f]{64}$"), name="verdictsummary_fingerprint_sha256"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.experiment_id} {self.fingerprint[:8]}"


# --- catalog rule metrics: incremental per-user rollups (readouts.metric_rollups) -------------------------
class MetricRollupWatermark(models.Model):
    """How far one frozen rule-metric definition's rollups of an experiment have read its events.

    ``definition`` is the SHA-256 fingerprint of the definition's rules (``metric_rollups.fingerprint``): an
    edited catalog metric is a new fingerprint with rollups of its own, so values of two versions never mix.
    Row-locked (``FOR UPDATE``) by every catch-up. Written only by ``readouts.metric_rollups``.
    """

    experiment = models.ForeignKey("experiments.Experiment", on_delete=models.CASCADE, related_name="+")
    definition = models.CharField(max_length=64)
    event_id = models.BigIntegerField(default=0, help_text="Events with id up to this are in the rollups.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["experiment", "definition"], name="metricrollupwatermark_key"),
        ]

    def __str__(self) -> str:
        return f"{self.experiment_id} {self.definition[:12]}: events ≤ {self.event_id}"


class MetricRollup(models.Model):
    """Per (experiment, definition, series, variant, UTC day): the ``SumsRow`` conversion increments.

    ``series`` 0 is the metric's own per-user value (a ratio: its numerator; a percentile cap: uncapped, the
    readout corrects the users above the cap from ``MetricUserDay``), ``k`` ≥ 1 a funnel's step k (``users``
    = users reaching it that day), −1/−2 a percentile cap's counts (``metric_rollups.VALUE_SERIES``).
    Maintained by deltas (new minus old contribution of each user whose events changed).
    """

    experiment = models.ForeignKey("experiments.Experiment", on_delete=models.CASCADE, related_name="+")
    definition = models.CharField(max_length=64)
    series = models.SmallIntegerField(default=0)
    variant_id = models.BigIntegerField()
    day = models.DateField()
    users = models.BigIntegerField(default=0)
    total = models.FloatField(default=0.0)
    total_sq = models.FloatField(default=0.0)
    events = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "definition", "series", "variant_id", "day"], name="metricrollup_key"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.experiment_id} {self.definition[:12]} {self.series} {self.variant_id} {self.day}"


class MetricRatioRollup(models.Model):
    """Per (experiment, ratio definition, variant): Σm, Σm², Σd, Σd², Σm·d of the per-user parts (absolute caps
    applied; a percentile-capped part uncapped: the readout corrects the users above its cap). n: exposures.
    """

    experiment = models.ForeignKey("experiments.Experiment", on_delete=models.CASCADE, related_name="+")
    definition = models.CharField(max_length=64)
    variant_id = models.BigIntegerField()
    users = models.BigIntegerField(default=0, help_text="Users with a part ≠ 0 (the others add only to n).")
    numerator_sum = models.FloatField(default=0.0)
    numerator_sum_squares = models.FloatField(default=0.0)
    denominator_sum = models.FloatField(default=0.0)
    denominator_sum_squares = models.FloatField(default=0.0)
    sum_products = models.FloatField(default=0.0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["experiment", "definition", "variant_id"], name="metricratiorollup_key"),
        ]

    def __str__(self) -> str:
        return f"{self.experiment_id} {self.definition[:12]} {self.variant_id}"


class MetricUserValue(models.Model):
    """One exposed user's uncapped value (a ratio: numerator and denominator) under a definition with a
    percentile cap, so the readout takes the quantile over users and then one GROUP BY. Users whose
    values are all 0 have no row (the readout counts them from the exposures)."""

    experiment = models.ForeignKey("experiments.Experiment", on_delete=models.CASCADE, related_name="+")
    definition = models.CharField(max_length=64)
    user_key = models.CharField(max_length=255)
    variant_id = models.BigIntegerField()
    value = models.FloatField(default=0.0)
    denominator = models.FloatField(default=0.0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["experiment", "definition", "user_key"], name="metricuservalue_key"),
        ]
        indexes = [
            models.Index(fields=["experiment", "definition", "value"], name="metricuservalue_value_idx"),
            models.Index(fields=["experiment", "definition", "denominator"], name="metricuservalue_den_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.experiment_id} {self.definition[:12]} {self.user_key}"


class MetricUserDay(models.Model):
    """One exposed user's uncapped daily accrual under a percentile-capped definition (a ratio: its
    numerator): the value added that day, the cumulative value before and after it, the counted events.
    With the cap known, each row's capped increment is min(after, c) − min(before, c): one GROUP BY."""

    experiment = models.ForeignKey("experiments.Experiment", on_delete=models.CASCADE, related_name="+")
    definition = models.CharField(max_length=64)
    user_key = models.CharField(max_length=255)
    day = models.DateField()
    variant_id = models.BigIntegerField()
    is_first = models.BooleanField(default=False, help_text="The user's first counted day.")
    cum_before = models.FloatField(default=0.0, help_text="The user's uncapped value before this day.")
    cum_after = models.FloatField(default=0.0, help_text="The user's uncapped value after this day.")
    events = models.BigIntegerField(default=0)
    peak = models.FloatField(default=0.0, help_text="max(cum_before, cum_after): the cap changes the row iff above.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["experiment", "definition", "user_key", "day"], name="metricuserday_key"),
        ]
        indexes = [models.Index(fields=["experiment", "definition", "peak"], name="metricuserday_peak_idx")]

    def __str__(self) -> str:
        return f"{self.experiment_id} {self.definition[:12]} {self.user_key} {self.day}"
