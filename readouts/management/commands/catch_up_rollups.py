"""manage.py catch_up_rollups: bring every live experiment's readout rollups up to the latest events (for cron).

The experiment list (``readouts.program``) reads the rollups as of their last catch-up; readout views catch up
their own experiment. Run this every few minutes so the list's verdicts stay current: after the catch-ups it
stores the verdict summary of every experiment whose inputs changed (``readouts.summaries``), so the list reads
stored summaries instead of computing them. Idempotent, and safe to run next to ingest and next to another run
(catch-ups of one experiment take turns on its watermark row).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from experiments.models import Experiment
from readouts import rollups, summaries


class Command(BaseCommand):
    help = "Catch up the readout rollups of every running experiment and every experiment in readout."

    def handle(self, *args, **options):
        live = list(
            Experiment.objects.filter(status__in=["running", "readout"]).order_by("pk").values_list("pk", "slug")
        )
        changed = 0
        for pk, slug in live:
            result = rollups.catch_up(experiment_id=pk)
            if result.mode != "none":
                changed += 1
                self.stdout.write(f"{slug}: {result.mode} catch-up")
        self.stdout.write(f"{changed} experiment(s) caught up.")
        recomputed = summaries.summaries_refresh(experiment_ids=[pk for pk, _ in live])
        self.stdout.write(f"{recomputed} verdict summar{'y' if recomputed == 1 else 'ies'} recomputed.")
