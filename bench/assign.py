"""Assignment benchmark: `POST /api/assign/all` p50 with 50 running experiments (target < 15 ms).

One command: `.venv/bin/python bench/assign.py` (or `make bench`, part `assign`). It starts a throwaway
PostgreSQL cluster (tests.pgcluster), migrates, creates 50 running experiments (a mix of plain, coverage,
targeting, two layers of ranges and a holdout named by ten of them) and a track key, then sends
`--requests` requests for new users (each stores its enrolments: the write path) and as many for the same
users again (stored answers: the read path) through the real Django stack (test client), and prints
p50/p99 of each. Not part of pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.pgcluster import postgres_cluster  # noqa: E402

EXPERIMENTS = 50
TARGET_P50_MS = 15.0


def assign_setup() -> str:
    """50 running experiments and a track key; returns the key."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from experiments.models import Experiment, Layer, Variant
    from tracking.models import ServiceAPIKey

    owner = get_user_model().objects.create_user("bench-owner")
    layers = [Layer.objects.create(key=f"layer-{i}", name=f"Layer {i}") for i in range(2)]
    holdout = None
    for i in range(EXPERIMENTS):
        fields: dict = {}
        if i % 5 == 1:
            fields["coverage"] = 0.3
        if i % 5 == 2:
            fields["targeting"] = {"$and": [{"country": {"$in": ["DE", "AT"]}}, {"app_version": {"$vgte": "2.10.0"}}]}
        if i % 5 == 3:
            layer, slot = layers[(i // 5) % 2], (i // 10) % 5
            fields.update(layer=layer, layer_start=slot / 5, layer_end=(slot + 1) / 5)
        if i % 5 == 4 and holdout is not None:
            fields["holdout"] = holdout
        experiment = Experiment.objects.create(name=f"E{i}", slug=f"bench-{i:02d}", owner=owner, **fields)
        weights = (("held-out", 5), ("general", 95)) if i == 0 else (("control", 1), ("treatment", 1))
        for n, (key, weight) in enumerate(weights):
            Variant.objects.create(experiment=experiment, key=key, name=key, weight=weight, is_control=n == 0)
        if i == 0:
            holdout = experiment
    with connection.cursor() as cursor:  # straight to running (the workflow is not what is measured)
        table = connection.ops.quote_name(Experiment._meta.db_table)
        cursor.execute(f"UPDATE {table} SET status = 'running', started_at = now()")  # noqa: S608 - table name
    return ServiceAPIKey.objects.create_key(name="bench-assign")[1]


def _timed(client, path: str, body: dict) -> float:
    started = time.perf_counter()
    response = client.post(path, data=json.dumps(body), content_type="application/json")
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.content[:300]
    return elapsed * 1000


def _summary(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"p50_ms": statistics.median(ordered), "p99_ms": ordered[int(len(ordered) * 0.99) - 1], "n": len(ordered)}


def assign_measure(key: str, requests: int) -> dict:
    from django.test import Client

    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    attributes = {"country": "DE", "app_version": "2.10.1", "plan": "pro"}
    for i in range(20):  # warm-up: key cache, rules cache, connection
        _timed(client, "/api/assign/all", {"user_key": f"warm-{i}", "attributes": attributes})
    new = [_timed(client, "/api/assign/all", {"user_key": f"u{i}", "attributes": attributes}) for i in range(requests)]
    repeat = [
        _timed(client, "/api/assign/all", {"user_key": f"u{i}", "attributes": attributes}) for i in range(requests)
    ]
    answers = client.post(
        "/api/assign/all",
        data=json.dumps({"user_key": "u0", "attributes": attributes}),
        content_type="application/json",
    ).json()["assignments"]
    assert len(answers) == EXPERIMENTS
    return {"new_users": _summary(new), "stored_users": _summary(repeat)}


def run_measurements(requests: int) -> dict:
    with postgres_cluster() as url:
        import psycopg

        admin_url = url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE signaldash")
        os.environ["DATABASE_URL"] = url
        os.environ["DJANGO_SETTINGS_MODULE"] = "signaldash.settings"
        os.environ.setdefault("SIGNALDASH_AI_PROVIDER", "none")
        os.environ["SIGNALDASH_THROTTLE_RATE"] = "100000000/min"  # measuring latency, not the throttle
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection
        from django.test.utils import setup_test_environment

        setup_test_environment()
        call_command("migrate", "--noinput", verbosity=0)
        call_command("createcachetable", verbosity=0)
        key = assign_setup()
        result = assign_measure(key, requests)
        connection.close()
    _report(result)
    return result


def _report(result: dict) -> None:
    print(f"\nPOST /api/assign/all, {EXPERIMENTS} running experiments (target p50 < {TARGET_P50_MS:g} ms)")
    for label in ("new_users", "stored_users"):
        r = result[label]
        verdict = "ok" if r["p50_ms"] < TARGET_P50_MS else "OVER TARGET"
        print(f"  {label:<13} p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  (n={r['n']})  {verdict}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args(argv)
    result = run_measurements(args.requests)
    return 0 if result["new_users"]["p50_ms"] < TARGET_P50_MS else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
