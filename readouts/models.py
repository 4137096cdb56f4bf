"""Cached AI narratives, keyed by a fingerprint of the readout numbers they were written from."""

from __future__ import annotations

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
