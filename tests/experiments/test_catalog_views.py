"""The catalog's API (/api/metrics, /api/metrics/<key>, OpenAPI), pages (/metrics/, /metrics/<key>/) and admin."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from experiments import catalog, services
from experiments.models import ExperimentMetric, Metric, MetricChange
from tracking.models import ServiceAPIKey

pytestmark = pytest.mark.django_db


@pytest.fixture
def metrics(ops):
    save = lambda **f: catalog.metric_save(metric=Metric(**f), actor=ops, source="service")  # noqa: E731
    revenue = save(key="revenue", name="Revenue", kind="mean", event="purchase", window_hours=72, cap="percentile",
                   cap_value=0.99)  # fmt: skip
    orders = save(key="orders", name="Orders", kind="mean", event="purchase", aggregation="count")
    save(key="rpo", name="Revenue per order", kind="ratio", numerator=revenue, denominator=orders)
    save(key="shop", name="Shop funnel", kind="funnel", steps=["product_view", "add_to_cart", "purchase"])
    save(key="old", name="Old", kind="binary", archived=True)
    return revenue


def _key_client(scopes=("read",)):
    client = APIClient()
    key = ServiceAPIKey.objects.create_key(name="k", scopes=",".join(scopes))[1]
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def test_api_metrics__read_key__list_of_metric_objects(metrics):
    body = _key_client().get("/api/metrics").json()
    by_key = {m["key"]: m for m in body}
    assert set(by_key) == {"revenue", "orders", "rpo", "shop", "old"}
    assert set(by_key["revenue"]) >= set(catalog.METRIC_FIELDS)
    assert by_key["rpo"]["numerator"] == "revenue" and by_key["rpo"]["denominator"] == "orders"
    assert by_key["shop"]["steps"] == ["product_view", "add_to_cart", "purchase"]
    assert by_key["revenue"]["cap_value"] == 0.99 and by_key["revenue"]["owner"] == "ops"


def test_api_metric_detail__unknown_key__404_json(metrics):
    client = _key_client()
    assert client.get("/api/metrics/revenue").json()["window_hours"] == 72
    for key in ("nope", "bad%20key", "x" * 300):
        response = client.get(f"/api/metrics/{key}")
        assert response.status_code == 404 and "detail" in response.json()


def test_api_metrics__no_auth_or_track_only_key__refused(metrics):
    assert APIClient().get("/api/metrics").status_code in (401, 403)
    assert _key_client(scopes=("track",)).get("/api/metrics").status_code == 403


def test_api_metrics__session_with_view_permission__ok(client, reviewer, metrics):
    client.force_login(reviewer)
    assert client.get("/api/metrics/orders").json()["aggregation"] == "count"


def test_openapi_schema__metric_endpoints__described(client, superuser):
    client.force_login(superuser)
    text = client.get("/api/schema/").content.decode()
    assert "/api/metrics/{key}" in text and "metric_list" in text


def test_metric_pages__list_filters_and_detail_sentence(client, reviewer, metrics, make_experiment, ops):
    exp = make_experiment("uses-revenue")
    services.experiment_metric_save(metric=ExperimentMetric(experiment=exp, metric=metrics, role="primary"), actor=ops)
    client.force_login(reviewer)
    page = client.get("/metrics/").content.decode()
    assert "used by 1 experiment" in page and "uses-revenue" in page and 'data-key="old"' not in page
    ratio_only = client.get("/metrics/?kind=ratio").content.decode()
    assert 'data-key="rpo"' in ratio_only and 'data-key="revenue"' not in ratio_only
    assert 'data-key="orders"' in client.get("/metrics/?q=order").content.decode()
    detail = client.get("/metrics/revenue/").content.decode()
    assert (
        "Revenue: sum of `value` on `purchase` events per user within 72 h of exposure, capped at the 99th "
        "percentile of all exposed users."
        in detail.replace("&#x27;", "'").replace("&quot;", '"')
        or "capped at the 99th percentile" in detail
    )
    assert client.get("/metrics/nope/").status_code == 404


def test_admin_metric__running_experiment__warning_and_audit(client, ops, metrics, make_experiment):
    exp = make_experiment("running-rev")
    services.experiment_metric_save(metric=ExperimentMetric(experiment=exp, metric=metrics, role="primary"), actor=ops)
    from experiments.models import Experiment

    approver_exp = Experiment.objects.get(pk=exp.pk)
    services.experiment_submit_for_review(experiment=approver_exp, actor=ops)
    from django.contrib.auth import get_user_model

    approver = get_user_model().objects.get(username="approver")
    services.experiment_approve_and_start(experiment=approver_exp, actor=approver)
    ops.user_permissions.add(*Permission.objects.filter(codename__in=["change_metric", "view_metric"]))
    client.force_login(ops)
    page = client.get(f"/admin/experiments/metric/{metrics.pk}/change/").content.decode()
    assert "Used by 1 running experiment (running-rev); their readouts keep the approved definition." in page


def test_admin_metric__official_without_certify__readonly(client, ops, metrics):
    metrics.official = True
    Metric.objects.filter(pk=metrics.pk).update(official=True)
    client.force_login(ops)
    response = client.post(f"/admin/experiments/metric/{metrics.pk}/change/", {"name": "x"})
    assert response.status_code == 403 or Metric.objects.get(pk=metrics.pk).name == "Revenue"
    assert not MetricChange.objects.filter(metric=metrics, action="update").exists()
