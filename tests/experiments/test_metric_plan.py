"""The metric plan (ExperimentMetric): constraints, the primary_metric sync, the admin inline and the lock."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from experiments import services
from experiments.models import Experiment, ExperimentMetric

pytestmark = pytest.mark.django_db


@pytest.fixture
def draft(ops):
    return services.experiment_save_plan(
        experiment=Experiment(name="Plan", slug="plan", owner=ops, hypothesis="h", primary_metric="conversion"),
        actor=ops,
    )


def test_metric_save__primary__experiment_primary_metric_follows(draft, ops):
    # When a primary metric row is planned
    services.experiment_metric_save(
        metric=ExperimentMetric(experiment=draft, key="purchase", role="primary", kind="binary"), actor=ops
    )
    # Then Experiment.primary_metric equals its key, in memory and in the database
    assert draft.primary_metric == "purchase"
    assert Experiment.objects.get(pk=draft.pk).primary_metric == "purchase"
    assert [m.key for m in draft.metric_plan()] == ["purchase"]


def test_metric_plan__no_rows__legacy_binary_primary(draft):
    [metric] = draft.metric_plan()
    assert (metric.key, metric.role, metric.kind, metric.direction) == ("conversion", "primary", "binary", "increase")


def test_metric_plan__roles__primary_then_secondary_then_guardrail(draft, ops):
    for key, role in (("refund", "guardrail"), ("revenue", "secondary"), ("purchase", "primary"), ("aov", "secondary")):
        services.experiment_metric_save(metric=ExperimentMetric(experiment=draft, key=key, role=role), actor=ops)
    assert [m.key for m in draft.metric_plan()] == ["purchase", "aov", "revenue", "refund"]


def test_metric_save__second_primary__validation_error_then_integrity_error(draft, ops):
    # Given a primary metric
    services.experiment_metric_save(metric=ExperimentMetric(experiment=draft, key="a", role="primary"), actor=ops)
    # When a second primary is saved through the service, the user gets a message
    with pytest.raises(ValidationError):
        services.experiment_metric_save(metric=ExperimentMetric(experiment=draft, key="b", role="primary"), actor=ops)
    # and the database refuses it even without the service
    with pytest.raises(IntegrityError), transaction.atomic():
        ExperimentMetric.objects.create(experiment=draft, key="c", role="primary")


@pytest.mark.parametrize(
    ("field", "value"), [("role", "tertiary"), ("kind", "median"), ("direction", "sideways"), ("key", "")]
)
def test_metric_constraints__invalid_choice__integrity_error(draft, field, value):
    values = {"key": "m", "role": "secondary", "kind": "binary", "direction": "increase", field: value}
    with pytest.raises(IntegrityError), transaction.atomic():
        ExperimentMetric.objects.create(experiment=draft, **values)


def test_metric_constraints__duplicate_key__integrity_error(draft):
    ExperimentMetric.objects.create(experiment=draft, key="m")
    with pytest.raises(IntegrityError), transaction.atomic():
        ExperimentMetric.objects.create(experiment=draft, key="m")


def test_metric_save__after_draft__plan_locked(draft, ops):
    # Given an experiment that left draft
    from experiments.models import Variant

    Variant.objects.create(experiment=draft, key="a", name="A", is_control=True)
    Variant.objects.create(experiment=draft, key="b", name="B")
    services.experiment_submit_for_review(experiment=draft, actor=ops)
    # When a metric is added, Then it is refused
    with pytest.raises(services.WorkflowError) as err:
        services.experiment_metric_save(metric=ExperimentMetric(experiment=draft, key="late"), actor=ops)
    assert err.value.code == "plan_locked"


def test_plan_problems__metric_rows_without_primary__listed(draft, ops):
    services.experiment_metric_save(metric=ExperimentMetric(experiment=draft, key="x", role="secondary"), actor=ops)
    assert "a primary metric among the planned metrics" in draft.plan_problems()


def test_admin_add__metric_inline__rows_saved_and_primary_synced(client, ops, form_data):
    # Given ops in the admin
    client.force_login(ops)
    page = client.get("/admin/experiments/experiment/add/")
    data = form_data(page, "experiment_form")
    # When they add an experiment with a planned primary revenue metric
    data.update(
        {
            "name": "Rev",
            "slug": "rev",
            "hypothesis": "h",
            "metrics-0-key": "revenue",
            "metrics-0-role": "primary",
            "metrics-0-kind": "mean",
            "metrics-0-direction": "increase",
            "variants-0-key": "control",
            "variants-0-name": "Control",
            "variants-0-is_control": "on",
            "variants-1-key": "b",
            "variants-1-name": "B",
        }
    )
    response = client.post("/admin/experiments/experiment/add/", data)
    # Then the metric row exists and primary_metric follows it
    assert response.status_code == 302
    experiment = Experiment.objects.get(slug="rev")
    assert experiment.primary_metric == "revenue"
    assert list(experiment.metrics.values_list("key", "kind")) == [("revenue", "mean")]
