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
4. catalog rule metrics (readouts/metric_rollups.py), same events: the plan gains one metric of every kind
   (a 72-hour windowed conversion, revenue capped at 50, revenue per order, a signup → purchase funnel) and
   the readout API is timed with that plan: the first readout (every rule metric's rollups built or caught up),
   the median readout, the readout right after 1,000 new events, and per kind the rule rollups' read alone
   (``metric_rollups.computed`` for that one definition). A 99th-percentile-capped revenue metric is timed
   the same way (its readout takes the quantile over every exposed user). At sizes up to
   ``--reference-max`` events the events path they replace (``SIGNALDASH_METRIC_ROLLUPS`` off) is timed too;
5. removes the cluster. Not part of pytest. Bounded: a few minutes on 2 cores with the defaults.
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


def _after_new_events(readout, *, users: int, repeat: int, table: str, ids: dict) -> tuple[float, float, float]:
    """(median, min, max) seconds of ``readout()`` right after each of ``repeat`` rounds of 500 new users (1,000
    events) loaded after user ``users``."""
    from django.db import connection

    times = []
    for n in range(repeat):
        lo = users + n * 500
        with connection.cursor() as cursor:
            params = {**ids, "lo": lo, "hi": lo + 500, "t0": T0, "span": SPAN_S}
            cursor.execute(LOAD_EXPOSURES_SQL.format(event=table), params)
            cursor.execute(LOAD_CONVERSIONS_SQL.format(event=table), params)
        started = time.perf_counter()
        readout()
        times.append(time.perf_counter() - started)
    return statistics.median(times), min(times), max(times)


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
    result["api_after_1k_events"] = _after_new_events(api, users=users, repeat=repeat, table=table, ids=ids)
    body = api_client.get(f"/api/experiments/{experiment.slug}/readout").json()
    result["check"] = [(v["key"], v["exposures"], v["conversions"]) for v in body["variants"]]
    return result


RULE_METRICS = {  # key -> Metric fields; one of every kind the acceptance names, and a percentile cap
    "bench_win72": {"kind": "binary", "event": "purchase", "window_hours": 72},
    "bench_rev_abs": {"kind": "mean", "event": "purchase", "cap": "absolute", "cap_value": 50},
    "bench_rev": {"kind": "mean", "event": "purchase"},
    "bench_orders": {"kind": "mean", "event": "purchase", "aggregation": "count"},
    "bench_funnel": {"kind": "funnel", "steps": ["signup", "purchase"]},
    "bench_rev_p99": {"kind": "mean", "event": "purchase", "cap": "percentile", "cap_value": 0.99},
}
RULE_PLAN = {"windowed": "bench_win72", "capped absolute": "bench_rev_abs", "ratio": "bench_rpo",
             "funnel": "bench_funnel"}  # fmt: skip
PERCENTILE = "bench_rev_p99"


def _rule_metrics(owner) -> dict:
    from experiments import catalog
    from experiments.models import Metric

    out = {m.key: m for m in Metric.objects.filter(key__in=[*RULE_METRICS, "bench_rpo"])}
    for key, fields in RULE_METRICS.items():
        if key not in out:
            out[key] = catalog.metric_save(metric=Metric(key=key, name=key, **fields), actor=owner, source="service")
    if "bench_rpo" not in out:
        rpo = Metric(key="bench_rpo", name="bench_rpo", kind="ratio", numerator=out["bench_rev"],
                     denominator=out["bench_orders"])  # fmt: skip
        out["bench_rpo"] = catalog.metric_save(metric=rpo, actor=owner, source="service")
    return out


def _plan(experiment, owner, metrics: dict, keys: list[str]) -> None:
    """The experiment's catalog rows become exactly ``keys`` (secondary metrics; the primary stays ad hoc)."""
    from experiments import services
    from experiments.models import ExperimentMetric

    ExperimentMetric.objects.filter(experiment=experiment, metric__isnull=False).delete()
    for key in keys:
        row = ExperimentMetric(experiment=experiment, metric=metrics[key], role="secondary")
        services.experiment_metric_save(metric=row, actor=owner)


def _exposures(experiment) -> dict[int, int]:
    from readouts import rollups

    out: dict[int, int] = {}
    for r in rollups.readout_rows(experiment_id=experiment.pk):
        if r.kind == "exposure":
            out[r.variant_id] = out.get(r.variant_id, 0) + r.users
    return out


def _rule_phase(*, experiment, owner, metrics: dict, api, label: str, keys: list[str], repeat: int) -> dict:
    """The plan becomes ``keys`` (their rollups already built): one readout, then the timings."""
    from experiments.selectors import experiment_metric_definitions
    from readouts import metric_rollups

    _plan(experiment, owner, metrics, keys)
    definitions = experiment_metric_definitions(experiment)
    started = time.perf_counter()
    api(keys[0])()  # current when the first phase built every rule metric's rollups
    result: dict = {f"{label}_first": time.perf_counter() - started}
    fns = {f"{label}_api": api(keys[-1])}
    exposed = _exposures(experiment)
    kinds = [*RULE_PLAN.items()] if label == "plan" else [("percentile", PERCENTILE)]
    for kind, metric in kinds:
        fns[f"read {kind}"] = lambda d=definitions[metric]: metric_rollups.computed(
            experiment_id=experiment.pk, definitions=[d], exposures=exposed
        )
    result.update(_timed(fns, repeat))
    return result


def rules_measure(*, experiment, owner, key: str, repeat: int, table: str, ids: dict, users: int,
                  reference_max: int) -> dict:  # fmt: skip
    """The readout API with a plan of every rule kind, the rule rollups' read per kind, the percentile cap."""
    from django.test import Client
    from django.test.utils import override_settings

    metrics = _rule_metrics(owner)
    api_client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")

    def api(metric: str):
        def call():
            response = api_client.get(f"/api/experiments/{experiment.slug}/readout?metric={metric}")
            assert response.status_code == 200, response.content[:300]

        return call

    common = {"experiment": experiment, "owner": owner, "metrics": metrics, "api": api, "repeat": repeat}
    _plan(experiment, owner, metrics, [*RULE_PLAN.values(), PERCENTILE])
    started = time.perf_counter()
    api(PERCENTILE)()  # the load bypassed ingest: this readout builds or catches up every rule metric's rollups
    build = time.perf_counter() - started
    result = _rule_phase(label="plan", keys=list(RULE_PLAN.values()), **common)
    result.update(_rule_phase(label="percentile", keys=[*RULE_PLAN.values(), PERCENTILE], **common))
    result["build"] = build
    result["percentile_api_after_1k_events"] = _after_new_events(
        api(PERCENTILE), users=users, repeat=repeat, table=table, ids=ids
    )
    if users * 2 <= reference_max:
        with override_settings(SIGNALDASH_METRIC_ROLLUPS=False):
            result["events_path_api"] = _timed({"ref": api(PERCENTILE)}, max(1, repeat // 2))["ref"]
    _plan(experiment, owner, metrics, [])
    return result


def _rules_report(size: int, r: dict) -> None:
    print(f"   -- catalog rule metrics @ {size:,} events (plan: {', '.join(RULE_PLAN)}; then + p99 cap)")
    print(f"   {'first rule readout':<21}: {r['build'] * 1000:8.1f} ms (every rule metric's rollups built / caught up)")
    print(_line("readout API, plan", r["plan_api"], note="  (acceptance < 100 ms)"))
    for kind in RULE_PLAN:
        print(_line(f"  read {kind}", r[f"read {kind}"]))
    print(_line("readout API, +p99", r["percentile_api"], note="  (acceptance < 300 ms at 1M exposed)"))
    print(_line("  read percentile", r["read percentile"]))
    print(_line("API +p99 after 1k ev.", r["percentile_api_after_1k_events"]))
    if "events_path_api" in r:
        print(_line("events path (before)", r["events_path_api"]), flush=True)


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


def run_measurements(sizes: list[int], repeat: int, reference_max: int = 1_000_000) -> list[dict]:
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
            _report(size, load_s, r)
            rules = rules_measure(experiment=experiment, owner=owner, key=key, repeat=repeat, table=table, ids=ids,
                                  users=users + repeat * 500, reference_max=reference_max)  # fmt: skip
            _rules_report(size, rules)
            loaded_users = users + 2 * repeat * 500
            out.append({"events": size, "load_s": load_s, **r, "rules": rules})
        connection.close()
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000", help="cumulative event counts (comma-separated)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--reference-max", type=int, default=1_000_000,
                        help="time the rule metrics' events path (the reference) up to this many events")  # fmt: skip
    args = parser.parse_args(argv)
    run_measurements(sorted(int(s) for s in args.sizes.split(",")), args.repeat, args.reference_max)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
