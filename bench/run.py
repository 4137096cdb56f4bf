"""Run every benchmark in bench/ (one command: `make bench`). Not part of the test suite.

Each benchmark starts its own throwaway PostgreSQL cluster and reports ratios against a
baseline measured in the same run, because absolute times on shared machines mean little.
Pass names to run a subset: `python bench/run.py ingest`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = {"ingest": HERE / "ingest.py", "readout": HERE / "readout.py"}


def main(argv: list[str]) -> int:
    selected = argv or list(BENCHES)
    status = 0
    for name in selected:
        script = BENCHES.get(name)
        if script is None or not script.exists():
            print(f"unknown benchmark {name!r}; available: {', '.join(BENCHES)}")
            status = 2
            continue
        print(f"\n##### bench: {name} #####", flush=True)
        status |= subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
