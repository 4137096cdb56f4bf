"""metrics_export / metrics_import: the exported file imports as a no-op; a bad file is refused whole."""

from __future__ import annotations

import pytest
import yaml
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command

from experiments import catalog
from experiments.models import Metric, MetricChange

pytestmark = pytest.mark.django_db


@pytest.fixture
def certifier(make_user):
    user = make_user("certifier")
    user.user_permissions.add(Permission.objects.get(codename="certify_metric"))
    return user


@pytest.fixture
def catalog_rows(certifier):
    save = lambda **f: catalog.metric_save(metric=Metric(**f), actor=certifier)  # noqa: E731
    revenue = save(key="revenue", name="Revenue", kind="mean", event="purchase", cap="percentile", cap_value=0.99,
                   official=True, window_hours=72, filter_prop="channel", filter_values=["web"])  # fmt: skip
    orders = save(key="orders", name="Orders", kind="mean", event="purchase", aggregation="count", delay_hours=-1)
    save(key="rpo", name="RPO", kind="ratio", numerator=revenue, denominator=orders)
    save(key="shop", name="Shop", kind="funnel", steps=["product_view", "add_to_cart", "purchase"])


def test_metrics_import__exported_file__changes_nothing(catalog_rows, tmp_path, capsys):
    path = tmp_path / "metrics.yaml"
    call_command("metrics_export", str(path))
    changes = MetricChange.objects.count()
    call_command("metrics_import", str(path), "--certify", "--as", "certifier")
    assert "created 0, updated 0, unchanged 4" in capsys.readouterr().out
    assert MetricChange.objects.count() == changes
    data = yaml.safe_load(path.read_text())
    assert {m["key"] for m in data["metrics"]} == {"revenue", "orders", "rpo", "shop"}


def test_metrics_import__new_file__creates_then_second_run_is_noop(tmp_path, capsys, certifier):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"metrics": [
        {"key": "ratio", "name": "R", "kind": "ratio", "numerator": "num", "denominator": "den"},
        {"key": "num", "name": "N", "kind": "mean", "event": "purchase"},
        {"key": "den", "name": "D", "kind": "binary", "event": "visit", "window_hours": 24},
    ]}))  # fmt: skip
    call_command("metrics_import", str(path), "--as", "certifier")
    assert "created 3" in capsys.readouterr().out
    assert Metric.objects.get(key="ratio").denominator.key == "den"
    call_command("metrics_import", str(path), "--as", "certifier")
    assert "created 0, updated 0, unchanged 3" in capsys.readouterr().out


def test_metrics_import__bad_file__refused_whole_one_message_per_problem(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"metrics": [
        {"key": "fine", "name": "Fine", "kind": "binary"},
        {"key": "weird", "name": "W", "kind": "median"},
        {"key": "rpo", "name": "RPO", "kind": "ratio", "numerator": "fine"},
        {"key": "capped", "name": "C", "kind": "mean", "cap": "percentile", "cap_value": 1.5},
    ]}))  # fmt: skip
    with pytest.raises(CommandError) as excinfo:
        call_command("metrics_import", str(path))
    text = str(excinfo.value)
    assert "metric 'weird' field 'kind'" in text
    assert "metric 'rpo' field 'denominator'" in text
    assert "metric 'capped' field 'cap_value'" in text
    assert "fine" not in text.replace("numerator", "")  # the valid metric has no problem of its own
    assert not Metric.objects.exists()


def test_metrics_import__official_without_certify__refused(tmp_path, make_user):
    make_user("plain")
    path = tmp_path / "o.yaml"
    path.write_text(yaml.safe_dump({"metrics": [{"key": "o", "name": "O", "kind": "binary", "official": True}]}))
    with pytest.raises(CommandError, match="metric 'o' field 'official'"):
        call_command("metrics_import", str(path), "--certify", "--as", "plain")
    assert not Metric.objects.exists()
