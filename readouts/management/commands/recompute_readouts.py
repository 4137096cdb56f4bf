"""manage.py recompute_readouts [--experiment SLUG] [--verify]: rebuild the incremental readout sums."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from experiments.models import Experiment
from readouts import queries, rollups


class Command(BaseCommand):
    help = (
        "Rebuild the readout rollups from the full aggregate query (every experiment, or one). "
        "Holds each experiment's ingest while its aggregate runs (seconds at 10M events)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--experiment", metavar="SLUG", help="only this experiment")
        parser.add_argument(
            "--verify", action="store_true", help="first compare the caught-up rollups with the aggregate and report"
        )

    def handle(self, *args, **options):
        experiments = Experiment.objects.order_by("pk")
        if options["experiment"]:
            experiments = experiments.filter(slug=options["experiment"])
            if not experiments.exists():
                raise CommandError(f"No experiment with slug {options['experiment']!r}.")
        slugs = list(experiments.values_list("pk", "slug"))
        bar = tqdm(slugs, desc="recompute_readouts", unit="experiment", file=self.stderr, disable=None)
        for pk, slug in bar:
            bar.set_postfix_str(slug)
            if options["verify"]:
                self._verify(pk, slug)
            result = rollups.recompute(experiment_id=pk)
            self.stdout.write(f"{slug}: rebuilt, {result.rows_changed} rows, events up to id {result.horizon.event_id}")

    def _verify(self, pk: int, slug: str) -> None:
        rollups.catch_up(experiment_id=pk)
        full = queries.readout_aggregate(queries.readout_aggregate_query(experiment_id=pk))
        differences = rollups.rows_differences(full, rollups._rows("default", pk))
        if differences:
            self.stdout.write(f"{slug}: rollups differed from the aggregate in {len(differences)} place(s):")
            for line in differences[:20]:
                self.stdout.write(f"  {line}")
        else:
            self.stdout.write(f"{slug}: rollups equal the aggregate")
