"""One row per (limit, client, window): a counter incremented atomically by the database."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class RateCounter(models.Model):
    """Requests counted in one fixed window. `bucket` is `<scope>:<client>:<window number>`; rows whose
    window has ended are deleted when new windows start (see `ratelimit.counters`)."""

    bucket = models.CharField(max_length=200, primary_key=True)
    count = models.BigIntegerField()
    window_end = models.BigIntegerField(db_index=True, help_text="Unix time (s) at which the window ends.")

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(count__gte=1), name="ratecounter_count_positive")]

    def __str__(self) -> str:
        return f"{self.bucket}: {self.count}"
