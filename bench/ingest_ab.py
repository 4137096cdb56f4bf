"""Single events and assignments under two app configurations at once, interleaved: an A/B on a shared machine.

    .venv/bin/python bench/ingest_ab.py --rounds 4 --seconds 5 A:SIGNALDASH_DB_HEALTH_CHECK_SKIP_S=0 B:

One throwaway PostgreSQL cluster (fsync on), one gunicorn per configuration (gunicorn.conf.py, DEBUG=0, the
production defaults plus that configuration's environment), both up for the whole run. Each round measures, for
every configuration in turn (the order alternating between rounds), one event per request and one assignment per
request from 8 clients (`bench/ingest.py`'s load generators), and once per round the ceilings' parts (the
no-database view, the raw one-statement insert). On a machine whose load moves by the minute, runs of the two
configurations seconds apart share the same load, where separate `bench/ingest.py` runs do not; the CPU per
request of the app's processes and of the server (as in `bench/ingest.py`) is printed next to the rates.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import (  # noqa: E402
    SINGLE_CLIENTS,
    _free_port,
    _postmaster_pid,
    _reset,
    _stop,
    _wait_healthy,
    measure,
    measure_cpu,
)
from tests.pgcluster import postgres_cluster  # noqa: E402


def _configurations(specs: list[str]) -> list[tuple[str, dict[str, str]]]:
    """`NAME:VAR=value,VAR=value` → (name, environment); `NAME:` is the defaults."""
    configs = []
    for spec in specs:
        name, _, assignments = spec.partition(":")
        env = dict(a.split("=", 1) for a in assignments.split(",") if a)
        configs.append((name, env))
    return configs


def run(args: argparse.Namespace) -> int:
    import psycopg

    configs = _configurations(args.configs)
    procs, threads = SINGLE_CLIENTS
    with postgres_cluster(fast=False) as url:
        with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE signaldash")
        base = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "SIGNALDASH_", "GUNICORN_"))}
        base.update(DATABASE_URL=url, DEBUG="0", DJANGO_SETTINGS_MODULE="bench.settings_bench", PYTHONPATH=str(ROOT),
                    SIGNALDASH_THROTTLE_RATE="1000000000/min")  # fmt: skip
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=base, check=True)
        setup = subprocess.run([sys.executable, str(ROOT / "bench" / "ingest_setup.py")], cwd=ROOT, env=base,
                               check=True, capture_output=True, text=True)  # fmt: skip
        ids = json.loads(setup.stdout.strip().splitlines()[-1])
        postmaster = _postmaster_pid(url)
        servers = {}
        try:
            for name, env in configs:
                port = _free_port()
                log = tempfile.NamedTemporaryFile(prefix=f"signaldash-ab-{name}-", suffix=".log", delete=False)  # noqa: SIM115
                servers[name] = (port, subprocess.Popen(
                    [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "--bind",
                     f"127.0.0.1:{port}", "--log-level", "warning"],
                    cwd=ROOT, env={**base, **env}, stdout=log, stderr=subprocess.STDOUT,
                ))  # fmt: skip
            for port, proc in servers.values():
                _wait_healthy(port, proc)
                for kind in ("app:nodb", "app:single", "app:assign"):
                    measure(kind, procs=2, threads=4, seconds=1, args=(port, ids["key"]))
            rows = []
            for r in range(args.rounds):
                order = configs if r % 2 == 0 else configs[::-1]
                for name, _ in order:
                    port, proc = servers[name]
                    for kind in ("app:single", "app:assign"):
                        _reset(url)
                        res = measure_cpu(kind, procs=procs, threads=threads, seconds=args.seconds,
                                          args=(port, ids["key"]), app=proc.pid, db=postmaster)  # fmt: skip
                        rows.append({"round": r + 1, "config": name, **res})
                        _print(rows[-1])
                port, proc = servers[configs[0][0]]
                nodb = measure_cpu("app:nodb", procs=procs, threads=threads, seconds=args.seconds,
                                   args=(port, ids["key"]), app=proc.pid, db=postmaster)  # fmt: skip
                _reset(url)
                raw = measure_cpu("raw:single", procs=procs, threads=threads, seconds=args.seconds, args=(url, ids),
                                  app=None, db=postmaster)  # fmt: skip
                for res in (nodb, raw):
                    rows.append({"round": r + 1, "config": "-", **res})
                    _print(rows[-1])
        finally:
            for _, proc in servers.values():
                _stop(proc)
    _summary(rows, [name for name, _ in configs])
    return 0 if all(row["failed"] == 0 for row in rows) else 1


def _print(row: dict) -> None:
    app = f"{row['app_cpu_ms']:.3f}" if row.get("app_cpu_ms") is not None else "-"
    print(f"round {row['round']} {row['config']:<6}{row['kind']:<12}{row['events_per_s']:>8,.0f} /s  failed "
          f"{row['failed']}  p50 {row['p50_ms'] or 0:.1f} ms  app CPU {app} ms/req  db CPU {row['db_cpu_ms']:.3f} "
          f"ms/req  load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip


def _summary(rows: list[dict], names: list[str]) -> None:
    print("\nround  " + "  ".join(f"{n} ev/s (ratio)  {n} as/s (ratio)" for n in names) + "  ceiling")
    for r in sorted({row["round"] for row in rows}):
        by = {(row["config"], row["kind"]): row for row in rows if row["round"] == r}
        ceiling = 1 / (1 / by[("-", "app:nodb")]["events_per_s"] + 1 / by[("-", "raw:single")]["events_per_s"])
        cells = []
        for n in names:
            ev, asg = by[(n, "app:single")]["events_per_s"], by[(n, "app:assign")]["events_per_s"]
            cells.append(f"{ev:>8,.0f} ({ev / ceiling:.2f})  {asg:>8,.0f} ({asg / ceiling:.2f})")
        print(f"{r:>5}  " + "  ".join(cells) + f"  {ceiling:,.0f}")
    for n in names:
        for kind in ("app:single", "app:assign"):
            sel = [row for row in rows if row["config"] == n and row["kind"] == kind]
            print(f"{n} {kind:<11} median {statistics.median(x['events_per_s'] for x in sel):,.0f} /s, app CPU "
                  f"{statistics.median(x['app_cpu_ms'] for x in sel):.3f} ms/req, db CPU "
                  f"{statistics.median(x['db_cpu_ms'] for x in sel):.3f} ms/req")  # fmt: skip


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each measured run")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("configs", nargs="+", help="NAME:VAR=value,... (NAME: alone is the defaults)")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
