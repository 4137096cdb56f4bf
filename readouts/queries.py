"""Every SQL query of the readouts, as named constants with %(name)s parameters.

Table names come from ``Model._meta.db_table`` (quoted by the connection), values only ever travel
as parameters. The SQL is portable between SQLite and PostgreSQL except the day bucket, which has
one expression per vendor.

Distinct users: the ``event_dedup`` constraint on ``tracking.Event`` (experiment, user_key,
event_type, metric) guarantees at most one exposure row per user and at most one conversion row
per user and metric, so after the per-user join every row *is* one distinct user and ``COUNT(*)``
counts users, not events — without the cost of ``COUNT(DISTINCT ...)`` on ten million rows.
A conversion counts only when the same user's exposure happened at or before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from django.db import connection

from tracking.models import Event

# One query for every variant and metric: exposed users per variant (kind='exposure'), and converted
# users per variant and metric (each conversion joined to the same user's exposure). Conversions with
# no exposure come back with a NULL variant (``unexposed``), conversions that precede the user's
# exposure as ``late``. Written without a CTE so PostgreSQL can run it as a parallel hash join (a
# materialised CTE is parallel-restricted). Portable to SQLite as is. Used by the API and decisions.
READOUT_AGGREGATE_SQL = """
SELECT 'exposure' AS kind, variant_id, '' AS metric, NULL AS day,
       COUNT(*) AS users, 0 AS late, 0 AS unexposed
FROM {event} x
WHERE experiment_id = %(experiment_id)s AND event_type = %(exposure)s AND metric = ''
GROUP BY variant_id
UNION ALL
SELECT 'conversion' AS kind, x.variant_id, c.metric, NULL AS day,
       SUM(CASE WHEN x.occurred_at <= c.occurred_at THEN 1 ELSE 0 END) AS users,
       SUM(CASE WHEN x.occurred_at > c.occurred_at THEN 1 ELSE 0 END) AS late,
       SUM(CASE WHEN x.user_key IS NULL THEN 1 ELSE 0 END) AS unexposed
FROM {event} c
LEFT JOIN {event} x
       ON x.experiment_id = c.experiment_id AND x.event_type = %(exposure)s AND x.metric = ''
      AND x.user_key = c.user_key
WHERE c.experiment_id = %(experiment_id)s AND c.event_type = %(conversion)s
GROUP BY x.variant_id, c.metric
"""

# The same query, split by UTC day (exposure day for exposures, conversion day for conversions).
# The readout page sums the days for its table and draws the cumulative chart from them, so the page
# also needs one pass over the events. The day expression ({day_x}, {day_c}) is per vendor.
READOUT_AGGREGATE_BY_DAY_SQL = """
SELECT 'exposure' AS kind, variant_id, '' AS metric, {day_x} AS day,
       COUNT(*) AS users, 0 AS late, 0 AS unexposed
FROM {event} x
WHERE experiment_id = %(experiment_id)s AND event_type = %(exposure)s AND metric = ''
GROUP BY variant_id, {day_x}
UNION ALL
SELECT 'conversion' AS kind, x.variant_id, c.metric, {day_c} AS day,
       SUM(CASE WHEN x.occurred_at <= c.occurred_at THEN 1 ELSE 0 END) AS users,
       SUM(CASE WHEN x.occurred_at > c.occurred_at THEN 1 ELSE 0 END) AS late,
       SUM(CASE WHEN x.user_key IS NULL THEN 1 ELSE 0 END) AS unexposed
FROM {event} c
LEFT JOIN {event} x
       ON x.experiment_id = c.experiment_id AND x.event_type = %(exposure)s AND x.metric = ''
      AND x.user_key = c.user_key
WHERE c.experiment_id = %(experiment_id)s AND c.event_type = %(conversion)s
GROUP BY x.variant_id, c.metric, {day_c}
"""

# Variant conflicts rejected at ingest for this experiment (tracking's conflict table, if present).
READOUT_VARIANT_CONFLICT_SQL = """
SELECT COUNT(*) AS n FROM {conflict} WHERE {experiment_column} = %(experiment_id)s
"""

# The UTC calendar day of an event, per vendor (SQLite stores UTC text; PostgreSQL timestamptz).
DAY_EXPRESSION = {
    "sqlite": "date({col})",
    "postgresql": "CAST(({col} AT TIME ZONE 'UTC') AS date)",
}


@dataclass(frozen=True)
class AggregateRow:
    kind: str  # 'exposure' | 'conversion'
    variant_id: int | None
    metric: str
    day: date | None  # None from READOUT_AGGREGATE_SQL (totals)
    users: int
    late: int
    unexposed: int


@dataclass(frozen=True)
class BoundQuery:
    """The exact SQL text and parameters that were run (kept for the readout bundle)."""

    sql: str
    params: dict


def _tables() -> dict[str, str]:
    return {"event": connection.ops.quote_name(Event._meta.db_table)}


def readout_aggregate_query(*, experiment_id: int, by_day: bool = False) -> BoundQuery:
    if by_day:
        day = DAY_EXPRESSION[connection.vendor]
        sql = READOUT_AGGREGATE_BY_DAY_SQL.format(
            day_x=day.format(col="x.occurred_at"), day_c=day.format(col="c.occurred_at"), **_tables()
        )
    else:
        sql = READOUT_AGGREGATE_SQL.format(**_tables())
    return BoundQuery(
        sql=sql.strip(),
        params={"experiment_id": experiment_id, "exposure": "exposure", "conversion": "conversion"},
    )


def readout_variant_conflict_query(*, model, experiment_id: int) -> BoundQuery:
    qn = connection.ops.quote_name
    column = model._meta.get_field("experiment").column
    sql = READOUT_VARIANT_CONFLICT_SQL.format(conflict=qn(model._meta.db_table), experiment_column=qn(column))
    return BoundQuery(sql=sql.strip(), params={"experiment_id": experiment_id})


def readout_count(query: BoundQuery) -> int:
    with connection.cursor() as cursor:
        cursor.execute(query.sql, query.params)
        return int(cursor.fetchone()[0])


def _fetch(query: BoundQuery) -> list[dict]:
    with connection.cursor() as cursor:
        cursor.execute(query.sql, query.params)
        columns = [c[0] for c in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def _day(value) -> date | None:
    return date.fromisoformat(value) if isinstance(value, str) else value  # SQLite returns 'YYYY-MM-DD'


def readout_aggregate(query: BoundQuery) -> list[AggregateRow]:
    """Run the aggregate (one query, whatever the number of variants, metrics and days)."""
    return [
        AggregateRow(
            kind=r["kind"],
            variant_id=r["variant_id"],
            metric=r["metric"],
            day=_day(r["day"]),
            users=int(r["users"] or 0),
            late=int(r["late"] or 0),
            unexposed=int(r["unexposed"] or 0),
        )
        for r in _fetch(query)
    ]
