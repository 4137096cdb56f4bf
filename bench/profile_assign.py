"""Profile `POST /api/assign/all` (50 running experiments, bench/assign.py's setup) or `POST /api/assign` in-process
with pyinstrument, on a throwaway PostgreSQL with the bench settings (bench/settings_bench.py).

`.venv/bin/python bench/profile_assign.py [N] [all|single] [--queries]` prints where the time of N requests for new
users (default 500) goes; `--queries` prints the SQL of one request instead.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tests.pgcluster import postgres_cluster  # noqa: E402


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    n = int(args[0]) if args else 500
    kind = args[1] if len(args) > 1 else "all"
    with postgres_cluster() as url:
        import psycopg

        with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE signaldash")
        os.environ.update(DATABASE_URL=url, DJANGO_SETTINGS_MODULE="bench.settings_bench",
                          SIGNALDASH_THROTTLE_RATE="1000000000/min")  # fmt: skip
        import django

        django.setup()
        import assign
        from django.core.management import call_command
        from django.db import connection
        from django.test import Client
        from django.test.utils import CaptureQueriesContext, setup_test_environment
        from pyinstrument import Profiler

        setup_test_environment()
        call_command("migrate", "--noinput", verbosity=0)
        call_command("createcachetable", verbosity=0)
        client = Client(HTTP_AUTHORIZATION=f"Bearer {assign.assign_setup()}")
        logging.getLogger("signaldash.api").setLevel(logging.WARNING)  # one line per request drowns the profile
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
            profiler = Profiler(interval=0.0002)
            profiler.start()
            for i in range(n):
                post(i)
            profiler.stop()
            print(profiler.output_text(unicode=True, color=False, show_all=False))
        connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
