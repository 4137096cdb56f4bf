"""Profile `POST /api/assign/all` (50 running experiments, bench/assign.py's setup) or `POST /api/assign` in-process
with pyinstrument, on a throwaway PostgreSQL with the bench settings (bench/settings_bench.py).

`.venv/bin/python bench/profile_assign.py [N] [all|single] [--queries] [--all]` prints where the time of N requests
for new users (default 500) goes; `--queries` prints the SQL of one request instead; `--all` shows library frames.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bootstrap import django_on_throwaway_postgres, profile  # noqa: E402


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    n = int(args[0]) if args else 500
    kind = args[1] if len(args) > 1 else "all"
    with django_on_throwaway_postgres(cache_table=True):
        import assign
        from django.db import connection
        from django.test import Client
        from django.test.utils import CaptureQueriesContext

        client = Client(HTTP_AUTHORIZATION=f"Bearer {assign.assign_setup()}")
        attributes = {"country": "DE", "app_version": "2.10.1", "plan": "pro"}

        def post(i: int) -> None:
            if kind == "single":
                path, body = "/api/assign", {"experiment": "bench-00", "user_key": f"u{i}", "attributes": attributes}
            else:
                path, body = "/api/assign/all", {"user_key": f"u{i}", "attributes": attributes}
            response = client.post(path, json.dumps(body), content_type="application/json")
            assert response.status_code == 200, response.content

        for i in range(20):
            post(-i - 1)  # warm-up: key cache, rules cache, connection
        if "--queries" in argv:
            with CaptureQueriesContext(connection) as queries:
                post(-100)
            for q in queries.captured_queries:
                print(q["time"], q["sql"][:300])
        else:
            profile(lambda: [post(i) for i in range(n)], interval=0.0002, all_frames="--all" in argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
