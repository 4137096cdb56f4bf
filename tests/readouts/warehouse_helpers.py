"""Shared steps of the warehouse tests: two experiments, the dataset sent to the API and loaded into an engine."""

from __future__ import annotations

import math
from datetime import UTC, timedelta

from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from tests.readouts import warehouse_data

EXPOSURE_COLUMNS = ("experiment_key", "variant_key", "user_key", "timestamp", "country")
EVENT_COLUMNS = ("user_key", "timestamp", "event", "value", "event_id", "channel")


def catalog_metrics(owner) -> dict:
    """The dataset's catalog metrics (``warehouse_data.CATALOG``), created once per test database."""
    from experiments import catalog
    from experiments.models import Metric

    out = {}
    for key, fields in warehouse_data.CATALOG.items():
        existing = Metric.objects.filter(key=key).first()
        if existing is not None:
            out[key] = existing
            continue
        fields = dict(fields)
        for part in ("numerator", "denominator"):
            if part in fields:
                fields[part] = out[fields[part]]
        out[key] = catalog.metric_save(metric=Metric(key=key, name=key, **fields), actor=owner, source="service")
    return out


def running_experiment(owner, slug: str, *, started, data_source=None, with_catalog: bool = False):
    from experiments import services
    from experiments.models import Experiment, ExperimentMetric, Variant

    exp = Experiment.objects.create(
        name=slug,
        slug=slug,
        owner=owner,
        primary_metric="purchase",
        mde=0.1,
        baseline_rate=0.3,
        data_source=data_source,
        dimensions=["country"],
    )
    for key in warehouse_data.VARIANTS:
        Variant.objects.create(experiment=exp, key=key, name=key.title(), is_control=key == "control")
    for key, kind in warehouse_data.METRICS.items():
        role = "primary" if key == "purchase" else "secondary"
        ExperimentMetric.objects.create(experiment=exp, key=key, role=role, kind=kind)
    if with_catalog:
        for metric in catalog_metrics(owner).values():
            services.experiment_metric_save(
                metric=ExperimentMetric(experiment=exp, metric=metric, role="secondary"), actor=owner
            )
    Experiment.objects.filter(pk=exp.pk).update(started_at=started)
    with connection.cursor() as cursor:
        table = connection.ops.quote_name(Experiment._meta.db_table)
        cursor.execute(f"UPDATE {table} SET status = %s WHERE id = %s", ["running", exp.pk])
    exp.refresh_from_db()
    return exp


def start_time():
    return (timezone.now() - timedelta(days=10)).replace(microsecond=0)


def send_to_api(items: list[dict]) -> dict[str, int]:
    """Post the items in batches of 1000; returns the rejections by error (nothing else may be rejected)."""
    from tracking.models import ServiceAPIKey

    _, key = ServiceAPIKey.objects.create_key(name="warehouse-equality")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    rejected: dict[str, int] = {}
    for i in range(0, len(items), 1000):
        response = client.post("/api/track/batch", {"events": items[i : i + 1000]}, format="json")
        assert response.status_code == 200, response.content
        for r in response.json().get("rejected", []):
            rejected[r["error"]] = rejected.get(r["error"], 0) + 1
    assert set(rejected) <= {"unknown_variant", "variant_conflict"}, rejected
    return rejected


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


def metric_rows(readout) -> dict:
    """Every planned metric's SumsRows (``Readout.metric_rows``) by (kind, variant key, metric, day), summed per
    key (the internal side has one uncounted row per event a metric reads, the warehouse one per metric)."""
    from readouts.queries import SumsRow

    keys = {v.id: v.key for v in readout.selected.variants}
    out: dict = {}
    for rows in readout.metric_rows.values():
        for r in rows:
            k = (r.kind, keys.get(r.variant_id), r.metric, r.day)
            if r.kind == "exposure":
                out[k] = r
                continue
            old = out.get(k)
            if old is None:
                out[k] = r
            else:
                fields = ("users", "total", "total_sq", "products", "products_bin", "events", "late", "unexposed")
                out[k] = SumsRow(
                    r.kind, r.variant_id, r.metric, r.day, *(getattr(old, f) + getattr(r, f) for f in fields)
                )
    return out


SUM_FIELDS = ("users", "total", "total_sq", "products", "products_bin", "events", "late", "unexposed")
IGNORED_JSON_KEYS = {"experiment", "computed_at", "queries", "sql", "variant_conflicts"}
# Only one side has these: unknown_variants (a warehouse snapshot's rows with unknown keys, which the API rejects),
# and variant conflicts (what the API records when a user's exposure names a second variant; those users are the
# multiple_exposures check on both sides, which is compared).
ONE_SIDED_CHECKS = ("unknown_variants", "variant_conflicts")
ONE_SIDED_WARNINGS = ("variant_conflict",)


def _one_sided(items: list, path: str) -> list:
    if path.endswith(".checks"):
        return [c for c in items if c.get("code") not in ONE_SIDED_CHECKS]
    if path.endswith(".deviations"):
        return [d for d in items if d.get("check") not in ONE_SIDED_CHECKS]
    if path.endswith(".warnings"):
        return [w for w in items if w.get("code") not in ONE_SIDED_WARNINGS]
    return items


def assert_json_equal(a, b, path="") -> None:
    if isinstance(a, list) and isinstance(b, list):
        a, b = _one_sided(a, path), _one_sided(b, path)
    if isinstance(a, dict):
        assert isinstance(b, dict), path
        keys = set(a) - IGNORED_JSON_KEYS
        assert keys == set(b) - IGNORED_JSON_KEYS, (path, keys ^ (set(b) - IGNORED_JSON_KEYS))
        for k in keys:
            assert_json_equal(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), (path, a, b)
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_json_equal(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), (path, a, b)
    elif isinstance(a, str) and isinstance(b, str):
        assert _without_slugs(a) == _without_slugs(b), (path, a, b)
    else:
        assert a == b, (path, a, b)


def _without_slugs(text: str) -> str:
    """The text with the experiments' slugs and the one-sided check names (in a verdict's reason) left out."""
    for code in ONE_SIDED_CHECKS:
        text = text.replace(f", {code}", "").replace(f"{code}, ", "")
    return text.replace("wh-exp", "X").replace("own-exp", "X")


def assert_same_readouts(internal, warehouse, ds) -> None:
    """Every planned metric's SumsRows equal to 1e-9 and every statistic of every metric's readout JSON equal."""
    from readouts.exports import readout_as_json
    from readouts.selectors import readout_get

    a, b = readout_get(experiment=internal), readout_get(experiment=warehouse)
    assert a.health == {"multiple_exposures": ds.multiple_exposure_users}
    assert b.health == {"multiple_exposures": ds.multiple_exposure_users, "unknown_variants": ds.unknown_variant_rows}
    ra, rb = metric_rows(a), metric_rows(b)
    assert_rows_equal(ra, rb)
    assert {k[2] for k in ra} >= set(warehouse_data.CATALOG) | set(warehouse_data.METRICS)
    for metric in [*warehouse_data.METRICS, *warehouse_data.CATALOG]:
        ja = readout_as_json(readout_get(experiment=internal, metric=metric))
        jb = readout_as_json(readout_get(experiment=warehouse, metric=metric))
        assert_json_equal(ja, jb)
    assert_same_breakdowns(internal, warehouse)


def assert_same_breakdowns(internal, warehouse) -> None:
    """Every metric broken down by the exposures' ``country`` (a prop on the API side, an extra column of the
    exposure SELECT on the warehouse side): the same slices, users, means, lifts, p-values and chances to beat."""
    from readouts.dimensions import NONE, OTHER, TOP_SLICES, dimension_breakdown_get
    from readouts.selectors import readout_get

    for metric in [*warehouse_data.METRICS, *warehouse_data.CATALOG]:
        a = readout_get(experiment=internal, metric=metric)
        b = readout_get(experiment=warehouse, metric=metric)
        ja = dimension_breakdown_get(experiment=internal, readout=a, key="country").as_json()
        jb = dimension_breakdown_get(experiment=warehouse, readout=b, key="country").as_json()
        values = [s["value"] for s in ja["slices"]]
        assert len(values) == TOP_SLICES + 2 and values[-2:] == [OTHER, NONE], (metric, values)
        assert "zz" not in values  # the first exposure's value counts, not a later row's
        assert ja["registered"] and "unavailable" not in jb, jb
        assert_json_equal(ja, jb, f"breakdown[{metric}]")
