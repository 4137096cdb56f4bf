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

TARGETS = {"single": 0.6, "batch100": 0.5, "batch1000": 0.5}


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=False)
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def _rows(ingest: list[dict], readouts: list[dict]) -> list[tuple]:
    by = {r["kind"]: r for r in ingest}
    rows = []

    def add(label, value, unit, ceiling_label, ceiling, target=""):
        rows.append((label, value, unit, ceiling_label, ceiling, target))

    add("1 event/request", by["single"]["events_per_s"], "ev/s", "no-DB DRF view, req/s", by["nodb"]["events_per_s"],
        "≥ 0.60")  # fmt: skip
    add("1 event/request p50", by["single"]["p50_ms"], "ms", "no-DB DRF view p50", by["nodb"]["p50_ms"])
    add("1 event/request p99", by["single"]["p99_ms"], "ms", "no-DB DRF view p99", by["nodb"]["p99_ms"])
    for n in (100, 1000):
        add(f"batch of {n:,}", by[f"batch{n}"]["events_per_s"], "ev/s", f"raw psycopg {n:,}-row INSERT",
            by[f"raw_batch{n}"]["events_per_s"], "≥ 0.50")  # fmt: skip
    add("(raw 1-row INSERT)", by["raw_single"]["events_per_s"], "ev/s", "", None)
    for r in readouts:
        size = f"{r['events'] / 1e6:g}M"
        bare = r["bare"][0] * 1000
        add(f"readout API p50 @{size}", r["api"][0] * 1000, "ms", "bare aggregate SQL", bare, "< 100 ms")
        add(f"readout page p50 @{size}", r["page"][0] * 1000, "ms", "bare aggregate SQL", bare, "< 100 ms")
        add(f"API after +1k events @{size}", r["api_after_1k_events"][0] * 1000, "ms", "bare aggregate SQL", bare)
        add(f"first readout (full) @{size}", r["first_readout"][0] * 1000, "ms", "bare aggregate SQL", bare)
    return rows


def _print(rows: list[tuple]) -> None:
    head = f"{'figure':<30}{'value':>12} {'unit':<5}{'ceiling (same run)':<28}{'ceiling':>11}{'ratio':>8}  target"
    print("\n" + head + "\n" + "-" * len(head))
    for label, value, unit, ceiling_label, ceiling, target in rows:
        v = f"{value:,.1f}" if value is not None else "-"
        c = f"{ceiling:,.1f}" if ceiling is not None else ""
        print(f"{label:<30}{v:>12} {unit:<5}{ceiling_label:<28}{c:>11}{_ratio(value, ceiling):>8}  {target}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", default=["ingest", "readout", "list"], help="ingest, readout, list")
    args = parser.parse_args(argv)
    scale = float(os.environ.get("BENCH_SCALE", "1"))
    seconds = float(os.environ.get("BENCH_SECONDS", "8"))
    repeat = int(os.environ.get("BENCH_REPEAT", "5"))
    started = time.monotonic()
    ingest_results: list[dict] = []
    readout_results: list[dict] = []
    if "ingest" in args.parts:
        import ingest

        ns = argparse.Namespace(seconds=seconds, workers=max(2, os.cpu_count() or 1), threads=8, clients=2,
                                client_threads=8)  # fmt: skip
        ingest_results = ingest.run_measurements(ns)
        ingest._report(ingest_results, ns)
    if "readout" in args.parts:
        import readout

        sizes = [int(1_000_000 * scale), int(10_000_000 * scale)]
        readout_results = readout.run_measurements(sizes, repeat)
    list_result: dict = {}
    if "list" in args.parts:  # issue 17: the experiment list at 1,000 experiments (bench/program_list.py)
        import program_list

        list_result = program_list.run_measurements(int(os.environ.get("BENCH_LIST_EXPERIMENTS", "1000")), repeat * 3)
    rows = _rows(ingest_results, readout_results) if ingest_results and readout_results else []
    if list_result:
        n = f"{list_result['experiments']:,}"
        ceiling = list_result["rollup_sums"][0] * 1000
        rows.append((f"list page p50 @{n} exps", list_result["list"][0] * 1000, "ms", "its rollup-sums query", ceiling,
                     "< 200 ms"))  # fmt: skip
        rows.append((f"list CSV p50 @{n} exps", list_result["csv"][0] * 1000, "ms", "its rollup-sums query", ceiling,
                     ""))  # fmt: skip
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
