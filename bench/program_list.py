"""The experiment list (`/`) at 1,000 experiments: p50 of the page, a filtered page and the CSV (issue 17).

Not part of the test suite (`make bench` runs it as the `list` part). A throwaway PostgreSQL
(tests/pgcluster.py); 1,000 experiments with two variants and a primary + guardrail plan each: 300 running
and 100 in readout with 14 days of rollup rows (``readouts.Rollup``, as the catch-up leaves them), 300 decided
(shipped or killed), 300 drafts. The page reads each started experiment's stored verdict summary
(``readouts.VerdictSummary``) when its fingerprint is current (``readouts.summaries``). Measured: the first
request after setup (``cold``: every summary computed and stored, once), then the p50 of the page, a filtered
page and the CSV with every summary current, and of the page right after one experiment's rollups moved
(``one_stale``: that summary is recomputed). Target: p50 < 200 ms.

    .venv/bin/python bench/program_list.py [--experiments 1000] [--repeat 15]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from readout import _timed  # noqa: E402

from tests.pgcluster import postgres_cluster  # noqa: E402

T0 = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 14


def _rollups(experiment, variants, rng: random.Random) -> list:
    from readouts.models import Rollup

    rows = []
    for v in variants:
        rate = 0.10 * (1 + (rng.uniform(-0.1, 0.3) if not v.is_control else 0))
        for d in range(DAYS):
            day = (T0 + timedelta(days=d)).date()
            users = rng.randint(200, 400)
            exposed = Rollup(experiment=experiment, kind="exposure", variant_id=v.pk, metric="", day=day, users=users)
            rows.append(exposed)
            for metric, share in (("purchase", rate), ("refund", 0.01)):
                converted = int(users * share)
                rows.append(
                    Rollup(experiment=experiment, kind="conversion", variant_id=v.pk, metric=metric, day=day,
                           users=converted, total=converted, total_sq=converted, events=converted)
                )  # fmt: skip
    return rows


def list_setup(n: int):
    """``n`` experiments in the mix described above; returns the ops user who reads the list."""
    from django.contrib.auth import get_user_model

    from experiments.models import Decision, Experiment, ExperimentMetric, Variant
    from readouts.models import Rollup, RollupWatermark

    rng = random.Random(17)
    owners = [get_user_model().objects.create_user(username=f"owner-{i}", password=None) for i in range(10)]
    reader = get_user_model().objects.create_user(username="bench-list", password=None, is_superuser=True)
    rollups, marks = [], []
    for i in range(n):
        status = ["running"] * 3 + ["readout"] + ["shipped", "killed", "shipped"] + ["draft"] * 3
        status = status[i % 10]
        started = status != "draft"
        exp = Experiment.objects.create(
            name=f"Experiment {i:04d}",
            slug=f"exp-{i:04d}",
            owner=owners[i % len(owners)],
            primary_metric="purchase",
            hypothesis=f"Change {i} lifts purchases.",
            status=status,
            started_at=T0 if started else None,
            ended_at=T0 + timedelta(days=DAYS) if status in ("readout", "shipped", "killed") else None,
            mde=0.05,
            baseline_rate=0.1,
        )
        control = Variant.objects.create(experiment=exp, key="control", name="Control", is_control=True)
        treatment = Variant.objects.create(experiment=exp, key="treatment", name="Treatment")
        ExperimentMetric.objects.create(experiment=exp, key="purchase", role="primary", kind="binary")
        ExperimentMetric.objects.create(
            experiment=exp, key="refund", role="guardrail", kind="binary", direction="decrease"
        )
        if started:
            rollups += _rollups(exp, [control, treatment], rng)
            marks.append(RollupWatermark(experiment=exp, event_id=0, covariate_id=0))
        if status in ("shipped", "killed"):
            Decision.objects.create(
                experiment=exp,
                outcome=status,
                rationale="Bench.",
                decided_by=reader,
                shipped_variant=treatment if status == "shipped" else None,
            )
    Rollup.objects.bulk_create(rollups, batch_size=2000)
    RollupWatermark.objects.bulk_create(marks)
    return reader, len(rollups)


def list_measure(reader, repeat: int) -> dict:
    from django.test import Client

    from readouts.models import RollupWatermark

    client = Client()
    client.force_login(reader)

    def get(url):
        def fn():
            response = client.get(url)
            assert response.status_code == 200, response.content[:300]

        return fn

    get("/?status=draft")()  # warm the process (imports, templates) without computing a summary
    started = time.perf_counter()
    get("/")()  # every summary is stale: computed and stored
    cold = time.perf_counter() - started
    marks = list(RollupWatermark.objects.order_by("pk")[: repeat + 1])

    def one_stale():  # as after a catch-up of one experiment: its rollups' version moves
        marks.pop().save()
        get("/")()

    timed = _timed(
        {"list": get("/"), "list_filtered": get("/?verdict=won&sort=-exposed"), "csv": get("/?format=csv"),
         "one_stale": one_stale},
        repeat,
    )  # fmt: skip
    return {"cold": cold, **timed}


def run_measurements(n: int, repeat: int) -> dict:
    with postgres_cluster() as url:
        import psycopg

        admin_url = url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE signaldash")
        os.environ["DATABASE_URL"] = url
        os.environ["DJANGO_SETTINGS_MODULE"] = "signaldash.settings"
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection
        from django.test.utils import setup_test_environment

        setup_test_environment()
        call_command("migrate", "--noinput", verbosity=0)
        call_command("createcachetable", verbosity=0)
        started = time.perf_counter()
        reader, rollup_rows = list_setup(n)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        setup_s = time.perf_counter() - started
        result = list_measure(reader, repeat)
        connection.close()
    out = {"experiments": n, "rollup_rows": rollup_rows, "setup_s": setup_s, **result}
    _report(out)
    return out


def _report(r: dict) -> None:
    print(f"\nexperiment list @ {r['experiments']:,} experiments ({r['rollup_rows']:,} rollup rows)")
    print(f"  {'cold':<16} {r['cold'] * 1000:8.1f} ms  (the first request: every summary computed and stored)")
    for name in ("list", "list_filtered", "csv", "one_stale"):
        p50, lo, hi = r[name]
        print(f"  {name:<16} p50 {p50 * 1000:8.1f} ms  (min {lo * 1000:.1f}, max {hi * 1000:.1f})")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args(argv)
    run_measurements(args.experiments, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
