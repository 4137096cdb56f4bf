"""Assignments and events. Dedup and one-variant-per-user are database constraints."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.db.models.functions import Length
from rest_framework_api_key.models import AbstractAPIKey

models.CharField.register_lookup(Length)


class Assignment(models.Model):
    class Source(models.TextChoices):
        HASH = "hash", "Hash (POST /api/assign)"
        UPSTREAM = "upstream", "Upstream (first exposure)"

    # No index of its own: assignment_one_variant_per_user (experiment, user_key) serves every lookup by experiment.
    experiment = models.ForeignKey(
        "experiments.Experiment", on_delete=models.CASCADE, related_name="assignments", db_index=False
    )
    user_key = models.CharField(max_length=255)
    variant = models.ForeignKey("experiments.Variant", on_delete=models.CASCADE, related_name="assignments")
    assigned_at = models.DateTimeField(auto_now_add=True)
    source = models.CharField(max_length=16, choices=Source.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["experiment", "user_key"], name="assignment_one_variant_per_user"),
            models.CheckConstraint(condition=Q(source__in=["hash", "upstream"]), name="assignment_source_valid"),
            models.CheckConstraint(
                condition=Q(user_key__length__gt=0, user_key__length__lte=255),
                name="assignment_user_key_length",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_key} → {self.variant}"


class AssignmentReason(models.TextChoices):
    """Why `/api/assign` enrolled a user or not (docs/assignment.md, the rule order)."""

    ASSIGNED = "assigned", "assigned"
    NOT_TARGETED = "not_targeted", "not targeted"
    IN_HOLDOUT = "in_holdout", "in the holdout"
    OUTSIDE_LAYER_RANGE = "outside_layer_range", "outside the layer range"
    OUTSIDE_COVERAGE = "outside_coverage", "outside coverage"


EVALUATION_COUNT_SHARDS = 16


class AssignmentEvaluationCount(models.Model):
    """How many `/api/assign` evaluations of an experiment ended with each reason (upserted). Users who are not
    enrolled are stored nowhere else: this is their only trace.

    Every request adds to the same few (experiment, reason) counters, and an upserted row stays locked until its
    transaction commits (an fsync), so one row per reason would make concurrent requests queue on it. The count
    is spread over EVALUATION_COUNT_SHARDS rows per reason (PostgreSQL: the connection's backend pid picks the shard, so
    concurrent connections mostly write different rows); readers sum them (`assignment_evaluations_get`)."""

    # No index of its own: the (experiment, reason, shard) constraint's index serves every lookup by experiment.
    experiment = models.ForeignKey(
        "experiments.Experiment",
        on_delete=models.CASCADE,
        related_name="assignment_evaluation_counts",
        db_index=False,
    )
    reason = models.CharField(max_length=32, choices=AssignmentReason.choices)
    shard = models.PositiveSmallIntegerField(default=0)
    count = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "reason", "shard"], name="assignmentevaluationcount_one_per_reason_shard"
            ),
            models.CheckConstraint(
                condition=Q(
                    reason__in=["assigned", "not_targeted", "in_holdout", "outside_layer_range", "outside_coverage"]
                ),
                name="assignmentevaluationcount_reason_valid",
            ),
            models.CheckConstraint(
                condition=Q(shard__lt=EVALUATION_COUNT_SHARDS), name="assignmentevaluationcount_shard_range"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.experiment_id} {self.reason}: {self.count}"


class Event(models.Model):
    class EventType(models.TextChoices):
        EXPOSURE = "exposure", "Exposure"
        CONVERSION = "conversion", "Conversion"

    # No index of its own: event_readout_idx and event_experiment_time_idx both lead with it.
    experiment = models.ForeignKey(
        "experiments.Experiment", on_delete=models.CASCADE, related_name="events", db_index=False
    )
    variant = models.ForeignKey("experiments.Variant", on_delete=models.CASCADE, related_name="events")
    user_key = models.CharField(max_length=255)
    event_type = models.CharField(max_length=16, choices=EventType.choices)
    metric = models.CharField(max_length=100, blank=True, default="")
    value = models.FloatField(null=True, blank=True)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)
    props = models.JSONField(default=dict, blank=True)
    # NULL, not "", means "no event_id": the partial unique indexes below key on IS NULL.
    event_id = models.CharField(  # noqa: DJ001
        max_length=100,
        null=True,
        blank=True,
        help_text="The client's id of this event (retries of one event share it); conversions dedup on it.",
    )

    class Meta:
        constraints = [
            # Dedup. Exposures: always one per user (first wins), whatever their event_id. Conversions
            # without event_id: one per user and metric. Conversions with event_id: one per event_id
            # (a user may convert several times on one metric, each counted once however often retried).
            models.UniqueConstraint(
                fields=["experiment", "user_key", "event_type", "metric"],
                condition=Q(event_id__isnull=True) | Q(event_type="exposure"),
                name="event_dedup",
            ),
            models.UniqueConstraint(
                fields=["experiment", "event_id"], condition=Q(event_id__isnull=False), name="event_dedup_event_id"
            ),
            models.CheckConstraint(
                condition=Q(event_id__isnull=True) | Q(event_id__length__gt=0, event_id__length__lte=100),
                name="event_event_id_length",
            ),
            models.CheckConstraint(condition=Q(event_type__in=["exposure", "conversion"]), name="event_type_valid"),
            models.CheckConstraint(
                condition=Q(user_key__length__gt=0, user_key__length__lte=255), name="event_user_key_length"
            ),
            models.CheckConstraint(
                # Exposures carry no metric; every other event names one. (The event type itself is
                # checked by event_type_valid, independently, so each rule has exactly one guard.)
                condition=(Q(event_type="exposure", metric="") | (~Q(event_type="exposure") & ~Q(metric=""))),
                name="event_metric_matches_type",
            ),
        ]
        indexes = [
            # The readout aggregate scans one experiment's events by type, then joins per user.
            models.Index(
                fields=["experiment", "event_type", "metric", "user_key", "occurred_at"],
                name="event_readout_idx",
            ),
            models.Index(fields=["experiment", "occurred_at"], name="event_experiment_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type}:{self.metric or '-'} {self.user_key}"


class Covariate(models.Model):
    """A user's pre-exposure value of a metric (for CUPED), sent with their first exposure.

    Written in the transaction that creates the user's exposure row, never later (first exposure wins:
    covariates on a repeated exposure are ignored). The readout joins it to exposures on
    (experiment, user_key) and sums it per variant; a user without a row counts as 0.
    """

    # No index of its own: covariate_one_per_user_metric (experiment, user_key, metric) leads with it.
    experiment = models.ForeignKey(
        "experiments.Experiment", on_delete=models.CASCADE, related_name="covariates", db_index=False
    )
    variant = models.ForeignKey("experiments.Variant", on_delete=models.CASCADE, related_name="covariates")
    user_key = models.CharField(max_length=255)
    metric = models.CharField(max_length=100)
    value = models.FloatField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["experiment", "user_key", "metric"], name="covariate_one_per_user_metric"),
            models.CheckConstraint(
                condition=Q(user_key__length__gt=0, user_key__length__lte=255), name="covariate_user_key_length"
            ),
            models.CheckConstraint(condition=~Q(metric=""), name="covariate_metric_not_empty"),
        ]

    def __str__(self) -> str:
        return f"{self.user_key} {self.metric}={self.value}"


class VariantConflict(models.Model):
    """An event rejected because its user is already assigned to another variant (409 variant_conflict).

    Kept for the readout's data-quality report. Deduplicated like events (a retried rejection is not a
    new conflict): one row per experiment, user, event type, metric and reported variant.
    """

    # No index of its own: the conflict's unique constraint leads with it.
    experiment = models.ForeignKey(
        "experiments.Experiment", on_delete=models.CASCADE, related_name="variant_conflicts", db_index=False
    )
    user_key = models.CharField(max_length=255)
    event_type = models.CharField(max_length=16, choices=Event.EventType.choices)
    metric = models.CharField(max_length=100, blank=True, default="")
    assigned_variant = models.ForeignKey("experiments.Variant", on_delete=models.CASCADE, related_name="+")
    reported_variant = models.ForeignKey("experiments.Variant", on_delete=models.CASCADE, related_name="+")
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "user_key", "event_type", "metric", "reported_variant"],
                name="variantconflict_dedup",
            ),
            models.CheckConstraint(
                condition=~Q(assigned_variant=models.F("reported_variant")), name="variantconflict_variants_differ"
            ),
            models.CheckConstraint(
                condition=Q(event_type__in=["exposure", "conversion"]), name="variantconflict_event_type_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_key}: {self.reported_variant_id} ≠ {self.assigned_variant_id}"


class ServiceAPIKey(AbstractAPIKey):
    """A per-service API key, stored hashed (djangorestframework-api-key). Revocable in the admin.

    Scopes: `track` keys track events and get assignments; `read` keys read readouts. Keys created before
    scopes existed got `track` only (they were tracking keys; reading readouts now needs a `read` key).
    """

    class Scopes(models.TextChoices):
        TRACK = "track", "track (track events, assign)"
        READ = "read", "read (read readouts)"
        TRACK_READ = "track,read", "track and read"

    scopes = models.CharField(max_length=16, choices=Scopes.choices, default=Scopes.TRACK)

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "service API key"
        verbose_name_plural = "service API keys"
        constraints = [
            models.CheckConstraint(
                condition=Q(scopes__in=["track", "read", "track,read"]), name="serviceapikey_scopes_valid"
            )
        ]

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(self.scopes.split(","))
