"""Experiments, their variants, the append-only audit log and recorded decisions.

Rules that must always hold are database constraints (named `<model>_<rule>`); the services in
`experiments/services.py` call `full_clean()` first so people get a message, not an IntegrityError.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q
from django_fsm import ConcurrentTransitionMixin, FSMField


def generate_salt() -> str:
    return secrets.token_hex(16)


class Experiment(ConcurrentTransitionMixin, models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        REVIEW = "review", "In review"
        RUNNING = "running", "Running"
        READOUT = "readout", "Readout"
        SHIPPED = "shipped", "Shipped"
        KILLED = "killed", "Killed"

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    hypothesis = models.TextField(blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_experiments")
    primary_metric = models.SlugField(max_length=100, default="conversion")
    status = FSMField(max_length=16, choices=Status.choices, default=Status.DRAFT, protected=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    salt = models.CharField(max_length=64, default=generate_salt, editable=False)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["draft", "review", "running", "readout", "shipped", "killed"]),
                name="experiment_status_valid",
            ),
            models.CheckConstraint(condition=~Q(slug=""), name="experiment_slug_not_empty"),
            models.CheckConstraint(condition=~Q(primary_metric=""), name="experiment_primary_metric_not_empty"),
        ]

    def __str__(self) -> str:
        return self.name


class Variant(models.Model):
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="variants")
    key = models.SlugField(max_length=64)
    name = models.CharField(max_length=200)
    is_control = models.BooleanField(default=False)
    weight = models.PositiveIntegerField(default=1, help_text="Relative traffic share (positive integer).")

    class Meta:
        ordering = ["experiment_id", "-is_control", "key"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "key"], name="variant_unique_key_per_experiment"),
            models.UniqueConstraint(
                fields=["experiment"],
                condition=Q(is_control=True),
                name="variant_one_control_per_experiment",
            ),
            models.CheckConstraint(condition=Q(weight__gt=0), name="variant_weight_positive"),
            models.CheckConstraint(condition=~Q(key=""), name="variant_key_not_empty"),
        ]

    def __str__(self) -> str:
        return f"{self.experiment.slug}:{self.key}"


class AuditLogQuerySet(models.QuerySet):
    def update(self, **kwargs):  # noqa: ARG002
        raise PermissionError("The audit log is append-only: rows cannot be updated.")

    def delete(self):
        raise PermissionError("The audit log is append-only: rows cannot be deleted.")


class AuditLog(models.Model):
    """One row per workflow transition or post-draft plan edit. Append-only."""

    experiment = models.ForeignKey(Experiment, on_delete=models.PROTECT, related_name="audit_entries")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    transition = models.CharField(max_length=64)
    from_state = models.CharField(max_length=16, blank=True)
    to_state = models.CharField(max_length=16, blank=True)
    comment = models.TextField(blank=True)
    extra = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = AuditLogQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["experiment", "at"], name="auditlog_experiment_at")]

    def __str__(self) -> str:
        return f"{self.experiment_id} {self.transition} {self.from_state}->{self.to_state}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise PermissionError("The audit log is append-only: rows cannot be updated.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("The audit log is append-only: rows cannot be deleted.")


class Decision(models.Model):
    class Outcome(models.TextChoices):
        SHIPPED = "shipped", "Shipped"
        KILLED = "killed", "Killed"

    experiment = models.OneToOneField(Experiment, on_delete=models.PROTECT, related_name="decision")
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    rationale = models.TextField()
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decided_at = models.DateTimeField(auto_now_add=True)
    readout_snapshot = models.JSONField(default=dict, blank=True)
    readout_bundle = models.BinaryField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-decided_at"]
        constraints = [
            models.CheckConstraint(condition=Q(outcome__in=["shipped", "killed"]), name="decision_outcome_valid"),
            models.CheckConstraint(condition=~Q(rationale=""), name="decision_rationale_not_empty"),
        ]

    def __str__(self) -> str:
        return f"{self.experiment} → {self.outcome}"
