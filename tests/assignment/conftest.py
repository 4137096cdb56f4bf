"""Fixtures for assignment: running experiments with coverage, targeting, layers and holdouts."""

from __future__ import annotations

import json

import pytest

from experiments.models import Experiment, Layer
from tests.tracking.conftest import api, api_key, make_experiment, owner, set_status  # noqa: F401 - fixtures

__all__ = ["api", "api_key", "owner"]


def rules_experiment(owner, slug: str, *, weights=(("control", 1), ("treatment", 1)), status="running", **fields):
    """A running experiment (fixed salt = its slug) with the given assignment fields."""
    experiment = make_experiment(owner, slug, status="draft", weights=weights)
    Experiment.objects.filter(pk=experiment.pk).update(salt=f"salt-{slug}", **fields)
    set_status(experiment, status)
    return Experiment.objects.get(pk=experiment.pk)


@pytest.fixture
def layer():
    created = Layer.objects.create(key="checkout", name="Checkout")
    Layer.objects.filter(pk=created.pk).update(salt="layer-salt-checkout")
    created.refresh_from_db()
    return created


def evaluation_counts(experiment) -> dict[str, int]:
    """The experiment's evaluation counters per reason, summed here over their shard rows."""
    from tracking.models import AssignmentEvaluationCount

    counts: dict[str, int] = {}
    for reason, count in AssignmentEvaluationCount.objects.filter(experiment=experiment).values_list("reason", "count"):
        counts[reason] = counts.get(reason, 0) + count
    return counts


def assign(client, slug: str, user_key: str, attributes=None):
    body = {"experiment": slug, "user_key": user_key}
    if attributes is not None:
        body["attributes"] = attributes
    return client.post("/api/assign", data=json.dumps(body), content_type="application/json")


def assign_all(client, user_key: str, attributes=None, experiments=None):
    body: dict = {"user_key": user_key}
    if attributes is not None:
        body["attributes"] = attributes
    if experiments is not None:
        body["experiments"] = experiments
    return client.post("/api/assign/all", data=json.dumps(body), content_type="application/json")


@pytest.fixture(autouse=True)
def _fresh_rules_cache():
    """Experiments here are set up with queryset updates (no save signal): start every test unremembered."""
    from tracking.selectors import assignment_rules_forget

    assignment_rules_forget()
    yield
    assignment_rules_forget()
