"""The rate counter's SQL (PostgreSQL and SQLite 3.35+ share the syntax): one atomic upsert per hit or lease."""

from __future__ import annotations

from django.db import connection

from signaldash.ratelimit.models import RateCounter

TABLE = RateCounter._meta.db_table

# INSERT … ON CONFLICT … DO UPDATE is one statement: concurrent hits from any number of workers are
# serialized on the row, and each gets its own count back (no read-modify-write in Python).
HIT_SQL = f"""
INSERT INTO {TABLE} (bucket, count, window_end) VALUES (%(bucket)s, %(hits)s, %(window_end)s)
ON CONFLICT (bucket) DO UPDATE SET count = {TABLE}.count + %(hits)s
RETURNING count
"""  # noqa: S608 - the table name comes from the model, values are parameters
PURGE_SQL = f"DELETE FROM {TABLE} WHERE window_end < %(now)s"  # noqa: S608
RESET_SQL = f"DELETE FROM {TABLE} WHERE bucket = %(bucket)s"  # noqa: S608


# PostgreSQL: the hit and the purge of ended windows in one statement (one round trip per request). The
# purge is a data-modifying CTE the query does not read, so it runs after the upsert, on other rows (an
# ended window is never the current bucket).
HIT_AND_PURGE_SQL = f"""
WITH purged AS (DELETE FROM {TABLE} WHERE window_end < %(now)s)
{HIT_SQL.strip()}
"""  # noqa: S608


def hit_statements() -> int:
    """Statements per `counter_hit_and_purge` on this database (query counts pinned by tests use it)."""
    return 1 if connection.vendor == "postgresql" else 2


def counter_hit_and_purge(*, bucket: str, window_end: int, now: int, hits: int = 1) -> int:
    """Count `hits` hits in `bucket` (returns the new count) and drop ended windows (an index range scan,
    usually empty): one statement on PostgreSQL, two on SQLite (no data-modifying CTEs there)."""
    params = {"bucket": bucket, "window_end": window_end, "now": now, "hits": hits}
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(HIT_AND_PURGE_SQL, params)
            return int(cursor.fetchone()[0])
        cursor.execute(HIT_SQL, params)
        count = int(cursor.fetchone()[0])
        cursor.execute(PURGE_SQL, params)
        return count


def counter_delete(*, bucket: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(RESET_SQL, {"bucket": bucket})
