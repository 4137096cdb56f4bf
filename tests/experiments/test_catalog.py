"""The metric catalog: constraints (ValidationError and IntegrityError), the audit trail, the data
migration, definitions frozen at approval, and ingest accepting every planned event."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from experiments import catalog, services
from experiments.models import Experiment, ExperimentMetric, Metric, MetricChange
from experiments.selectors import experiment_metric_definitions
from readouts.definitions import MetricDefinition


def metric(**fields) -> Metric:
    base = {"key": "revenue", "name": "Revenue", "kind": "mean", "event": "purchase"}
    return Metric(**{**base, **fields})


def save(m: Metric, actor=None) -> Metric:
    return catalog.metric_save(metric=m, actor=actor, source="service")


# --- constraints: clean() messages and the database's own rules --------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"kind": "median"}, "kind"),
        ({"direction": "sideways"}, "direction"),
        ({"cap": "percentile", "cap_value": 1.5}, "cap_value"),
        ({"cap": "percentile", "cap_value": None}, "cap_value"),
        ({"cap": "absolute", "cap_value": 0}, "cap_value"),
        ({"cap": "none", "cap_value": 10}, "cap_value"),
        ({"window_hours": 0}, "window_hours"),
        ({"kind": "ratio", "event": ""}, "numerator"),
        ({"kind": "funnel", "event": "", "steps": ["a"]}, "steps"),
        ({"kind": "binary", "cap": "absolute", "cap_value": 3}, "cap"),
        ({"kind": "binary", "aggregation": "count"}, "aggregation"),
        ({"filter_prop": "channel", "filter_values": []}, "filter_values"),
        ({"steps": ["a", "b"]}, "steps"),
    ],
)
def test_metric_clean__invalid_definition__validation_error_on_the_field(fields, field):
    with pytest.raises(ValidationError) as excinfo:
        save(metric(**fields))
    assert field in excinfo.value.message_dict
    assert not Metric.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "constraint"),
    [
        ({"kind": "median"}, "metric_kind_valid"),
        ({"direction": "sideways"}, "metric_direction_valid"),
        ({"aggregation": "max"}, "metric_aggregation_valid"),
        ({"cap": "percentile", "cap_value": 1.5}, "metric_cap_value_range"),
        ({"cap": "absolute", "cap_value": None}, "metric_cap_value_range"),
        ({"window_hours": -1}, "metric_window_positive"),
        ({"kind": "ratio", "event": ""}, "metric_ratio_needs_both_parts"),
        ({"kind": "funnel", "event": "", "steps": ["only-one"]}, "metric_funnel_needs_steps"),
        ({"kind": "binary", "steps": ["a", "b"]}, "metric_funnel_needs_steps"),
        ({"kind": "mean", "event": ""}, "metric_event_by_kind"),
        ({"key": ""}, "metric_key_not_empty"),
    ],
)
def test_metric_constraints__invalid_row_bypassing_clean__integrity_error(fields, constraint):
    with pytest.raises(IntegrityError) as excinfo, transaction.atomic():
        metric(**fields).save()
    # PostgreSQL names the first violated check (a bad kind can also break metric_event_by_kind).
    if connection.vendor == "postgresql":
        assert constraint in str(excinfo.value) or "metric_event_by_kind" in str(excinfo.value)


@pytest.mark.django_db
def test_metric_constraints__funnel_with_two_steps_and_ratio_with_parts__saved():
    orders = save(metric(key="orders", name="Orders", event="purchase", aggregation="count"))
    revenue = save(metric(cap="percentile", cap_value=0.99))
    ratio = save(Metric(key="revenue-per-order", name="RPO", kind="ratio", numerator=revenue, denominator=orders))
    funnel = save(Metric(key="shop", name="Shop", kind="funnel", steps=["view", "cart", "purchase"]))
    assert ratio.event == "" and funnel.event == ""
    assert catalog.metric_definition(ratio).events() == ("purchase",)
    assert catalog.metric_definition(funnel).events() == ("view", "cart", "purchase")


@pytest.mark.django_db
def test_metric_clean__event_blank__defaults_to_key():
    m = save(metric(event=""))
    assert m.event == "revenue"


@pytest.mark.django_db
def test_metric_clean__ratio_of_a_ratio__refused():
    a = save(metric(key="a", event="a"))
    b = save(metric(key="b", event="b"))
    ratio = save(Metric(key="r", name="R", kind="ratio", numerator=a, denominator=b))
    with pytest.raises(ValidationError) as excinfo:
        save(Metric(key="r2", name="R2", kind="ratio", numerator=ratio, denominator=b))
    assert "numerator" in excinfo.value.message_dict


@pytest.mark.django_db
def test_experimentmetric_constraint__adhoc_ratio__integrity_error(make_user):
    owner = make_user("o")
    experiment = Experiment.objects.create(name="E", slug="e", owner=owner)
    with pytest.raises(IntegrityError), transaction.atomic():
        ExperimentMetric.objects.create(experiment=experiment, key="x", kind="ratio")
    with pytest.raises(ValidationError):
        ExperimentMetric(experiment=experiment, key="x", kind="ratio").full_clean()


# --- audit trail and certification ------------------------------------------------------------------
@pytest.mark.django_db
def test_metric_save__create_then_edit__audited_with_before_and_after(make_user):
    actor = make_user("ops-person")
    m = save(metric(), actor)
    m.window_hours = 72
    save(m, actor)
    save(m, actor)  # no change: no row
    changes = list(MetricChange.objects.filter(metric=m).order_by("id"))
    assert [c.action for c in changes] == ["create", "update"]
    assert changes[1].actor == actor and changes[1].before["window_hours"] is None
    assert changes[1].after["window_hours"] == 72
    with pytest.raises(PermissionError):
        MetricChange.objects.all().delete()


@pytest.mark.django_db
def test_metric_save__official_without_certify_permission__refused(make_user):
    from django.contrib.auth.models import Permission

    plain, certifier = make_user("plain"), make_user("certifier")
    certifier.user_permissions.add(Permission.objects.get(codename="certify_metric"))
    with pytest.raises(PermissionDenied):
        save(metric(official=True), plain)
    m = save(metric(official=True), certifier)
    m.name = "Revenue (edited)"
    with pytest.raises(PermissionDenied):
        save(m, plain)


# --- experiments use the catalog; approval freezes the definitions ------------------------------------
@pytest.fixture
def catalog_plan(make_experiment, ops):
    """A draft with a windowed catalog primary, a ratio and a funnel (catalog rows) and an ad-hoc guardrail."""
    revenue = save(metric(cap="percentile", cap_value=0.99), ops)
    orders = save(metric(key="orders", name="Orders", aggregation="count"), ops)
    ratio = save(Metric(key="rpo", name="RPO", kind="ratio", numerator=revenue, denominator=orders), ops)
    funnel = save(Metric(key="shop", name="Shop", kind="funnel", steps=["view", "cart", "purchase"]), ops)
    conv = save(Metric(key="conv", name="Conversion", kind="binary", event="purchase", window_hours=72), ops)
    experiment = make_experiment("catalog-exp")
    for row in (
        ExperimentMetric(experiment=experiment, metric=conv, role="primary"),
        ExperimentMetric(experiment=experiment, metric=ratio, role="secondary"),
        ExperimentMetric(experiment=experiment, metric=funnel, role="secondary"),
        ExperimentMetric(experiment=experiment, key="refunds", kind="mean", role="guardrail", direction="decrease"),
    ):
        services.experiment_metric_save(metric=row, actor=ops)
    return experiment


@pytest.mark.django_db
def test_experiment_metric_save__catalog_row__takes_key_kind_direction(catalog_plan):
    row = catalog_plan.metrics.get(key="rpo")
    assert (row.kind, row.direction, row.metric.key) == ("ratio", "increase", "rpo")
    catalog_plan.refresh_from_db()
    assert catalog_plan.primary_metric == "conv"
    defs = experiment_metric_definitions(catalog_plan)
    assert list(defs) == ["conv", "rpo", "shop", "refunds"]
    assert defs["refunds"] == MetricDefinition.adhoc(key="refunds", kind="mean", direction="decrease")
    assert defs["rpo"].numerator.cap == "percentile" and defs["rpo"].denominator.aggregation == "count"


@pytest.mark.django_db
def test_approval__catalog_edited_afterwards__definitions_stay_frozen_and_edit_is_audited(catalog_plan, ops, approver):
    services.experiment_submit_for_review(experiment=catalog_plan, actor=ops)
    services.experiment_approve_and_start(experiment=catalog_plan, actor=approver)
    catalog_plan.refresh_from_db()
    approved = experiment_metric_definitions(catalog_plan)
    frozen = {m["key"]: m["definition"] for m in catalog_plan.preregistration["metrics"]}
    assert frozen == {k: d.to_dict() for k, d in approved.items()}
    assert frozen["conv"]["window_hours"] == 72 and frozen["shop"]["steps"] == ["view", "cart", "purchase"]

    revenue = Metric.objects.get(key="revenue")
    revenue.cap_value = 0.9
    save(revenue, ops)
    conv = Metric.objects.get(key="conv")
    conv.window_hours = 1
    save(conv, ops)

    catalog_plan.refresh_from_db()
    assert experiment_metric_definitions(catalog_plan) == approved
    change = MetricChange.objects.filter(metric=revenue).order_by("-id").first()
    assert change.running_experiments == ["catalog-exp"]  # used through the ratio
    assert (change.before["cap_value"], change.after["cap_value"]) == (0.99, 0.9)


@pytest.mark.django_db
def test_approval__row_events__every_planned_event(catalog_plan, ops, approver):
    from tracking.selectors import experiments_for_ingest

    services.experiment_submit_for_review(experiment=catalog_plan, actor=ops)
    services.experiment_approve_and_start(experiment=catalog_plan, actor=approver)
    ingest = experiments_for_ingest(slugs=["catalog-exp"])["catalog-exp"]
    # the revenue part (sum) needs a value; orders counts, funnel steps and the binary need none
    assert ingest.metric_kinds == {
        "purchase": "mean",
        "view": "binary",
        "cart": "binary",
        "refunds": "mean",
    }
    assert not ingest.metric_is_planned("rpo") and ingest.metric_is_planned("cart")


@pytest.mark.django_db
def test_track__ratio_part_and_funnel_step__accepted_unknown_refused(catalog_plan, ops, approver):
    from rest_framework.test import APIClient

    from tracking.models import ServiceAPIKey

    services.experiment_submit_for_review(experiment=catalog_plan, actor=ops)
    services.experiment_approve_and_start(experiment=catalog_plan, actor=approver)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {ServiceAPIKey.objects.create_key(name='svc')[1]}")

    def track(**over):
        body = {"experiment": "catalog-exp", "variant": "control", "user_key": "u1", "event_type": "conversion"}
        return client.post("/api/track", {**body, **over}, format="json")

    assert track(event_type="exposure").status_code == 201
    assert track(metric="cart").status_code == 201
    assert track(metric="view").status_code == 201
    assert track(metric="purchase", value=12.5).status_code == 201
    refused = track(metric="rpo")
    assert refused.status_code == 400 and refused.json()["error"] == "unknown_metric"
    assert track(metric="purchase").json()["error"] == "value_required"


# --- the data migration ------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_migration_0007__existing_rows__catalog_metrics_created_and_linked():
    executor = MigrationExecutor(connection)
    executor.migrate([("experiments", "0006_metric_plan_permissions")])
    old = executor.loader.project_state([("experiments", "0006_metric_plan_permissions")]).apps
    User = old.get_model("auth", "User")
    OldExperiment, OldRow = old.get_model("experiments", "Experiment"), old.get_model("experiments", "ExperimentMetric")
    owner = User.objects.create(username="legacy-owner")
    e1 = OldExperiment.objects.create(name="A", slug="a", owner=owner, salt="s1")
    e2 = OldExperiment.objects.create(name="B", slug="b", owner=owner, salt="s2")
    OldRow.objects.create(experiment=e1, key="purchase", role="primary", kind="binary", direction="increase")
    OldRow.objects.create(experiment=e1, key="revenue", role="secondary", kind="mean", direction="increase")
    OldRow.objects.create(experiment=e2, key="purchase", role="primary", kind="binary", direction="increase")
    OldRow.objects.create(experiment=e2, key="revenue", role="guardrail", kind="mean", direction="decrease")
    try:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
        metrics = {m.key: m for m in Metric.objects.all()}
        assert {k: (m.kind, m.direction, m.event, m.owner.username) for k, m in metrics.items()} == {
            "purchase": ("binary", "increase", "purchase", "legacy-owner"),
            "revenue": ("mean", "increase", "revenue", "legacy-owner"),
        }
        rows = {(r.experiment.slug, r.key): r for r in ExperimentMetric.objects.select_related("experiment")}
        assert rows[("a", "purchase")].metric_id == rows[("b", "purchase")].metric_id == metrics["purchase"].pk
        assert rows[("a", "revenue")].metric_id == metrics["revenue"].pk
        assert rows[("b", "revenue")].metric_id is None  # its direction differs: stays ad hoc
        assert rows[("b", "revenue")].events == {"revenue": "mean"}
        assert MetricChange.objects.filter(source="migration").count() == 2
    finally:
        from tests.experiments.conftest import ensure_workflow_groups

        ensure_workflow_groups()
