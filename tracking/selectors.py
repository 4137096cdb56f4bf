"""Reads for the tracking API."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from experiments.models import Experiment
from tracking import queries


@dataclass(frozen=True, slots=True)
class IngestExperiment:
    """What ingestion needs to know about one experiment (read once per request)."""

    id: int
    slug: str
    status: str
    primary_metric: str
    salt: str
    variant_ids: dict[str, int]  # variant key -> id
    variant_weights: tuple[tuple[str, int], ...]  # (key, weight)

    @property
    def is_running(self) -> bool:
        return self.status == Experiment.Status.RUNNING

    def variant_key(self, variant_id: int) -> str:
        return next(key for key, pk in self.variant_ids.items() if pk == variant_id)


def experiments_for_ingest(*, slugs: Iterable[str]) -> dict[str, IngestExperiment]:
    """Experiments by slug with their variants, in one query whatever the number of slugs."""
    rows = queries.experiments_with_variants(sorted(set(slugs)))
    found: dict[str, IngestExperiment] = {}
    for pk, slug, status, primary_metric, salt, variant_id, key, weight in rows:
        experiment = found.get(slug)
        if experiment is None:
            experiment = found[slug] = IngestExperiment(
                id=pk,
                slug=slug,
                status=status,
                primary_metric=primary_metric,
                salt=salt,
                variant_ids={},
                variant_weights=(),
            )
        if variant_id is not None:
            experiment.variant_ids[key] = variant_id
            object.__setattr__(experiment, "variant_weights", (*experiment.variant_weights, (key, weight)))
    return found
