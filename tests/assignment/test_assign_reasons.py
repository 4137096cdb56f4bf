"""POST /api/assign: reasons, rule order, storage and counting of evaluations; the plan fields."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from experiments.models import Experiment
from experiments.services import WorkflowError, experiment_save_plan, preregistration_build
from tests.assignment.conftest import assign, evaluation_counts, rules_experiment
from tracking.assignment import coverage_point
from tracking.hashing import assign_variant, bucket_point, in_unit_range
from tracking.models import Assignment
from tracking.selectors import assignment_evaluations_get

pytestmark = pytest.mark.django_db
WEIGHTS = [("control", 1), ("treatment", 1)]


def test_assign__coverage__reason_follows_coverage_point(api, owner):
    # Given an experiment on 30% of traffic
    rules_experiment(owner, "cov", coverage=0.3)
    # When 200 users are assigned
    answers = {f"u{i}": assign(api, "cov", f"u{i}").json() for i in range(200)}
    # Then exactly those whose coverage point is in [0, 0.3) are enrolled, with the weights' variant
    for user, body in answers.items():
        inside = in_unit_range(coverage_point("salt-cov", user), 0, 0.3)
        assert body["in_experiment"] is inside
        assert body["reason"] == ("assigned" if inside else "outside_coverage")
        assert body["variant"] == (assign_variant("salt-cov", user, WEIGHTS) if inside else None)
    assert Assignment.objects.count() == sum(b["in_experiment"] for b in answers.values())


def test_assign__layer_range__reason_follows_layer_point(api, owner, layer):
    rules_experiment(owner, "lay", layer=layer, layer_start=0.25, layer_end=0.5)
    for i in range(100):
        body = assign(api, "lay", f"u{i}").json()
        inside = in_unit_range(bucket_point("layer-salt-checkout", f"u{i}"), 0.25, 0.5)
        assert body["reason"] == ("assigned" if inside else "outside_layer_range")


def test_assign__rule_order__targeting_before_layer_and_coverage(api, owner, layer):
    # Given a user outside everything
    rules_experiment(
        owner, "all", targeting={"country": "DE"}, coverage=0.01, layer=layer, layer_start=0, layer_end=0.01
    )
    # Then targeting is reported first
    assert assign(api, "all", "u1", {"country": "FR"}).json()["reason"] == "not_targeted"


def test_assign__evaluations_counted_per_reason__shown_on_readout(api, owner, client, make_user):
    # Given an experiment targeted at DE
    experiment = rules_experiment(owner, "cnt", targeting={"country": "DE"})
    # When 3 DE users (one twice) and 2 FR users are evaluated
    for user, country in [("a", "DE"), ("b", "DE"), ("c", "DE"), ("a", "DE"), ("d", "FR"), ("e", "FR")]:
        assert assign(api, "cnt", user, {"country": country}).status_code == 200
    # Then the counters hold 6 evaluations: 4 assigned, 2 not targeted (nothing stored for those)
    counts = evaluation_counts(experiment)
    assert counts == {"assigned": 4, "not_targeted": 2}
    assert Assignment.objects.filter(experiment=experiment).count() == 3
    summary = assignment_evaluations_get(experiment_id=experiment.pk)
    assert summary.sentence == "Of 6 assignment evaluations, 4 assigned, 2 not targeted."
    # And the readout's health section says so
    client.force_login(make_user("viewer", groups=["reviewer"]))
    page = client.get(f"/experiments/{experiment.slug}/readout")
    assert page.status_code == 200
    assert "Of 6 assignment evaluations, 4 assigned, 2 not targeted." in page.content.decode()


def test_assign__plain_experiment__answer_unchanged(api, owner):
    rules_experiment(owner, "plain")
    body = assign(api, "plain", "u9").json()
    assert body["variant"] == assign_variant("salt-plain", "u9", WEIGHTS)
    assert (body["in_experiment"], body["reason"], body["new"]) == (True, "assigned", True)


@pytest.mark.parametrize(
    ("attributes", "field"),
    [
        ("DE", "attributes"),
        ([1, 2], "attributes"),
        ({"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}, "attributes"),
        ({"blob": "x" * 9000}, "attributes"),
    ],
)
def test_assign__bad_attributes__400_with_field(api, owner, attributes, field):
    rules_experiment(owner, "bad")
    response = assign(api, "bad", "u1", attributes)
    assert response.status_code == 400
    assert field in response.json()["errors"]


def test_preregistration__includes_assignment_plan(owner, layer):
    holdout = rules_experiment(owner, "hold", weights=(("held", 5), ("general", 95)))
    experiment = rules_experiment(
        owner, "x", status="review", coverage=0.5, targeting={"plan": "pro"}, layer=layer, layer_start=0, layer_end=0.5
    )
    Experiment.objects.filter(pk=experiment.pk).update(holdout=holdout)
    experiment.refresh_from_db()
    plan = preregistration_build(experiment)
    assert plan["coverage"] == 0.5
    assert plan["targeting"] == {"plan": "pro"}
    assert plan["layer"] == {"key": "checkout", "start": 0, "end": 0.5}
    assert plan["holdout"] == "hold"


def test_plan__coverage_after_draft__locked(owner):
    experiment = rules_experiment(owner, "locked", status="review")
    experiment.coverage = 0.5
    with pytest.raises(WorkflowError) as exc:
        experiment_save_plan(experiment=experiment, actor=owner)
    assert exc.value.code == "plan_locked"


@pytest.mark.parametrize(
    ("fields", "constraint"),
    [
        ({"coverage": 0}, "experiment_coverage_range"),
        ({"coverage": 1.5}, "experiment_coverage_range"),
        ({"layer_start": 0.1, "layer_end": 0.2}, "experiment_layer_range"),  # a range without a layer
    ],
)
def test_experiment__assignment_constraints__enforced_by_database(owner, fields, constraint):
    experiment = rules_experiment(owner, "c", status="draft")
    with pytest.raises(IntegrityError, match=constraint), transaction.atomic():
        Experiment.objects.filter(pk=experiment.pk).update(**fields)


def test_experiment__layer_range_reversed__database_refuses(owner, layer):
    experiment = rules_experiment(owner, "c", status="draft")
    with pytest.raises(IntegrityError, match="experiment_layer_range"), transaction.atomic():
        Experiment.objects.filter(pk=experiment.pk).update(layer=layer, layer_start=0.6, layer_end=0.4)


def test_experiment_save__bad_layer_range__message_on_field(owner, layer):
    from django.core.exceptions import ValidationError

    experiment = Experiment(name="L", slug="l", owner=owner, layer=layer, layer_start=0.6, layer_end=0.4)
    with pytest.raises(ValidationError) as exc:
        experiment_save_plan(experiment=experiment, actor=owner)
    assert "0 ≤ start < end ≤ 1" in exc.value.message_dict["layer_end"][0]
