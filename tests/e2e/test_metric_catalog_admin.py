"""The metric catalog in the admin, in a real browser: editing a catalog metric that running experiments use
is allowed, warns ("used by N running experiments; their readouts keep the approved definition"), is audited,
and leaves the running experiments' frozen definitions as they were approved."""

from __future__ import annotations

import pytest

from experiments import catalog, services
from experiments.models import Experiment, ExperimentMetric, Metric, MetricChange, Variant
from experiments.selectors import experiment_metric_definitions

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WARNING = "Used by 2 running experiments (rev-a, rev-b); their readouts keep the approved definition."


@pytest.fixture
def people(make_user):
    return {
        "ops": make_user("ops", groups=("ops",), is_staff=True),
        "approver": make_user("approver", groups=("reviewer",)),
    }


def _experiment_using(metric: Metric, slug: str, *, ops, approver, start: bool) -> Experiment:
    experiment = services.experiment_save_plan(
        experiment=Experiment(name=slug, slug=slug, hypothesis="Revenue goes up.", owner=ops), actor=ops
    )
    services.variant_save(variant=Variant(experiment=experiment, key="control", name="C", is_control=True), actor=ops)
    services.variant_save(variant=Variant(experiment=experiment, key="green", name="G"), actor=ops)
    services.experiment_metric_save(
        metric=ExperimentMetric(experiment=experiment, metric=metric, role="primary"), actor=ops
    )
    if start:
        services.experiment_submit_for_review(experiment=experiment, actor=ops)
        services.experiment_approve_and_start(experiment=Experiment.objects.get(pk=experiment.pk), actor=approver)
    return Experiment.objects.get(pk=experiment.pk)


def _messages(page) -> str:
    box = page.locator(".messagelist")
    return box.inner_text() if box.count() else ""


def test_metric_admin__used_by_running_experiments__warns_on_open_and_save_and_keeps_frozen(
    people, login, page, live_server
):
    ops, approver = people["ops"], people["approver"]
    revenue = catalog.metric_save(
        metric=Metric(key="revenue", name="Revenue", kind="mean", event="purchase", window_hours=72),
        actor=ops,
        source="service",
    )
    running = [_experiment_using(revenue, s, ops=ops, approver=approver, start=True) for s in ("rev-a", "rev-b")]
    _experiment_using(revenue, "rev-draft", ops=ops, approver=approver, start=False)  # a draft does not count
    frozen_before = {e.slug: experiment_metric_definitions(e) for e in running}
    assert frozen_before["rev-a"]["revenue"].window_hours == 72

    # Given ops in the admin, when they open the metric's change page
    login("ops")
    page.goto(f"{live_server.url}/admin/experiments/metric/{revenue.pk}/change/")
    # Then the warning names the two running experiments (not the draft)
    assert WARNING in _messages(page)
    assert page.locator(".messagelist .warning").count() == 1

    # When they shorten the window and save
    page.fill("#id_window_hours", "24")
    page.click("input[name=_continue]")
    page.wait_for_load_state()
    # Then the save succeeded, and the warning is shown again with the confirmation
    text = _messages(page)
    assert "was changed successfully" in text
    assert WARNING in text
    assert float(page.input_value("#id_window_hours")) == 24

    # And the edit is in the audit trail (who, before/after, which running experiments)
    revenue.refresh_from_db()
    assert revenue.window_hours == 24
    change = MetricChange.objects.filter(metric=revenue, source="admin").get()
    assert change.actor_id == ops.pk
    assert (change.before["window_hours"], change.after["window_hours"]) == (72, 24)
    assert sorted(change.running_experiments) == ["rev-a", "rev-b"]
    # And the running experiments still compute from the definition they were approved with
    for experiment in running:
        experiment.refresh_from_db()
        assert experiment_metric_definitions(experiment) == frozen_before[experiment.slug]


def test_metric_admin__no_running_experiment__no_warning(people, login, page, live_server):
    ops = people["ops"]
    orders = catalog.metric_save(
        metric=Metric(key="orders", name="Orders", kind="mean", event="purchase", aggregation="count"),
        actor=ops,
        source="service",
    )
    _experiment_using(orders, "orders-draft", ops=ops, approver=people["approver"], start=False)
    login("ops")
    page.goto(f"{live_server.url}/admin/experiments/metric/{orders.pk}/change/")
    assert page.locator("h1").count() == 1
    assert "running experiment" not in _messages(page)
    page.fill("#id_name", "Orders per user")
    page.click("input[name=_continue]")
    page.wait_for_load_state()
    text = _messages(page)
    assert "was changed successfully" in text and "running experiment" not in text
