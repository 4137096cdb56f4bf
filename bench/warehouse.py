"""Warehouse benchmark: snapshot time on DuckDB (and Spark) against the bare per-variant GROUP BY, and the
readout page p50 from a snapshot.

`.venv/bin/python bench/warehouse.py [--events N] [--spark]` (or `make bench`, part "warehouse"):
1. writes N events (default 10M; 1M users, one exposure each, ~10 events per user of two metrics) as
   Parquet, generated inside DuckDB;
2. on DuckDB (in-memory, `read_parquet`): the experiment's full warehouse query (two metrics, CUPED,
   multiple-exposure and unknown-variant counts) against the bare per-variant `GROUP BY` (exposures
   joined to events, count and sum per variant) over the same files — median of --repeat runs;
3. with --spark: the same on a Spark Connect server (tests/sparkcluster.py: two executors of one core,
   --spark-executor-gb each, default 4; one shuffle partition per 500k events);
   (wall-clock, and for DuckDB the CPU seconds too: on a shared machine they are the steadier ratio);
4. a throwaway SQLite Signal Dash database with one experiment on the DuckDB source, one snapshot,
   and the readout page (real Django stack, test client) p50 over --repeat requests.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

START = datetime(2026, 1, 1, tzinfo=UTC)
BARE = """
SELECT x.variant_key, COUNT(*) AS events, SUM(e.value) AS total
FROM ({x}) x JOIN ({e}) e ON e.user_key = x.user_key
WHERE x.experiment_key = 'bench' GROUP BY x.variant_key
"""


def write_lake(folder: Path, events: int) -> tuple[str, str]:
    import duckdb

    users = max(1000, events // 10)
    con = duckdb.connect(":memory:")
    con.execute("SELECT setseed(0.1)")
    con.execute(
        f"""CREATE TABLE x AS SELECT 'bench' AS experiment_key,
            CASE WHEN random() < 0.5 THEN 'control' ELSE 'treatment' END AS variant_key, 'u' || i AS user_key,
            TIMESTAMP '2026-01-01' + to_seconds(CAST(random() * 5 * 86400 AS BIGINT)) AS "timestamp"
            FROM range({users}) t(i)"""
    )
    con.execute(
        f"""CREATE TABLE e AS SELECT 'u' || CAST(floor(random() * {users}) AS BIGINT) AS user_key,
            TIMESTAMP '2025-12-20' + to_seconds(CAST(random() * 20 * 86400 AS BIGINT)) AS "timestamp",
            CASE WHEN random() < 0.5 THEN 'purchase' ELSE 'revenue' END AS event,
            round(random() * 100, 2) AS value, CAST(i AS VARCHAR) AS event_id
            FROM range({events}) t(i)"""
    )
    for table in ("x", "e"):
        con.execute(f"COPY {table} TO '{folder / table}.parquet' (FORMAT parquet)")
    con.close()
    return str(folder / "x.parquet"), str(folder / "e.parquet")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _median(fn, repeat: int) -> tuple[float, float]:
    """Median wall-clock seconds and median CPU seconds of this process (DuckDB runs in it; on a shared machine
    the CPU time is the steadier figure)."""
    fn()  # warm-up
    times, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), _cpu()
        fn()
        times.append(time.perf_counter() - t)
        cpu.append(_cpu() - c)
    return statistics.median(times), statistics.median(cpu)


def measure_engine(engine: str, url: str, x_sql: str, e_sql: str, repeat: int) -> dict:
    from readouts.definitions import MetricDefinition
    from readouts.sources import builder, runners
    from readouts.sources.plan import QueryPlan

    plan = QueryPlan(
        "bench",
        ("control", "treatment"),
        START,
        START + timedelta(days=10),
        (MetricDefinition.adhoc(key="purchase"), MetricDefinition.adhoc(key="revenue", kind="mean")),
        14,
    )
    cols = frozenset({"user_key", "timestamp", "event", "value", "event_id"})
    sql = builder.build_query(plan=plan, source=builder.SourceSQL(x_sql, e_sql, cols), engine=engine)
    bare = builder.parse_select(BARE.format(x=x_sql, e=e_sql), engine=engine, what="bare").sql(
        dialect=builder.DIALECTS[engine]
    )
    os.environ["SD_BENCH_URL"] = url
    full, full_cpu = _median(
        lambda: runners.run(engine=engine, url_env="SD_BENCH_URL", sql=sql, timeout_s=3600), repeat
    )
    base, base_cpu = _median(
        lambda: runners.run(engine=engine, url_env="SD_BENCH_URL", sql=bare, timeout_s=3600), repeat
    )
    out = {"engine": engine, "snapshot_s": full, "bare_group_by_s": base, "ratio": full / base}
    if engine == "duckdb":  # in-process: its CPU time is measurable here (Spark's is on the server)
        out.update({"snapshot_cpu_s": full_cpu, "bare_cpu_s": base_cpu, "cpu_ratio": full_cpu / max(base_cpu, 1e-9)})
    return out


def page_p50(x_sql: str, e_sql: str, repeat: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from experiments.models import Experiment, ExperimentMetric, Variant
    from readouts.models import DataSource
    from readouts.sources.refresh import snapshot_request, snapshot_run

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_superuser("bench", password="bench-pw-1")
    source = DataSource.objects.create(
        key="bench", name="Bench", engine="duckdb", url_env="SD_BENCH_URL", exposure_sql=x_sql, events_sql=e_sql
    )
    os.environ["SD_BENCH_URL"] = "duckdb:///:memory:"
    exp = Experiment.objects.create(name="Bench", slug="bench", owner=user, data_source=source, hypothesis="h")
    for key in ("control", "treatment"):
        Variant.objects.create(experiment=exp, key=key, name=key, is_control=key == "control")
    ExperimentMetric.objects.create(experiment=exp, key="purchase", role="primary", kind="binary")
    ExperimentMetric.objects.create(experiment=exp, key="revenue", role="secondary", kind="mean")
    Experiment.objects.filter(pk=exp.pk).update(started_at=START, ended_at=START + timedelta(days=10))
    with connection.cursor() as c:
        c.execute("UPDATE experiments_experiment SET status = 'readout' WHERE id = %s", [exp.pk])
    snap = snapshot_run(snapshot=snapshot_request(experiment=exp, triggered_by="bench")[0])
    assert snap.status == "ok", snap.error
    client = Client()
    client.force_login(user)
    times = []
    for _ in range(repeat + 1):
        t = time.perf_counter()
        assert client.get("/experiments/bench/readout").status_code == 200
        times.append(time.perf_counter() - t)
    return {"page_p50_ms": statistics.median(times[1:]) * 1000}


def run_measurements(events: int, repeat: int, spark: bool, spark_gb: int = 4) -> list[dict]:
    folder = Path(tempfile.mkdtemp(prefix="sd-bench-lake-"))
    t = time.perf_counter()
    xp, ep = write_lake(folder, events)
    print(f"lake: {events:,} events as Parquet in {time.perf_counter() - t:.1f} s")
    out = []
    x_sql, e_sql = f"SELECT * FROM read_parquet('{xp}')", f"SELECT * FROM read_parquet('{ep}')"
    out.append({"events": events, **measure_engine("duckdb", "duckdb:///:memory:", x_sql, e_sql, repeat)})
    print(out[-1])
    if spark:
        from tests import sparkcluster

        # Sized for the lake, not the tests' defaults (512 MB executors, 2 shuffle partitions: at 10M events a
        # stage spilled for 15+ minutes): two executors of one core and --spark-executor-gb each.
        gb = spark_gb
        with sparkcluster.spark_connect_server(
            folder,
            worker_memory_mb=gb * 1024 + 512,
            executor_memory=f"{gb}g",
            shuffle_partitions=max(2, events // 500_000),
        ) as (url, ui_port):
            sparkcluster.wait_executors(ui_port, 2)
            sx, se = f"SELECT * FROM parquet.`{xp}`", f"SELECT * FROM parquet.`{ep}`"
            out.append({"events": events, **measure_engine("spark", url, sx, se, max(1, repeat // 2))})
            print(out[-1])
    out.append({"events": events, **page_p50(x_sql, e_sql, max(20, repeat * 4))})
    print(out[-1])
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--spark", action="store_true")
    parser.add_argument("--spark-executor-gb", type=int, default=4, help="memory of each of the two executors")
    args = parser.parse_args(argv)
    db = Path(tempfile.mkdtemp()) / "bench.sqlite3"
    os.environ.update({"DATABASE_URL": f"sqlite:///{db}", "DJANGO_SETTINGS_MODULE": "signaldash.settings"})
    os.environ.setdefault("SECRET_KEY", "bench-only")
    import django

    django.setup()
    run_measurements(args.events, args.repeat, args.spark, args.spark_executor_gb)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
