"""The tracking write SQL: multi-row `INSERT … ON CONFLICT DO NOTHING RETURNING` (PostgreSQL and SQLite ≥ 3.35).

Dedup and one-variant-per-user are decided by the database's unique constraints in the same statement
that writes, never by a read first. Callers pass rows already sorted by the conflict key, so that
concurrent transactions take index locks in one consistent order (no deadlock cycles on PostgreSQL).
Table names come from `Model._meta.db_table`; values are always parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from django.db import connection

from experiments.models import Experiment, Variant
from tracking.models import Assignment, Event, VariantConflict

# Rows per statement: 500 × 9 columns stays far below SQLite's and PostgreSQL's parameter limits.
CHUNK_ROWS = 500

EVENT_COLUMNS = (
    "experiment_id",
    "variant_id",
    "user_key",
    "event_type",
    "metric",
    "value",
    "occurred_at",
    "received_at",
    "props",
)
EVENT_CONFLICT_KEY = ("experiment_id", "user_key", "event_type", "metric")

ASSIGNMENT_COLUMNS = ("experiment_id", "user_key", "variant_id", "assigned_at", "source")
ASSIGNMENT_CONFLICT_KEY = ("experiment_id", "user_key")

CONFLICT_COLUMNS = (
    "experiment_id",
    "user_key",
    "event_type",
    "metric",
    "assigned_variant_id",
    "reported_variant_id",
    "occurred_at",
    "received_at",
)
CONFLICT_CONFLICT_KEY = ("experiment_id", "user_key", "event_type", "metric", "reported_variant_id")


def _insert_sql(table: str, columns: Sequence[str], conflict_key: Sequence[str], rows: int, returning: bool) -> str:
    qn = connection.ops.quote_name
    row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    sql = (
        f"INSERT INTO {qn(table)} ({', '.join(qn(c) for c in columns)}) VALUES {', '.join([row] * rows)} "
        f"ON CONFLICT ({', '.join(qn(c) for c in conflict_key)}) DO NOTHING"
    )
    if returning:
        sql += f" RETURNING {', '.join(qn(c) for c in conflict_key)}"
    return sql


def _chunks(rows: Sequence[tuple], size: int = CHUNK_ROWS) -> Iterator[Sequence[tuple]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _insert(
    table: str, columns: Sequence[str], conflict_key: Sequence[str], rows: Sequence[tuple], *, returning: bool
) -> set[tuple]:
    inserted: set[tuple] = set()
    with connection.cursor() as cursor:
        for chunk in _chunks(rows):
            params = [value for row in chunk for value in row]
            cursor.execute(_insert_sql(table, columns, conflict_key, len(chunk), returning), params)
            if returning:
                inserted.update(tuple(r) for r in cursor.fetchall())
    return inserted


def _dt(value: datetime) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


def _dt_memo() -> Callable[[datetime], Any]:
    """`_dt` remembering its answers: a batch mostly shares one `received_at` and one default `occurred_at`."""
    memo: dict[datetime, Any] = {}

    def adapt(value: datetime) -> Any:
        if value not in memo:
            memo[value] = _dt(value)
        return memo[value]

    return adapt


def events_insert(rows: Sequence[tuple]) -> set[tuple]:
    """Insert events (tuples in EVENT_COLUMNS order, props a dict); return the conflict keys stored."""
    adapt_dt, adapt_json = _dt_memo(), connection.ops.adapt_json_value
    adapted = [
        (e, v, u, t, m, val, adapt_dt(occ), adapt_dt(rec), adapt_json(props, None))
        for e, v, u, t, m, val, occ, rec, props in rows
    ]
    return _insert(Event._meta.db_table, EVENT_COLUMNS, EVENT_CONFLICT_KEY, adapted, returning=True)


def assignments_insert(rows: Sequence[tuple]) -> set[tuple]:
    """Insert assignments (tuples in ASSIGNMENT_COLUMNS order); return the (experiment_id, user_key) stored."""
    adapted = [(e, u, v, _dt(at), s) for e, u, v, at, s in rows]
    return _insert(Assignment._meta.db_table, ASSIGNMENT_COLUMNS, ASSIGNMENT_CONFLICT_KEY, adapted, returning=True)


def variant_conflicts_insert(rows: Sequence[tuple]) -> None:
    """Record rejected conflicting events (tuples in CONFLICT_COLUMNS order); repeats are ignored."""
    adapted = [(e, u, t, m, a, r, _dt(occ), _dt(rec)) for e, u, t, m, a, r, occ, rec in rows]
    _insert(VariantConflict._meta.db_table, CONFLICT_COLUMNS, CONFLICT_CONFLICT_KEY, adapted, returning=False)


def experiments_with_variants(slugs: Sequence[str]) -> list[tuple]:
    """(id, slug, status, primary_metric, salt, variant_id, key, weight) per variant; variant columns are
    NULL for an experiment without variants. One query for the request path (instead of two ORM ones)."""
    if not slugs:
        return []
    qn = connection.ops.quote_name
    experiment, variant = qn(Experiment._meta.db_table), qn(Variant._meta.db_table)
    sql = (
        f"SELECT e.id, e.slug, e.status, e.primary_metric, e.salt, v.id, v.{qn('key')}, v.weight "
        f"FROM {experiment} e LEFT JOIN {variant} v ON v.experiment_id = e.id "
        f"WHERE e.slug IN ({', '.join(['%s'] * len(slugs))}) ORDER BY e.id, v.id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, list(slugs))
        return cursor.fetchall()
