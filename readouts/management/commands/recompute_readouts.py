"""manage.py recompute_readouts [--experiment SLUG] [--verify]: rebuild the incremental readout sums.

The rule metrics' rollups (``readouts.metric_rollups``) are rebuilt too, for the experiment's current (frozen)
definitions; rollups of definitions no longer planned are dropped."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from experiments.models import Experiment
from experiments.selectors import experiment_metric_definitions
from readouts import catalog_metrics, metric_rollups, queries, rollups


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
        bar = tqdm(list(experiments), desc="recompute_readouts", unit="experiment", file=self.stderr, disable=None)
        for experiment in bar:
            pk, slug = experiment.pk, experiment.slug
            bar.set_postfix_str(slug)
            if options["verify"]:
                self._verify(pk, slug)
                self._verify_rules(experiment)
            result = rollups.recompute(experiment_id=pk)
            self.stdout.write(f"{slug}: rebuilt, {result.rows_changed} rows, events up to id {result.horizon.event_id}")
            definitions = _rule_definitions(experiment)
            if definitions:
                rules = metric_rollups.rebuild(experiment_id=pk, definitions=definitions)
                self.stdout.write(f"{slug}: rule metrics rebuilt ({len(definitions)}), {rules.users} users")

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

    def _verify_rules(self, experiment: Experiment) -> None:
        definitions = _rule_definitions(experiment)
        if not definitions:
            return
        exposures: dict[int, int] = {}
        for r in rollups.readout_rows(experiment_id=experiment.pk):
            if r.kind == "exposure":
                exposures[r.variant_id] = exposures.get(r.variant_id, 0) + r.users
        actual = metric_rollups.computed(experiment_id=experiment.pk, definitions=definitions, exposures=exposures)
        expected = catalog_metrics.compute(experiment_id=experiment.pk, definitions=definitions)
        differences = metric_rollups.computed_differences(expected, actual)
        if differences:
            n = len(differences)
            self.stdout.write(f"{experiment.slug}: rule metrics differed from the events in {n} place(s):")
            for line in differences[:20]:
                self.stdout.write(f"  {line}")
        else:
            self.stdout.write(f"{experiment.slug}: rule metrics equal the events")


def _rule_definitions(experiment: Experiment) -> list:
    """The experiment's rule-metric definitions (none for a warehouse experiment: its engine computes them)."""
    if experiment.data_source_id is not None:
        return []
    definitions = experiment_metric_definitions(experiment).values()
    return [d for d in definitions if not catalog_metrics.rollup_shaped(d)]
