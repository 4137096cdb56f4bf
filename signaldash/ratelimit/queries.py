"""The rate counter's SQL (PostgreSQL and SQLite 3.35+ share the syntax): one atomic upsert per hit."""

from __future__ import annotations

from django.db import connection

from signaldash.ratelimit.models import RateCounter

TABLE = RateCounter._meta.db_table

# INSERT … ON CONFLICT … DO UPDATE is one statement: concurrent hits from any number of workers are
# serialized on the row, and each gets its own count back (no read-modify-write in Python).
HIT_SQL = f"""
INSERT INTO {TABLE} (bucket, count, window_end) VALUES (%(bucket)s, 1, %(window_end)s)
ON CONFLICT (bucket) DO UPDATE SET count = {TABLE}.count + 1
RETURNING count
"""  # noqa: S608 - the table name comes from the model, values are parameters
PURGE_SQL = f"DELETE FROM {TABLE} WHERE window_end < %(now)s"  # noqa: S608
RESET_SQL = f"DELETE FROM {TABLE} WHERE bucket = %(bucket)s"  # noqa: S608


def counter_hit(*, bucket: str, window_end: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute(HIT_SQL, {"bucket": bucket, "window_end": window_end})
        return int(cursor.fetchone()[0])


def counters_purge(*, now: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(PURGE_SQL, {"now": now})


def counter_delete(*, bucket: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(RESET_SQL, {"bucket": bucket})
