"""Ingest benchmark: events/s through the real app vs the raw PostgreSQL insert ceiling, same run.

One command: `.venv/bin/python bench/ingest.py` (or `make bench`). It
1. starts a throwaway PostgreSQL cluster (tests.pgcluster), creates the database and migrates it;
2. serves the app with gunicorn on 127.0.0.1 (persistent DB connections, throttle lifted);
3. measures POST /api/track (one event per request) and POST /api/track/batch (1000 per request)
   with concurrent keep-alive HTTP clients in separate processes, for a fixed time each;
4. measures the same rows inserted straight through psycopg: one-row INSERT … ON CONFLICT per
   transaction (the single-event ceiling), 1000-row INSERT … ON CONFLICT DO NOTHING (the batch
   ceiling, same SQL shape as the app) and COPY (no dedup at all: the absolute ceiling);
5. prints events/s and app/raw ratios, stops gunicorn by PID and removes the cluster.

Workload: each user has an exposure and a conversion (the app also fixes assignments on exposure;
the raw inserts write only events, so they are a true ceiling). Not part of pytest. Bounded: about
1.5 minutes with the defaults.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.pgcluster import postgres_cluster  # noqa: E402

BATCH = 1000


# --- load generators (run in child processes) -----------------------------------------------------
def _event_pairs(prefix: str, start: int, count: int) -> list[dict]:
    events = []
    for n in range(start, start + count):
        user = f"{prefix}-{n}"
        variant = "control" if n % 2 else "treatment"
        events.append({"experiment": "bench", "variant": variant, "user_key": user, "event_type": "exposure"})
        events.append({"experiment": "bench", "variant": variant, "user_key": user, "event_type": "conversion"})
    return events


def _batch_size(kind: str) -> int:
    return int(kind.rsplit("batch", 1)[1] or BATCH)


def _http_thread(kind: str, port: int, key: str, prefix: str, deadline: float, out: list) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    stored = failed = requests = 0
    n = 0
    one = kind in ("single", "nodb")
    latencies: list[float] = []
    while time.perf_counter() < deadline:
        if one:
            path, events = ("/api/track" if kind == "single" else "/bench/nodb"), _event_pairs(prefix, n, 1)
            n += 1
        else:
            path, events = "/api/track/batch", _event_pairs(prefix, n, _batch_size(kind) // 2)
            n += _batch_size(kind) // 2
        for body in [json.dumps(e) for e in events] if one else [json.dumps({"events": events})]:
            started = time.perf_counter()
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            latencies.append(time.perf_counter() - started)
            requests += 1
            if one:
                stored += response.status == 201
                failed += response.status != 201
            elif response.status == 200:
                result = json.loads(data)
                stored += result["accepted"]
                failed += len(result["rejected"])
            else:
                failed += 1
    conn.close()
    out.append((stored, failed, requests, latencies))


def _raw_thread(kind: str, url: str, ids: dict, prefix: str, deadline: float, out: list) -> None:
    import datetime as dt

    import psycopg
    from psycopg.types.json import Jsonb

    now = dt.datetime.now(dt.UTC)
    exp, variants = ids["experiment_id"], ids["variant_ids"]
    cols = "experiment_id, variant_id, user_key, event_type, metric, value, occurred_at, received_at, props"

    def rows(start: int, pairs: int) -> list[tuple]:
        return [
            (
                exp,
                variants[e["variant"]],
                e["user_key"],
                e["event_type"],
                "purchase" if e["event_type"] == "conversion" else "",
                None,
                now,
                now,
                Jsonb({}),
            )
            for e in _event_pairs(prefix, start, pairs)
        ]

    stored = n = 0
    with psycopg.connect(url, autocommit=True) as conn:
        while time.perf_counter() < deadline:
            pairs = 1 if kind == "raw_single" else _batch_size(kind) // 2
            batch = sorted(rows(n, pairs), key=lambda r: (r[2], r[3]))
            n += pairs
            if kind == "raw_copy":
                with conn.transaction(), conn.cursor().copy(f"COPY tracking_event ({cols}) FROM STDIN") as copy:
                    for row in batch:
                        copy.write_row(row)
                stored += len(batch)
                continue
            values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s)"] * (len(batch) if "batch" in kind else 1))
            sql = (
                f"INSERT INTO tracking_event ({cols}) VALUES {values} "
                "ON CONFLICT DO NOTHING RETURNING id"  # any unique index, partial ones too, as the app
            )
            groups = [batch] if "batch" in kind else [[row] for row in batch]
            for group in groups:  # one transaction per statement (autocommit), like one request
                cur = conn.execute(sql, [v for row in group for v in row])
                stored += len(cur.fetchall())
    out.append((stored, 0, n, []))


def _process(kind: str, threads: int, args: tuple, proc: int, seconds: float, start_at: float, queue) -> None:
    out: list = []
    target = _raw_thread if kind.startswith("raw_") else _http_thread
    while time.time() < start_at:
        time.sleep(0.005)
    deadline = time.perf_counter() + seconds
    workers = [
        threading.Thread(target=target, args=(kind, *args, f"{kind}-{start_at}-{proc}-{t}", deadline, out))
        for t in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    queue.put(
        (sum(o[0] for o in out), sum(o[1] for o in out), sum(o[2] for o in out), [x for o in out for x in o[3]])
    )


def measure(kind: str, *, procs: int, threads: int, seconds: float, args: tuple) -> dict:
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    start_at = time.time() + 0.5
    children = [
        ctx.Process(target=_process, args=(kind, threads, args, p, seconds, start_at, queue)) for p in range(procs)
    ]
    for child in children:
        child.start()
    results = [queue.get(timeout=seconds + 120) for _ in children]
    for child in children:
        child.join(timeout=30)
    stored, failed, requests = (sum(r[i] for r in results) for i in range(3))
    latencies = sorted(x for r in results for x in r[3])
    pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else None  # noqa: E731
    return {
        "kind": kind,
        "events_per_s": stored / seconds,
        "stored": stored,
        "failed": failed,
        "requests": requests,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
    }


# --- orchestration ----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("gunicorn did not become healthy in time")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _truncate(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE tracking_event, tracking_assignment")
        conn.execute("VACUUM ANALYZE")


def run_measurements(args: argparse.Namespace) -> list[dict]:
    """Every ingest figure and its ceiling, same cluster, same gunicorn (bench settings), one after another."""
    import psycopg

    with postgres_cluster() as cluster_url:
        with psycopg.connect(cluster_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE signaldash")
        env = {
            **os.environ,
            "DATABASE_URL": cluster_url,
            "DJANGO_SETTINGS_MODULE": "bench.settings_bench",  # the app plus a no-database DRF view
            "PYTHONPATH": str(ROOT),
            "SIGNALDASH_THROTTLE_RATE": "1000000000/min",  # measuring capacity, not the throttle
            "GUNICORN_WORKERS": str(args.workers),
            "GUNICORN_THREADS": str(args.threads),
            "GUNICORN_KEEPALIVE": "30",
        }
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
        setup = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "ingest_setup.py")],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        ids = json.loads(setup.stdout.strip().splitlines()[-1])
        port = _free_port()
        log = tempfile.NamedTemporaryFile(prefix="signaldash-bench-gunicorn-", suffix=".log", delete=False)  # noqa: SIM115
        gunicorn = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{port}",
             "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        results = []
        many = {"procs": args.clients, "threads": args.client_threads, "seconds": args.seconds}
        few = {"procs": args.clients, "threads": 2, "seconds": args.seconds}
        try:
            _wait_healthy(port, gunicorn)
            http_args = (port, ids["key"])
            print(f"gunicorn pid {gunicorn.pid}: {args.workers} workers × {args.threads} threads on 127.0.0.1:{port}")
            for kind in ("nodb", "single"):  # warm up (imports, connections)
                measure(kind, procs=1, threads=2, seconds=1, args=http_args)
            results.append(measure("nodb", **many, args=http_args))
            results.append(measure("single", **many, args=http_args))
            results.append(measure("batch100", **few, args=http_args))
            results.append(measure("batch1000", **few, args=http_args))
        finally:
            _stop(gunicorn)
        _truncate(cluster_url)
        raw_args = (cluster_url, ids)
        results.append(measure("raw_single", **many, args=raw_args))
        results.append(measure("raw_batch100", **few, args=raw_args))
        results.append(measure("raw_batch1000", **few, args=raw_args))
        print(f"gunicorn log: {log.name}")
    return results


def run(args: argparse.Namespace) -> int:
    results = run_measurements(args)
    _report(results, args)
    return 0 if all(r["failed"] == 0 for r in results) else 1


def _report(results: list[dict], args: argparse.Namespace) -> None:
    print(f"\nIngest benchmark ({os.cpu_count()} CPUs; {args.seconds:.0f} s per run)")
    print(f"{'run':<16}{'events/s':>12}{'requests':>10}{'failed':>8}{'p50 ms':>9}{'p99 ms':>9}")
    for r in results:
        p50 = f"{r['p50_ms']:.1f}" if r["p50_ms"] is not None else "-"
        p99 = f"{r['p99_ms']:.1f}" if r["p99_ms"] is not None else "-"
        print(f"{r['kind']:<16}{r['events_per_s']:>12,.0f}{r['requests']:>10,}{r['failed']:>8}{p50:>9}{p99:>9}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each measured run")
    parser.add_argument("--workers", type=int, default=max(2, (os.cpu_count() or 1)), help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=8, help="threads per gunicorn worker")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--client-threads", type=int, default=8, help="HTTP connections per client process")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
