"""The in-process bench bootstrap shared by the profilers (bench/profile_ingest.py, bench/profile_assign.py).

`django_on_throwaway_postgres()` starts a throwaway PostgreSQL cluster (tests/pgcluster.py), creates the database,
sets up Django with the bench settings (bench/settings_bench.py; the throttle lifted: measuring the work, not the
limit), migrates, and yields; the connection is closed before the cluster goes. `profile(run, interval, all_frames)`
runs `run()` under pyinstrument and prints where the time went.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


@contextmanager
def django_on_throwaway_postgres(*, cache_table: bool = False) -> Iterator[None]:
    import psycopg

    from tests.pgcluster import postgres_cluster

    with postgres_cluster() as url:
        with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE signaldash")
        os.environ.update(DATABASE_URL=url, DJANGO_SETTINGS_MODULE="bench.settings_bench",
                          SIGNALDASH_THROTTLE_RATE="1000000000/min")  # fmt: skip
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection
        from django.test.utils import setup_test_environment

        setup_test_environment()
        call_command("migrate", "--noinput", verbosity=0)
        if cache_table:
            call_command("createcachetable", verbosity=0)
        logging.getLogger("signaldash.api").setLevel(logging.WARNING)  # one line per request drowns the profile
        try:
            yield
        finally:
            connection.close()


def profile(run: Callable[[], None], *, interval: float = 0.0005, all_frames: bool = False) -> None:
    """Run `run()` under pyinstrument; print the call tree (`all_frames`: library frames too)."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=interval)
    profiler.start()
    run()
    profiler.stop()
    print(profiler.output_text(unicode=True, color=False, show_all=all_frames))
