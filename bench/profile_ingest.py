"""Profile POST /api/track (one event per request) in-process with pyinstrument, on a throwaway PostgreSQL.

`.venv/bin/python bench/profile_ingest.py [N] [BATCH]` prints where the time of N requests (default 500) goes;
with BATCH, N requests to POST /api/track/batch of BATCH events each (exposure + conversion per user).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.pgcluster import postgres_cluster  # noqa: E402


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 500
    batch = int(argv[1]) if len(argv) > 1 else 0
    with postgres_cluster() as url:
        import psycopg

        with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE signaldash")
        os.environ.update(DATABASE_URL=url, DJANGO_SETTINGS_MODULE="bench.settings_bench",
                          SIGNALDASH_THROTTLE_RATE="1000000000/min")  # fmt: skip
        import django

        django.setup()
        from django.core.management import call_command
        from django.test import Client
        from django.test.utils import setup_test_environment
        from pyinstrument import Profiler

        setup_test_environment()
        call_command("migrate", "--noinput", verbosity=0)
        sys.argv = ["ingest_setup"]
        from io import StringIO

        import ingest_setup

        buf, stdout = StringIO(), sys.stdout
        sys.stdout = buf
        ingest_setup.main()
        sys.stdout = stdout
        key = json.loads(buf.getvalue())["key"]
        client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")

        logging.getLogger("signaldash.api").setLevel(logging.WARNING)  # one line per request drowns the profile

        def post(i: int) -> None:
            if batch:
                events = [
                    {"experiment": "bench", "variant": "control", "user_key": f"b{i}-{j // 2}", "event_type": kind}
                    for j, kind in enumerate(["exposure", "conversion"] * (batch // 2))
                ]
                body = json.dumps({"events": events})
                response = client.post("/api/track/batch", body, content_type="application/json")
                assert response.status_code == 200 and response.json()["accepted"] == len(events), response.content
                return
            body = {"experiment": "bench", "variant": "control", "user_key": f"u{i}", "event_type": "exposure"}
            response = client.post("/api/track", json.dumps(body), content_type="application/json")
            assert response.status_code == 201, response.content

        for i in range(5 if batch else 50):
            post(-i - 1)  # warm-up
        profiler = Profiler(interval=0.0005)
        profiler.start()
        for i in range(n):
            post(i)
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))
        from django.db import connection

        connection.close()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main(sys.argv[1:]))
