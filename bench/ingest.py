"""Ingest benchmark: events/s through the real app next to what PostgreSQL takes for the SAME work, same run.

One command: `.venv/bin/python bench/ingest.py` (or `make bench`). It
1. starts a throwaway PostgreSQL cluster with fsync on (production durability), migrates it;
2. serves the app with gunicorn from gunicorn.conf.py, DEBUG=0 and the production defaults (connection reuse,
   workers and threads from the recipe); only the throttle is lifted (measuring capacity, not the limit);
3. drives it from load generators in separate processes whose request bodies are encoded before the clock
   starts, for a fixed time per run;
4. measures the same-work ceilings with psycopg against the same tables (all indexes and constraints):
   - batch: per batch ONE transaction inserting exactly the assignments and the events the app writes for that
     body (`ON CONFLICT DO NOTHING`, column arrays through `unnest`), for 100, 500 and 1,000 events, for two
     workloads: `exposures` (first exposures of new users: one assignment + one event each) and `mixed`
     (per new user: an exposure, a conversion without event_id, and two purchases with their own event_id);
   - single: one statement per event doing the same work (the assignment and the event), autocommitted, from
     as many connections as the app has clients; the composite single-event ceiling adds the no-database DRF
     view's CPU time per request: 1 / (1/nodb_rate + 1/raw_single_rate), both spent on the same cores;
     measured in --single-rounds rounds (default 5) of no-database view, events, assignments and raw statement
     one right after the other, each round's ratio to its own ceiling, the median round reported;
5. keeps the figures the bench reported before, labelled with what they measure (`legacy`): pairs of an
   exposure and a conversion per user against a raw insert of the events only (less work than the app);
6. prints every figure next to its ceiling, stops gunicorn by PID and removes the cluster.

Not part of pytest (not a timed test). About 5 minutes with the defaults; `--only single` (the one-event and
one-assignment figures with their ceilings) about 2 minutes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.pgcluster import postgres_cluster  # noqa: E402

BATCH_SIZES = (100, 500, 1000)
LEGACY_BATCH_SIZES = (100, 1000)
EVENTS_PER_USER = {"exposures": 1, "mixed": 4, "pairs": 2}
BATCH_CLIENTS = 4  # client processes posting batches (one connection each)
SINGLE_CLIENTS = (4, 2)  # processes x threads posting single events: 8 concurrent clients
SERIAL_SECONDS = 3.0
SINGLE_ROUNDS = 5  # rounds of the single-event figures (bench/ingest.py --single-rounds)
EVENT_COLUMNS = (
    "experiment_id, variant_id, user_key, event_type, metric, value, occurred_at, received_at, props, event_id"
)


# --- workloads ---------------------------------------------------------------------------------------------
def user_events(workload: str, user: str, n: int) -> list[dict]:
    """The events of one new user in `workload`, as the API receives them."""
    variant = "control" if n % 2 else "treatment"
    base = {"experiment": "bench", "variant": variant, "user_key": user}
    exposure = {**base, "event_type": "exposure"}
    if workload == "exposures":
        return [exposure]
    if workload == "pairs":  # the legacy workload
        return [exposure, {**base, "event_type": "conversion", "metric": "purchase"}]
    purchase = {**base, "event_type": "conversion", "metric": "purchase", "value": 12.5}
    return [
        exposure,
        {**base, "event_type": "conversion", "metric": "signup"},
        {**purchase, "event_id": f"{user}-p1"},
        {**purchase, "value": 30.0, "event_id": f"{user}-p2"},  # a repeat purchase: its own event_id
    ]


def workload_events(workload: str, prefix: str, start: int, count: int) -> list[dict]:
    """`count` events of new users (the batch's users are numbered from `start`)."""
    per_user = EVENTS_PER_USER[workload]
    events: list[dict] = []
    for n in range(start, start + count // per_user):
        events.extend(user_events(workload, f"{prefix}-{n}", n))
    return events


def _parse_kind(kind: str) -> tuple[str, str, int]:
    """'app:mixed:500' -> ('app', 'mixed', 500); 'app:single' -> ('app', 'single', 1)."""
    parts = kind.split(":")
    return parts[0], parts[1], int(parts[2]) if len(parts) > 2 else 1


# --- load generators (run in child processes; bodies are encoded before the clock starts) ----------------
def _http_bodies(kind: str, prefix: str, budget: int) -> tuple[str, list[bytes], int]:
    _, what, size = _parse_kind(kind)
    if what in ("single", "serial_track"):
        bodies = [json.dumps(user_events("exposures", f"{prefix}-{n}", n)[0]).encode() for n in range(budget)]
        return "/api/track", bodies, 1
    if what == "nodb":
        bodies = [json.dumps(user_events("exposures", f"{prefix}-{n}", n)[0]).encode() for n in range(budget)]
        return "/bench/nodb", bodies, 1
    if what in ("assign", "serial_assign"):
        bodies = [json.dumps({"experiment": "bench", "user_key": f"{prefix}-{n}"}).encode() for n in range(budget)]
        return "/api/assign", bodies, 1
    if what == "serial_healthz":
        return "/healthz", [b""] * budget, 0
    users = size // EVENTS_PER_USER[what]
    bodies = [json.dumps({"events": workload_events(what, prefix, b * users, size)}).encode() for b in range(budget)]
    return "/api/track/batch", bodies, size


def _http_thread(kind: str, port: int, key: str, prefix: str, budget: int, start_at: float, seconds: float,
                 out: list) -> None:  # fmt: skip
    path, bodies, _ = _http_bodies(kind, prefix, budget)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    method = "GET" if path == "/healthz" else "POST"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    stored = failed = 0
    latencies: list[float] = []
    while time.time() < start_at:
        time.sleep(0.002)
    began = time.perf_counter()
    deadline = began + seconds
    for body in bodies:
        if time.perf_counter() >= deadline:
            break
        started = time.perf_counter()
        conn.request(method, path, body=body or None, headers=headers if method == "POST" else {})
        response = conn.getresponse()
        data = response.read()
        latencies.append(time.perf_counter() - started)
        if path == "/api/track/batch":
            if response.status == 200:
                result = json.loads(data)
                stored += result["accepted"]
                failed += len(result["rejected"])
            else:
                failed += 1
        else:
            ok = response.status in (200, 201)
            stored, failed = stored + ok, failed + (not ok)
    conn.close()
    out.append((stored, failed, len(latencies), latencies, time.perf_counter() - began))


def _raw_params(kind: str, ids: dict, prefix: str, budget: int) -> list[tuple]:
    """Per batch (or per event for `raw:single`): the assignment and event columns the app would write."""
    _, what, size = _parse_kind(kind)
    now = dt.datetime.now(dt.UTC)
    exp, variants = ids["experiment_id"], ids["variant_ids"]
    workload = "exposures" if what == "single" else what
    users = max(1, size // EVENTS_PER_USER[workload])
    batches = []
    for b in range(budget):
        events = workload_events(workload, prefix, b * users, max(size, EVENTS_PER_USER[workload]))
        exposures = [e for e in events if e["event_type"] == "exposure"]
        assignment_cols = ([e["user_key"] for e in exposures], [variants[e["variant"]] for e in exposures])
        event_cols = (
            [variants[e["variant"]] for e in events],
            [e["user_key"] for e in events],
            [e["event_type"] for e in events],
            [e.get("metric", "") for e in events],
            [e.get("value") for e in events],
            [e.get("event_id") for e in events],
        )
        batches.append((exp, now, assignment_cols, event_cols))
    return batches


RAW_ASSIGNMENTS_SQL = (
    "INSERT INTO tracking_assignment (experiment_id, user_key, variant_id, assigned_at, source) "
    "SELECT %s, u, v, %s, 'upstream' FROM unnest(%s::text[], %s::bigint[]) AS t(u, v) ON CONFLICT DO NOTHING"
)
RAW_EVENTS_SQL = (
    f"INSERT INTO tracking_event ({EVENT_COLUMNS}) "
    "SELECT %s, v, u, t, m, x, %s, %s, '{}'::jsonb, i "
    "FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::float8[], %s::text[]) AS r(v, u, t, m, x, i) "
    "ON CONFLICT DO NOTHING"
)
# One statement per event: the first exposure's assignment and the event (the single-event same work).
RAW_SINGLE_SQL = (
    "WITH a AS (INSERT INTO tracking_assignment (experiment_id, user_key, variant_id, assigned_at, source) "
    "VALUES (%(e)s, %(u)s, %(v)s, %(now)s, 'upstream') ON CONFLICT DO NOTHING) "
    f"INSERT INTO tracking_event ({EVENT_COLUMNS}) "
    "VALUES (%(e)s, %(v)s, %(u)s, 'exposure', '', NULL, %(now)s, %(now)s, '{}'::jsonb, NULL) ON CONFLICT DO NOTHING"
)
# The bench's former ceiling (legacy): the events only, no assignments, one multi-row INSERT per batch.
RAW_EVENTS_ONLY_SQL = RAW_EVENTS_SQL


def _raw_thread(kind: str, url: str, ids: dict, prefix: str, budget: int, start_at: float, seconds: float,
                out: list) -> None:  # fmt: skip
    import psycopg

    _, what, _ = _parse_kind(kind)
    batches = _raw_params(kind, ids, prefix, budget)
    stored = requests = 0
    with psycopg.connect(url, autocommit=True) as conn:
        while time.time() < start_at:
            time.sleep(0.002)
        began = time.perf_counter()
        deadline = began + seconds
        for exp, now, (users, user_variants), columns in batches:
            if time.perf_counter() >= deadline:
                break
            if what == "single":
                conn.execute(RAW_SINGLE_SQL, {"e": exp, "u": users[0], "v": user_variants[0], "now": now})
            elif kind.startswith("raw_legacy"):
                conn.execute(RAW_EVENTS_ONLY_SQL, [exp, now, now, *columns])
            else:
                with conn.transaction():  # the app's batch: one transaction, assignments then events
                    conn.execute(RAW_ASSIGNMENTS_SQL, [exp, now, users, user_variants])
                    conn.execute(RAW_EVENTS_SQL, [exp, now, now, *columns])
            stored += len(columns[0])
            requests += 1
    out.append((stored, 0, requests, [], time.perf_counter() - began))


def _process(kind: str, threads: int, args: tuple, proc: int, budget: int, seconds: float, start_at: float,
             queue) -> None:  # fmt: skip
    out: list = []
    target = _raw_thread if kind.startswith("raw") else _http_thread
    workers = [
        threading.Thread(
            target=target, args=(kind, *args, f"{kind}-{start_at}-{proc}-{t}", budget, start_at, seconds, out)
        )
        for t in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    queue.put(out)


def _budget(kind: str, seconds: float) -> int:
    """Bodies to pre-encode per client: comfortably more than it can send in `seconds`."""
    _, what, size = _parse_kind(kind)
    if size == 1:
        per_second = 4000 if kind.startswith("raw") else 1500
    else:  # events per second one client may reach: the raw ceiling ~10k, the app less
        per_second = (12_000 if kind.startswith("raw") else 6_000) / size
    return int(per_second * seconds) + 10


def measure(kind: str, *, procs: int, threads: int, seconds: float, args: tuple) -> dict:
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    budget = _budget(kind, seconds)
    size = max(1, _parse_kind(kind)[2])
    start_at = time.time() + 1.5 + budget * size * threads * 1e-5  # after every client encoded its bodies
    children = [
        ctx.Process(target=_process, args=(kind, threads, args, p, budget, seconds, start_at, queue))
        for p in range(procs)
    ]
    for child in children:
        child.start()
    outs = [o for _ in children for o in queue.get(timeout=seconds + 300)]
    for child in children:
        child.join(timeout=30)
    stored, failed, requests = (sum(o[i] for o in outs) for i in range(3))
    elapsed = max(o[4] for o in outs)
    latencies = sorted(x for o in outs for x in o[3])
    pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else None  # noqa: E731
    return {
        "kind": kind,
        "events_per_s": stored / elapsed if elapsed else 0.0,
        "requests_per_s": requests / elapsed if elapsed else 0.0,
        "stored": stored,
        "failed": failed,
        "requests": requests,
        "clients": procs * threads,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
    }


# --- orchestration -----------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
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


def _reset(url: str) -> None:
    """Every run starts from empty tables (same index depth for the app and its ceiling), in the state of a fresh
    install: the other tables vacuumed and analyzed, the tracking tables truncated afterwards, so that their
    statistics say "never analyzed" (as after `migrate`) rather than "analyzed and empty" — a plan cached on a
    table believed empty (a sequential scan) would otherwise stay in use while the run fills it."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("TRUNCATE tracking_event, tracking_assignment, tracking_covariate, tracking_variantconflict")


def _tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) of process `root`, its reaped children and its live descendants (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents, times = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14]))  # own, reaped children
    total, todo = times.get(root, (0, 0))[0] + times.get(root, (0, 0))[1], [root]
    while todo:  # the children's own times; what exited and was reaped is in its parent's second figure
        parent = todo.pop()
        for pid, ppid in parents.items():
            if ppid == parent:
                total += times[pid][0]
                todo.append(pid)
    return total / tick


def _postmaster_pid(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        data = conn.execute("SHOW data_directory").fetchone()[0]
    return int((Path(data) / "postmaster.pid").read_text().split()[0])


def measure_cpu(kind: str, *, procs: int, threads: int, seconds: float, args: tuple, app: int | None, db: int) -> dict:
    """`measure`, plus the CPU time per request of the app's processes (gunicorn) and of the PostgreSQL server.

    CPU per request hardly depends on what else the machine runs, where requests per second do: on shared cores
    it is the steadier before/after figure (the load generators are not counted).
    """
    app_before = _tree_cpu_s(app) if app else 0.0
    db_before = _tree_cpu_s(db)
    result = measure(kind, procs=procs, threads=threads, seconds=seconds, args=args)
    requests = result["requests"] or 1
    time.sleep(0.5)  # the clients' closed connections: their server processes exit and are reaped (counted)
    result["app_cpu_ms"] = ((_tree_cpu_s(app) - app_before) * 1000 / requests) if app else None
    result["db_cpu_ms"] = (_tree_cpu_s(db) - db_before) * 1000 / requests
    return result


def _fsync(url: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SHOW fsync").fetchone()[0]


def _options(args: argparse.Namespace) -> tuple[str, int]:
    """(--only, --single-rounds), with their defaults for callers that pass only `seconds` (bench/run.py)."""
    return getattr(args, "only", "all"), max(1, getattr(args, "single_rounds", SINGLE_ROUNDS))


SERIAL_RUNS = (
    ("app:serial_healthz", 1, 1, SERIAL_SECONDS),
    ("app:serial_track", 1, 1, SERIAL_SECONDS),
    ("app:serial_assign", 1, 1, SERIAL_SECONDS),
)  # one request at a time: the p50 figures


def _app_runs(args: argparse.Namespace) -> list[tuple[str, int, int, float]]:
    """(kind, processes, threads, seconds) of the batch runs against the app, in order."""
    if _options(args)[0] == "single":
        return []
    runs = [(f"app:{w}:{n}", BATCH_CLIENTS, 1, args.seconds) for w in ("exposures", "mixed") for n in BATCH_SIZES]
    runs += [(f"app_legacy:pairs:{n}", 2, 2, args.seconds) for n in LEGACY_BATCH_SIZES]
    return runs


def _single_round(args: argparse.Namespace) -> list[tuple[str, int, int, float]]:
    """One round of the single-event figures and their ceiling's parts, measured one right after the other."""
    procs, threads = SINGLE_CLIENTS
    return [(kind, procs, threads, args.seconds) for kind in ("app:nodb", "app:single", "app:assign", "raw:single")]


def _raw_runs(args: argparse.Namespace) -> list[tuple[str, int, int, float]]:
    if _options(args)[0] == "single":
        return []
    runs = [(f"raw:{w}:{n}", BATCH_CLIENTS, 1, args.seconds) for w in ("exposures", "mixed") for n in BATCH_SIZES]
    runs += [(f"raw_legacy:pairs:{n}", 2, 2, args.seconds) for n in LEGACY_BATCH_SIZES]
    return runs


def run_measurements(args: argparse.Namespace) -> list[dict]:
    """Every ingest figure and its ceiling: same cluster (fsync on), one after another, each from empty tables."""
    import psycopg

    with postgres_cluster(fast=False) as cluster_url:
        with psycopg.connect(cluster_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE signaldash")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "SIGNALDASH_", "GUNICORN_"))}
        env.update(
            DATABASE_URL=cluster_url,
            DEBUG="0",
            DJANGO_SETTINGS_MODULE="bench.settings_bench",  # the app plus a no-database DRF view
            PYTHONPATH=str(ROOT),
            SIGNALDASH_THROTTLE_RATE="1000000000/min",  # measuring capacity, not the throttle
        )
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
        setup = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "ingest_setup.py")], cwd=ROOT, env=env, check=True,
            capture_output=True, text=True,
        )  # fmt: skip
        ids = json.loads(setup.stdout.strip().splitlines()[-1])
        print(f"PostgreSQL fsync={_fsync(cluster_url)}")
        postmaster = _postmaster_pid(cluster_url)
        port = _free_port()
        log = tempfile.NamedTemporaryFile(prefix="signaldash-bench-gunicorn-", suffix=".log", delete=False)  # noqa: SIM115
        gunicorn = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{port}",
             "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        results = []
        raw_args = (cluster_url, ids)
        try:
            _wait_healthy(port, gunicorn)
            http_args = (port, ids["key"])
            print(f"gunicorn pid {gunicorn.pid} (gunicorn.conf.py defaults) on 127.0.0.1:{port}")
            only, rounds = _options(args)
            warm_up = ("app:nodb", "app:single", "app:assign") + (("app:exposures:500",) if only == "all" else ())
            for kind in warm_up:  # warm up every worker
                measure(kind, procs=2, threads=4, seconds=1, args=http_args)
            runs = [(run, None) for run in SERIAL_RUNS]
            runs += [(run, r) for r in range(rounds) for run in _single_round(args)]
            runs += [(run, None) for run in _app_runs(args)]
            for (kind, procs, threads, seconds), round_ in runs:
                _reset(cluster_url)
                raw = kind.startswith("raw")  # the ceiling's raw part: psycopg, gunicorn idle meanwhile
                results.append(
                    measure_cpu(kind, procs=procs, threads=threads, seconds=seconds,
                                args=raw_args if raw else http_args,
                                app=None if raw else gunicorn.pid, db=postmaster)
                )  # fmt: skip
                results[-1]["round"] = round_
                tag = f" (round {round_ + 1})" if round_ is not None else ""
                print(f"  {kind:<24}{results[-1]['events_per_s']:>10,.0f} /s{tag}", flush=True)
        finally:
            _stop(gunicorn)
        for kind, procs, threads, seconds in _raw_runs(args):
            _reset(cluster_url)
            results.append(
                measure_cpu(kind, procs=procs, threads=threads, seconds=seconds, args=raw_args, app=None, db=postmaster)
            )
            print(f"  {kind:<24}{results[-1]['events_per_s']:>10,.0f} /s", flush=True)
        print(f"gunicorn log: {log.name}")
    return results


def single_ceiling(by: dict[str, dict]) -> float:
    """The composite single-event ceiling: the no-database view's time per request plus the raw insert's."""
    return 1 / (1 / by["app:nodb"]["events_per_s"] + 1 / by["raw:single"]["events_per_s"])


def single_rounds(results: list[dict]) -> list[dict[str, dict]]:
    """The single-event rounds: per round, its runs by kind (app:nodb, app:single, app:assign, raw:single)."""
    rounds: dict[int, dict[str, dict]] = {}
    for r in results:
        if r.get("round") is not None:
            rounds.setdefault(r["round"], {})[r["kind"]] = r
    return [rounds[k] for k in sorted(rounds)]


def table_rows(results: list[dict]) -> list[tuple]:
    """(figure, value, unit, ceiling label, ceiling, target[, ratio]) for every ingest figure.

    The single-event figures are measured in rounds (each: the no-database view, events, assignments and the raw
    statement, one right after the other); each round's ratio is to its own composite ceiling, and the figure is
    the median round (its ratio the median of the rounds' ratios): on a shared machine one run's ceiling and
    figure can move by a factor of two between minutes."""
    by = {r["kind"]: r for r in results if r.get("round") is None}
    rows = []
    for what, label in (("healthz", "/healthz"), ("track", "POST /api/track"), ("assign", "POST /api/assign")):
        rows.append((f"{label} p50, 1 at a time", by[f"app:serial_{what}"]["p50_ms"], "ms", "", None, ""))
    rounds = single_rounds(results)
    composites = [single_ceiling(r) for r in rounds]
    for kind, label, unit, target in (("app:single", "1 event/request (8 clients)", "ev/s", "≥ 0.70"),
                                      ("app:assign", "1 assignment/request (8 cl.)", "as/s", "≥ 0.50")):  # fmt: skip
        rates = [r[kind]["events_per_s"] for r in rounds]
        ratios = [rate / c for rate, c in zip(rates, composites, strict=True)]
        rows.append((f"{label}, median of {len(rounds)}", statistics.median(rates), unit, "composite single ceiling",
                     statistics.median(composites), target, statistics.median(ratios)))  # fmt: skip
        if len(rounds) > 1:
            rows.append(("  ratio per round", None, "", ", ".join(f"{x:.2f}" for x in ratios), None, ""))
    rows.append(("  no-DB DRF view, median", statistics.median(r["app:nodb"]["events_per_s"] for r in rounds),
                 "req/s", "", None, ""))  # fmt: skip
    rows.append(("  raw same-work 1-event stmt, median",
                 statistics.median(r["raw:single"]["events_per_s"] for r in rounds), "ev/s", "", None, ""))  # fmt: skip
    if "app:exposures:500" not in by:  # --only single
        return rows
    targets = {("exposures", 500): "≥ 0.50", ("exposures", 100): "≥ 0.40", ("mixed", 500): "≥ 0.50"}
    for workload in ("exposures", "mixed"):
        for n in BATCH_SIZES:
            rows.append((f"batch {n:,} {workload}", by[f"app:{workload}:{n}"]["events_per_s"], "ev/s",
                         "same-work psycopg txn", by[f"raw:{workload}:{n}"]["events_per_s"],
                         targets.get((workload, n), "")))  # fmt: skip
    for n in LEGACY_BATCH_SIZES:
        rows.append((f"legacy: batch {n:,} pairs", by[f"app_legacy:pairs:{n}"]["events_per_s"], "ev/s",
                     "raw events-only INSERT", by[f"raw_legacy:pairs:{n}"]["events_per_s"], ""))  # fmt: skip
    return rows


def print_rows(rows: list[tuple]) -> None:
    head = f"{'figure':<32}{'value':>10} {'unit':<6}{'ceiling (same run)':<26}{'ceiling':>10}{'ratio':>7}  target"
    print("\n" + head + "\n" + "-" * len(head))
    for label, value, unit, ceiling_label, ceiling, target, *given in rows:
        v = f"{value:,.1f}" if value is not None else "-"
        c = f"{ceiling:,.0f}" if ceiling is not None else ""
        ratio = f"{given[0]:.2f}" if given else f"{value / ceiling:.2f}" if value and ceiling else ""
        print(f"{label:<32}{v:>10} {unit:<6}{ceiling_label:<26}{c:>10}{ratio:>7}  {target}")


def _report(results: list[dict], args: argparse.Namespace) -> None:
    print(f"\nIngest benchmark ({os.cpu_count()} CPUs; {args.seconds:.0f} s per run; fsync on)")
    print(f"{'run':<24}{'events/s':>10}{'requests':>10}{'failed':>8}{'clients':>8}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'app CPU ms/req':>16}{'db CPU ms/req':>15}")  # fmt: skip
    for r in results:
        p50 = f"{r['p50_ms']:.1f}" if r["p50_ms"] is not None else "-"
        p99 = f"{r['p99_ms']:.1f}" if r["p99_ms"] is not None else "-"
        app_cpu = f"{r['app_cpu_ms']:.3f}" if r.get("app_cpu_ms") is not None else "-"
        db_cpu = f"{r['db_cpu_ms']:.3f}" if r.get("db_cpu_ms") is not None else "-"
        print(f"{r['kind']:<24}{r['events_per_s']:>10,.0f}{r['requests']:>10,}{r['failed']:>8}{r['clients']:>8}"
              f"{p50:>9}{p99:>9}{app_cpu:>16}{db_cpu:>15}")  # fmt: skip
    print_rows(table_rows(results))


def run(args: argparse.Namespace) -> int:
    results = run_measurements(args)
    _report(results, args)
    return 0 if all(r["failed"] == 0 for r in results) else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each measured run")
    parser.add_argument(
        "--only", choices=("all", "single"), default="all",
        help="single: only the one-event and one-assignment figures and their ceilings (about a minute)",
    )  # fmt: skip
    parser.add_argument("--single-rounds", type=int, default=SINGLE_ROUNDS,
                        help="rounds of the single-event figures and their ceiling (median reported)")  # fmt: skip
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
