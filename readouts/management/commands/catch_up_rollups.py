"""manage.py catch_up_rollups: bring every live experiment's readout rollups up to the latest events (for cron).

The experiment list (``readouts.program``) reads the rollups as of their last catch-up; readout views catch up
their own experiment. The catalog rule metrics' rollups (``readouts.metric_rollups``, keyed by each frozen
definition) are caught up too, so the first readout after approval or a large ingest finds them built. Run this
every few minutes so the list's verdicts stay current: after the catch-ups it stores the verdict summary of every
experiment whose inputs changed (``readouts.summaries``), so the list reads stored summaries instead of computing
them. Idempotent, and safe to run next to ingest and next to another run (catch-ups of one experiment take turns
on its watermark row).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from experiments.models import Experiment
from experiments.selectors import experiment_metric_definitions
from readouts import metric_rollups, rollups, summaries


class Command(BaseCommand):
    help = "Catch up the readout rollups of every running experiment and every experiment in readout."

    def handle(self, *args, **options):
        live = list(Experiment.objects.filter(status__in=["running", "readout"]).order_by("pk"))
        changed = 0
        for experiment in live:
            result = rollups.catch_up(experiment_id=experiment.pk)
            rules = metric_rollups.CatchUp("none")
            if experiment.data_source_id is None:  # warehouse experiments are computed by their engine
                definitions = experiment_metric_definitions(experiment).values()
                rules = metric_rollups.catch_up(experiment_id=experiment.pk, definitions=definitions)
            if result.mode != "none" or rules.mode != "none":
                changed += 1
                self.stdout.write(f"{experiment.slug}: {result.mode} catch-up, rule metrics {rules.mode}")
        self.stdout.write(f"{changed} experiment(s) caught up.")
        recomputed = summaries.summaries_refresh(experiment_ids=[e.pk for e in live])
        self.stdout.write(f"{recomputed} verdict summar{'y' if recomputed == 1 else 'ies'} recomputed.")
