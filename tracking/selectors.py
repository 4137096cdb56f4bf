"""Reads for the tracking API."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from experiments.models import Experiment, Variant


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
    """Experiments by slug with their variants: two queries whatever the number of slugs."""
    rows = list(
        Experiment.objects.filter(slug__in=set(slugs)).values_list("id", "slug", "status", "primary_metric", "salt")
    )
    if not rows:
        return {}
    variants: dict[int, list[tuple[str, int, int]]] = {pk: [] for pk, *_ in rows}
    for experiment_id, variant_id, key, weight in Variant.objects.filter(experiment_id__in=variants).values_list(
        "experiment_id", "id", "key", "weight"
    ):
        variants[experiment_id].append((key, variant_id, weight))
    return {
        slug: IngestExperiment(
            id=pk,
            slug=slug,
            status=status,
            primary_metric=primary_metric,
            salt=salt,
            variant_ids={key: variant_id for key, variant_id, _ in variants[pk]},
            variant_weights=tuple((key, weight) for key, _, weight in variants[pk]),
        )
        for pk, slug, status, primary_metric, salt in rows
    }
