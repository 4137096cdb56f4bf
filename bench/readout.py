"""Readout benchmark: readout API latency next to the bare aggregate query, same run, 1M and 10M events.

One command: `.venv/bin/python bench/readout.py` (or `make bench`). It
1. starts a throwaway PostgreSQL cluster (tests.pgcluster), creates the database and migrates it;
2. creates one experiment (control + treatment, 50/50) and loads events with
   `INSERT … SELECT … FROM generate_series` (no Python loops): every user has one exposure and one
   conversion on one of three metrics; 2% of conversions happen before the exposure (not counted).
   Indexes are dropped during the load and rebuilt after it, then the table is VACUUM ANALYZEd;
3. at each size measures (median of --repeat runs after one warm-up):
   - the bare aggregate query (`readouts.queries.READOUT_AGGREGATE_SQL`, what the rollups equal),
   - `GET /api/experiments/<slug>/readout` and the readout page through the real Django stack (test
     client; they read the incremental rollups, readouts/rollups.py),
   - the first readout after the bulk load (a full recompute: the load bypassed ingest), and the readout
     right after 1,000 new events (the incremental catch-up),
   and prints the ratios to the bare query;
4. removes the cluster. Not part of pytest. Bounded: a few minutes on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.pgcluster import postgres_cluster  # noqa: E402

METRICS = ("purchase", "signup", "click")
T0 = "2026-01-01 00:00:00+00"
SPAN_S = 14 * 86400  # exposures spread over two weeks

# Loads users (lo, hi]: one exposure each, alternating variants.
LOAD_EXPOSURES_SQL = """
INSERT INTO {event} (experiment_id, variant_id, user_key, event_type, metric, value, occurred_at, received_at, props)
SELECT %(experiment_id)s,
       CASE WHEN g %% 2 = 0 THEN %(control_id)s ELSE %(treatment_id)s END,
       'user-' || g, 'exposure', '', NULL,
       TIMESTAMPTZ %(t0)s + (g %% %(span)s) * INTERVAL '1 second', now(), '{{}}'::jsonb
FROM generate_series(%(lo)s + 1, %(hi)s) AS g
"""

# One conversion per user on one of three metrics; treatment converts a little more (every 9th
# control user's conversion is moved to the 'refund' metric); every 50th converts before exposure.
LOAD_CONVERSIONS_SQL = """
INSERT INTO {event} (experiment_id, variant_id, user_key, event_type, metric, value, occurred_at, received_at, props)
SELECT %(experiment_id)s,
       CASE WHEN g %% 2 = 0 THEN %(control_id)s ELSE %(treatment_id)s END,
       'user-' || g, 'conversion',
       CASE WHEN g %% 2 = 0 AND g %% 9 = 0 THEN 'refund'
            ELSE (ARRAY['purchase', 'signup', 'click'])[1 + (g / 2) %% 3] END,
       (g %% 100)::float,
       TIMESTAMPTZ %(t0)s + (g %% %(span)s) * INTERVAL '1 second'
           + CASE WHEN g %% 50 = 0 THEN INTERVAL '-60 seconds' ELSE INTERVAL '600 seconds' END,
       now(), '{{}}'::jsonb
FROM generate_series(%(lo)s + 1, %(hi)s) AS g
"""

INDEXES_SQL = """
SELECT i.relname, pg_get_indexdef(i.oid), c.conname, pg_get_constraintdef(c.oid)
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
LEFT JOIN pg_constraint c ON c.conindid = i.oid AND c.conrelid = x.indrelid
WHERE x.indrelid = %(table)s::regclass AND NOT x.indisprimary
"""


def _timed(fns: dict, repeat: int) -> dict[str, tuple[float, float, float]]:
    """Median, min and max seconds per function; runs interleaved so load changes hit all alike."""
    for fn in fns.values():
        fn()  # warm-up (caches, plan, connection)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - started)
    return {name: (statistics.median(s), min(s), max(s)) for name, s in samples.items()}


def readout_load(cursor, *, table: str, ids: dict, lo: int, hi: int) -> float:
    """Add users (lo, hi] (2 events each) with the indexes dropped; rebuild them; VACUUM ANALYZE."""
    started = time.perf_counter()
    cursor.execute(INDEXES_SQL, {"table": table})
    indexes = cursor.fetchall()
    for name, _, constraint, _ in indexes:
        if constraint:
            cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{constraint}"')
        else:
            cursor.execute(f'DROP INDEX "{name}"')
    cursor.execute("SET session_replication_role = replica")  # no per-row FK triggers during the bulk load
    params = {**ids, "lo": lo, "hi": hi, "t0": T0, "span": SPAN_S}
    cursor.execute(LOAD_EXPOSURES_SQL.format(event=table), params)
    cursor.execute(LOAD_CONVERSIONS_SQL.format(event=table), params)
    cursor.execute("SET session_replication_role = DEFAULT")
    cursor.execute("SET maintenance_work_mem = '512MB'")
    for _, indexdef, constraint, constraintdef in indexes:
        if constraint:
            cursor.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{constraint}" {constraintdef}')
        else:
            cursor.execute(indexdef)
    cursor.execute(f"VACUUM ANALYZE {table}")
    return time.perf_counter() - started


def readout_setup():
    from django.contrib.auth import get_user_model

    from experiments.models import Experiment, Variant
    from tracking.models import ServiceAPIKey

    owner = get_user_model().objects.create_user(username="bench-readout", password=None, is_superuser=True)
    experiment = Experiment.objects.create(
        name="Readout bench", slug="readout-bench", owner=owner, primary_metric="purchase"
    )
    control = Variant.objects.create(experiment=experiment, key="control", name="Control", is_control=True)
    treatment = Variant.objects.create(experiment=experiment, key="treatment", name="Treatment")
    _, key = ServiceAPIKey.objects.create_key(name="bench-readout", scopes="read")
    ids = {"experiment_id": experiment.pk, "control_id": control.pk, "treatment_id": treatment.pk}
    return experiment, owner, key, ids


def readout_measure(*, experiment, owner, key: str, repeat: int, table: str, ids: dict, users: int) -> dict:
    """Bare aggregate vs the readout API (rollups) and page; the first readout (full recompute) and the
    readout right after 1,000 new events (incremental catch-up) are timed too."""
    from django.db import connection
    from django.test import Client

    from readouts import queries

    query = queries.readout_aggregate_query(experiment_id=experiment.pk)

    def bare():
        with connection.cursor() as cursor:
            cursor.execute(query.sql, query.params)
            cursor.fetchall()

    api_client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    page_client = Client()
    page_client.force_login(owner)

    def api():
        response = api_client.get(f"/api/experiments/{experiment.slug}/readout")
        assert response.status_code == 200, response.content[:300]

    def page():
        response = page_client.get(f"/experiments/{experiment.slug}/readout")
        assert response.status_code == 200

    started = time.perf_counter()
    api()  # the load bypassed ingest: this readout finds a large backlog and recomputes in full
    first = time.perf_counter() - started
    result = _timed({"bare": bare, "api": api, "page": page}, repeat)
    result["first_readout"] = (first, first, first)
    catchups = []
    for n in range(repeat):  # 500 new users (1,000 events) per round, then one readout
        lo = users + n * 500
        with connection.cursor() as cursor:
            params = {**ids, "lo": lo, "hi": lo + 500, "t0": T0, "span": SPAN_S}
            cursor.execute(LOAD_EXPOSURES_SQL.format(event=table), params)
            cursor.execute(LOAD_CONVERSIONS_SQL.format(event=table), params)
        started = time.perf_counter()
        api()
        catchups.append(time.perf_counter() - started)
    result["api_after_1k_events"] = (statistics.median(catchups), min(catchups), max(catchups))
    body = api_client.get(f"/api/experiments/{experiment.slug}/readout").json()
    result["check"] = [(v["key"], v["exposures"], v["conversions"]) for v in body["variants"]]
    return result


def _line(label: str, timing: tuple[float, float, float], bare: float | None = None, note: str = "") -> str:
    median, low, high = (t * 1000 for t in timing)
    ratio = f"  ratio to bare = {timing[0] / bare:.2f}x" if bare else ""
    return f"   {label:<21}: median {median:8.1f} ms  (min {low:.1f}, max {high:.1f}){ratio}{note}"


def _report(size: int, load_s: float, r: dict) -> None:
    bare = r["bare"][0]
    print(f"\n== {size:,} events (load + index rebuild + VACUUM ANALYZE: {load_s:.1f} s)")
    print(f"   variants (key, exposed, converted on purchase): {r['check']}")
    print(_line("bare aggregate query", r["bare"]))
    print(_line("readout API (GET)", r["api"], bare))
    print(_line("readout page (GET)", r["page"], bare))
    print(_line("first readout (full)", r["first_readout"], bare))
    print(_line("API after 1k events", r["api_after_1k_events"], bare), flush=True)


def run_measurements(sizes: list[int], repeat: int) -> list[dict]:
    """Load each size (cumulative), measure; one throwaway cluster. Returns one dict per size."""
    out = []
    with postgres_cluster() as url:
        import psycopg

        admin_url = url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE signaldash")
        os.environ["DATABASE_URL"] = url
        os.environ["DJANGO_SETTINGS_MODULE"] = "signaldash.settings"
        os.environ.setdefault("SIGNALDASH_AI_PROVIDER", "none")
        os.environ["SIGNALDASH_READOUT_THROTTLE_RATE"] = "1000000/min"  # measuring latency, not the throttle
        os.environ["SIGNALDASH_DB_STATEMENT_TIMEOUT_S"] = "0"  # the 10M full recompute may exceed 30 s
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection
        from django.test.utils import setup_test_environment

        from tracking.models import Event

        setup_test_environment()  # the test client's 'testserver' host, no real e-mail etc.
        call_command("migrate", "--noinput", verbosity=0)
        call_command("createcachetable", verbosity=0)
        experiment, owner, key, ids = readout_setup()
        table = connection.ops.quote_name(Event._meta.db_table)
        loaded_users = 0
        for size in sizes:
            users = size // 2
            with connection.cursor() as cursor:
                load_s = readout_load(cursor, table=table, ids=ids, lo=loaded_users, hi=users)
            r = readout_measure(
                experiment=experiment, owner=owner, key=key, repeat=repeat, table=table, ids=ids, users=users
            )
            loaded_users = users + repeat * 500
            _report(size, load_s, r)
            out.append({"events": size, "load_s": load_s, **r})
        connection.close()
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000", help="cumulative event counts (comma-separated)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    run_measurements(sorted(int(s) for s in args.sizes.split(",")), args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
