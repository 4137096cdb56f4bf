"""`make bench`: every benchmark in one run, printed as ONE table of figures next to their ceilings.

Not part of the test suite. Each part starts its own throwaway PostgreSQL (tests/pgcluster.py) on
127.0.0.1; the ingest part also serves the app with gunicorn (gunicorn.conf.py, bench settings that add a
no-database DRF view at /bench/nodb). Ratios matter, not absolute times: the machine is shared.

Environment: BENCH_SCALE (default 1: readouts at 1M and 10M events; 0.1: 100k and 1M), BENCH_SECONDS
(default 8: each ingest run), BENCH_REPEAT (default 5: readout samples). Results are also written to
bench/results/<UTC time>-<commit>.json. Full run on 2 cores: about 15 minutes (most of it loading and
indexing 10M events and the one full recompute); BENCH_SCALE=0.1 about 3 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=False)
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _rows(ingest_results: list[dict], readouts: list[dict]) -> list[tuple]:
    import ingest

    rows = ingest.table_rows(ingest_results) if ingest_results else []
    for r in readouts:
        size = f"{r['events'] / 1e6:g}M"
        bare = r["bare"][0] * 1000
        rows.append((f"readout API p50 @{size}", r["api"][0] * 1000, "ms", "bare aggregate SQL", bare, "< 100 ms"))
        rows.append((f"readout page p50 @{size}", r["page"][0] * 1000, "ms", "bare aggregate SQL", bare, "< 100 ms"))
        rows.append((f"API after +1k events @{size}", r["api_after_1k_events"][0] * 1000, "ms", "bare aggregate SQL",
                     bare, ""))  # fmt: skip
        rows.append((f"first readout (full) @{size}", r["first_readout"][0] * 1000, "ms", "bare aggregate SQL", bare,
                     ""))  # fmt: skip
        rows += _rule_rows(size, r.get("rules"))
    return rows


def _rule_rows(size: str, rules: dict | None) -> list[tuple]:
    """Catalog rule metrics (bench/readout.py rules_measure): the plan of every kind, the p99 cap, per kind."""
    if not rules:
        return []
    ref = rules["events_path_api"][0] * 1000 if "events_path_api" in rules else None
    base = "events path (before)" if ref is not None else ""
    rows = [(f"readout API, rule plan p50 @{size}", rules["plan_api"][0] * 1000, "ms", base, ref, "< 100 ms"),
            (f"readout API, + p99 cap p50 @{size}", rules["percentile_api"][0] * 1000, "ms", base, ref,
             "< 300 ms @1M exposed"),
            (f"rule API +1k events @{size}", rules["percentile_api_after_1k_events"][0] * 1000, "ms", "", None, ""),
            (f"first rule readout (build) @{size}", rules["build"] * 1000, "ms", "", None, "")]  # fmt: skip
    for kind in ("windowed", "capped absolute", "ratio", "funnel", "percentile"):
        rows.append((f"  rule read: {kind} @{size}", rules[f"read {kind}"][0] * 1000, "ms", "", None, ""))
    return rows


def _print(rows: list[tuple]) -> None:
    import ingest

    ingest.print_rows(rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parts = ["ingest", "readout", "assign", "warehouse", "list"]
    parser.add_argument("parts", nargs="*", default=parts, help=", ".join(parts))
    args = parser.parse_args(argv)
    scale = float(os.environ.get("BENCH_SCALE", "1"))
    seconds = float(os.environ.get("BENCH_SECONDS", "8"))
    repeat = int(os.environ.get("BENCH_REPEAT", "5"))
    started = time.monotonic()
    ingest_results: list[dict] = []
    readout_results: list[dict] = []
    if "ingest" in args.parts:
        import ingest

        ns = argparse.Namespace(seconds=seconds)
        ingest_results = ingest.run_measurements(ns)
        ingest._report(ingest_results, ns)
    if "readout" in args.parts:
        import readout

        sizes = [int(1_000_000 * scale), int(10_000_000 * scale)]
        readout_results = readout.run_measurements(sizes, repeat)
    if "assign" in args.parts:  # its own process: it sets up Django against its own cluster (bench/assign.py)
        subprocess.run([sys.executable, str(HERE / "assign.py")], cwd=ROOT, check=False)
    if "warehouse" in args.parts:  # its own process: it sets up Django on a throwaway SQLite database
        events = str(int(10_000_000 * scale))
        subprocess.run([sys.executable, str(HERE / "warehouse.py"), "--events", events, "--spark"], check=False)
    list_result: dict = {}
    if "list" in args.parts:  # issue 17: the experiment list at 1,000 experiments (bench/program_list.py)
        import program_list

        list_result = program_list.run_measurements(int(os.environ.get("BENCH_LIST_EXPERIMENTS", "1000")), repeat * 3)
    rows = _rows(ingest_results, readout_results)
    if list_result:
        n = f"{list_result['experiments']:,}"
        stale = list_result["one_stale"][0] * 1000
        rows.append((f"list page p50 @{n} exps", list_result["list"][0] * 1000, "ms", "after one catch-up", stale,
                     "< 200 ms"))  # fmt: skip
        rows.append((f"list CSV p50 @{n} exps", list_result["csv"][0] * 1000, "ms", "first request (all stale)",
                     list_result["cold"] * 1000, ""))  # fmt: skip
    if rows:
        _print(rows)
    elapsed = time.monotonic() - started
    print(f"\nbench took {elapsed / 60:.1f} min (BENCH_SCALE={scale:g}, {os.cpu_count()} CPUs)")
    commit = _commit()
    out = HERE / "results" / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{commit}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"commit": commit, "scale": scale, "cpus": os.cpu_count(), "seconds": elapsed,
                               "ingest": ingest_results, "readout": readout_results, "list": list_result,
                               "table": [list(r) for r in rows]}, indent=1, default=str))  # fmt: skip
    print(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
