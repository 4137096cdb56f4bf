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
