"""Queue warehouse refreshes (background tasks) and follow them with a progress bar; for cron.

    manage.py refresh_readouts --experiment SLUG     # one experiment
    manage.py refresh_readouts --all-running         # every running experiment on a warehouse source

The refreshes run in the django-tasks worker (``manage.py db_worker``); ``--no-wait`` only queues them.
"""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from experiments.models import Experiment
from readouts.models import ReadoutSnapshot
from readouts.sources.refresh import ACTIVE, snapshot_request


class Command(BaseCommand):
    help = "Refresh warehouse readouts (background tasks): --experiment SLUG or --all-running."

    def add_arguments(self, parser):
        parser.add_argument("--experiment", metavar="SLUG")
        parser.add_argument("--all-running", action="store_true")
        parser.add_argument("--no-wait", action="store_true", help="Queue the refreshes and exit.")
        parser.add_argument("--wait-s", type=float, default=None, help="Longest wait (default: the sources' timeouts).")

    def _experiments(self, options) -> list[Experiment]:
        qs = Experiment.objects.filter(data_source__isnull=False).select_related("data_source")
        if options["experiment"]:
            exp = Experiment.objects.filter(slug=options["experiment"]).first()
            if exp is None:
                raise CommandError(f"No experiment {options['experiment']!r}.")
            if exp.data_source_id is None:
                raise CommandError(f"{exp.slug} reads Signal Dash's own events; there is nothing to refresh.")
            return [exp]
        if options["all_running"]:
            return list(qs.filter(status=Experiment.Status.RUNNING).order_by("slug"))
        raise CommandError("Give --experiment SLUG or --all-running.")

    def handle(self, *args, **options):
        experiments = self._experiments(options)
        snapshots = [snapshot_request(experiment=e, triggered_by="command")[0] for e in experiments]
        self.stdout.write(f"Queued {len(snapshots)} refresh(es).")
        if options["no_wait"] or not snapshots:
            return
        limit = options["wait_s"] or sum(e.data_source.timeout_s for e in experiments) + 60
        deadline = time.monotonic() + limit
        ids = [s.pk for s in snapshots]
        with tqdm(total=len(ids), unit="experiment", disable=options["verbosity"] == 0) as bar:
            done = 0
            while done < len(ids) and time.monotonic() < deadline:
                finished = ReadoutSnapshot.objects.filter(pk__in=ids).exclude(status__in=ACTIVE).count()
                bar.update(finished - done)
                done = finished
                if done < len(ids):
                    time.sleep(0.5)
        results = ReadoutSnapshot.objects.filter(pk__in=ids).select_related("experiment")
        failed = 0
        for s in results:
            self.stdout.write(f"{s.experiment.slug}: {s.status}{(' — ' + s.error) if s.error else ''}")
            failed += s.status == ReadoutSnapshot.Status.FAILED
        if any(s.status in ACTIVE for s in results):
            raise CommandError("Some refreshes are still queued or running (is `manage.py db_worker` running?).")
        if failed:
            raise CommandError(f"{failed} refresh(es) failed.")
