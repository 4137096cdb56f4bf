"""Profile POST /api/track (one event per request) in-process with pyinstrument, on a throwaway PostgreSQL.

`.venv/bin/python bench/profile_ingest.py [N] [BATCH] [--all]` prints where the time of N requests (default 500)
goes; with BATCH, N requests to POST /api/track/batch of BATCH events each (exposure + conversion per user);
`--all` shows library frames too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bootstrap import django_on_throwaway_postgres, profile  # noqa: E402


def _bench_key() -> str:
    """bench/ingest_setup.py's experiment and key (it prints them as JSON)."""
    from io import StringIO

    import ingest_setup

    buf, stdout = StringIO(), sys.stdout
    sys.stdout = buf
    try:
        ingest_setup.main()
    finally:
        sys.stdout = stdout
    return json.loads(buf.getvalue())["key"]


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    n = int(args[0]) if args else 500
    batch = int(args[1]) if len(args) > 1 else 0
    with django_on_throwaway_postgres():
        from django.test import Client

        client = Client(HTTP_AUTHORIZATION=f"Bearer {_bench_key()}")

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
        profile(lambda: [post(i) for i in range(n)], all_frames="--all" in argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
