"""Shared steps of the warehouse tests: two experiments, the dataset sent to the API and loaded into an engine."""

from __future__ import annotations

import math
from datetime import UTC, timedelta

from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from tests.readouts import warehouse_data

EXPOSURE_COLUMNS = ("experiment_key", "variant_key", "user_key", "timestamp")
EVENT_COLUMNS = ("user_key", "timestamp", "event", "value", "event_id", "channel")


def running_experiment(owner, slug: str, *, started, data_source=None):
    from experiments.models import Experiment, ExperimentMetric, Variant

    exp = Experiment.objects.create(
        name=slug,
        slug=slug,
        owner=owner,
        primary_metric="purchase",
        mde=0.1,
        baseline_rate=0.3,
        data_source=data_source,
    )
    for key in warehouse_data.VARIANTS:
        Variant.objects.create(experiment=exp, key=key, name=key.title(), is_control=key == "control")
    for key, kind in warehouse_data.METRICS.items():
        role = "primary" if key == "purchase" else "secondary"
        ExperimentMetric.objects.create(experiment=exp, key=key, role=role, kind=kind)
    Experiment.objects.filter(pk=exp.pk).update(started_at=started)
    with connection.cursor() as cursor:
        table = connection.ops.quote_name(Experiment._meta.db_table)
        cursor.execute(f"UPDATE {table} SET status = %s WHERE id = %s", ["running", exp.pk])
    exp.refresh_from_db()
    return exp


def start_time():
    return (timezone.now() - timedelta(days=10)).replace(microsecond=0)


def send_to_api(items: list[dict]) -> None:
    from tracking.models import ServiceAPIKey

    _, key = ServiceAPIKey.objects.create_key(name="warehouse-equality")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    for i in range(0, len(items), 1000):
        response = client.post("/api/track/batch", {"events": items[i : i + 1000]}, format="json")
        assert response.status_code == 200, response.content
        body = response.json()
        assert not body.get("rejected"), body["rejected"][:3]


def naive(rows: list[dict]) -> list[dict]:
    """Rows with naive UTC timestamps (what the lake holds)."""
    return [{**r, "timestamp": r["timestamp"].astimezone(UTC).replace(tzinfo=None)} for r in rows]


def keyed(rows, variant_keys: dict) -> dict:
    return {(r.kind, variant_keys.get(r.variant_id), r.metric, r.day): r for r in rows}


def assert_rows_equal(internal: dict, warehouse: dict) -> None:
    assert set(internal) == set(warehouse), (sorted(set(internal) ^ set(warehouse), key=str))[:10]
    for k, a in internal.items():
        b = warehouse[k]
        for f in ("users", "events", "late", "unexposed"):
            assert getattr(a, f) == getattr(b, f), (k, f, getattr(a, f), getattr(b, f))
        for f in ("total", "total_sq", "products", "products_bin"):
            x, y = getattr(a, f), getattr(b, f)
            assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9), (k, f, x, y)


IGNORED_JSON_KEYS = {"experiment", "computed_at", "queries", "sql", "variant_conflicts"}


def assert_json_equal(a, b, path="") -> None:
    warehouse_only = ("unknown_variants", "multiple_exposures")  # checks only a warehouse snapshot has
    if isinstance(a, list) and isinstance(b, list) and path.endswith(".checks"):
        b = [c for c in b if c.get("code") not in warehouse_only]
    if isinstance(a, list) and isinstance(b, list) and path.endswith(".deviations"):
        b = [d for d in b if d.get("check") not in warehouse_only]
    if isinstance(a, dict):
        assert isinstance(b, dict), path
        keys = set(a) - IGNORED_JSON_KEYS
        assert keys == set(b) - IGNORED_JSON_KEYS, (path, keys ^ (set(b) - IGNORED_JSON_KEYS))
        for k in keys:
            assert_json_equal(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_json_equal(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), (path, a, b)
    elif isinstance(a, str) and isinstance(b, str):
        assert _without_slugs(a) == _without_slugs(b), (path, a, b)
    else:
        assert a == b, (path, a, b)


def _without_slugs(text: str) -> str:
    """The text with the experiments' slugs and the warehouse-only check names (in a verdict's reason) left out."""
    for code in ("unknown_variants", "multiple_exposures"):
        text = text.replace(f", {code}", "")
    return text.replace("wh-exp", "X").replace("own-exp", "X")
