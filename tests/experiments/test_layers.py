"""Layer ranges never overlap among running experiments: approval refuses an overlap (`layer_overlap`), also
when two approvals race (PostgreSQL, separate connections), and the review page shows the refusal."""

from __future__ import annotations

import pytest

from experiments import services
from experiments.models import Experiment, Layer
from experiments.services import WorkflowError
from tests.experiments.test_concurrency import _race


def in_layer(make_experiment, ops, slug: str, layer: Layer, start: float, end: float, *, status="review"):
    """An experiment with a layer range, driven to `status` (review or running) through the services."""
    experiment = make_experiment(slug)
    experiment.layer, experiment.layer_start, experiment.layer_end = layer, start, end
    services.experiment_save_plan(experiment=experiment, actor=ops)
    services.experiment_submit_for_review(experiment=experiment, actor=ops)
    return experiment


@pytest.fixture
def layer(db):
    return Layer.objects.create(key="checkout", name="Checkout")


@pytest.mark.django_db
def test_approve__range_overlaps_running__refused_layer_overlap_with_names(make_experiment, ops, approver, layer):
    # Given a running experiment on [0, 0.5) of a layer
    first = in_layer(make_experiment, ops, "one-page", layer, 0, 0.5)
    services.experiment_approve_and_start(experiment=first, actor=approver)
    # And another in review on [0.4, 0.8)
    second = in_layer(make_experiment, ops, "express-pay", layer, 0.4, 0.8)
    # When it is approved
    with pytest.raises(WorkflowError) as exc:
        services.experiment_approve_and_start(experiment=second, actor=approver)
    # Then it is refused with the conflicting experiment's name, and stays in review
    assert exc.value.code == "layer_overlap"
    assert exc.value.problems == ["one-page"]
    assert "One Page" in exc.value.message and "0–0.5" in exc.value.message
    second.refresh_from_db()
    assert second.status == "review"


@pytest.mark.django_db
def test_approve__adjacent_ranges__both_run(make_experiment, ops, approver, layer):
    first = in_layer(make_experiment, ops, "left", layer, 0, 0.5)
    second = in_layer(make_experiment, ops, "right", layer, 0.5, 1)
    services.experiment_approve_and_start(experiment=first, actor=approver)
    services.experiment_approve_and_start(experiment=second, actor=approver)
    assert set(Experiment.objects.filter(layer=layer).values_list("status", flat=True)) == {"running"}


@pytest.mark.django_db
def test_approve__overlap_with_ended_experiment__allowed(make_experiment, ops, approver, layer):
    first = in_layer(make_experiment, ops, "old", layer, 0, 1)
    services.experiment_approve_and_start(experiment=first, actor=approver)
    services.experiment_end_for_readout(experiment=first, actor=ops)
    second = in_layer(make_experiment, ops, "new", layer, 0, 1)
    services.experiment_approve_and_start(experiment=second, actor=approver)
    assert Experiment.objects.get(slug="new").status == "running"


@pytest.mark.django_db
def test_review_page__approve_overlap__shows_layer_overlap(client, make_experiment, ops, approver, layer):
    first = in_layer(make_experiment, ops, "one-page", layer, 0, 0.5)
    services.experiment_approve_and_start(experiment=first, actor=approver)
    in_layer(make_experiment, ops, "express-pay", layer, 0.25, 0.75)
    client.force_login(approver)
    response = client.post("/review/express-pay/approve")
    assert response.status_code in (400, 409)
    assert "overlaps running experiment One Page (one-page, 0–0.5)" in response.content.decode()


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_approve__two_overlapping_approvals_race__one_wins_other_layer_overlap(make_experiment, ops, make_user):
    # Given two experiments in review with overlapping ranges of one layer, and two reviewers
    from tests.experiments.conftest import ensure_workflow_groups

    ensure_workflow_groups()
    layer = Layer.objects.create(key="race", name="Race")
    a = in_layer(make_experiment, ops, "race-a", layer, 0, 0.6)
    b = in_layer(make_experiment, ops, "race-b", layer, 0.4, 1)
    first, second = make_user("r1", groups=("reviewer",)), make_user("r2", groups=("reviewer",))
    targets = {first.pk: a.pk, second.pk: b.pk}

    def approve(_experiment, actor):
        services.experiment_approve_and_start(experiment=Experiment.objects.get(pk=targets[actor.pk]), actor=actor)

    # When both are approved at the same moment, from separate connections
    outcomes = _race(a.pk, [first, second], action=approve)
    # Then one runs and the other is refused with layer_overlap
    assert outcomes == ["ok", "refused:layer_overlap"]
    assert sorted(Experiment.objects.filter(layer=layer).values_list("status", flat=True)) == ["review", "running"]
