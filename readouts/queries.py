"""Every SQL query of the readouts, as named constants with %(name)s parameters.

Table names come from ``Model._meta.db_table`` (quoted by the connection), values only ever travel
as parameters. The SQL is portable between SQLite and PostgreSQL except the day bucket, which has
one expression per vendor.

**The interface between SQL and statistics** is a set of per-variant *sufficient statistics* of
per-user values, per metric and UTC day (``SumsRow``): the statistics in ``readouts/stats.py`` never
see events, only these sums. A user's value for a metric is

- *binary*: 1 if they have at least one counted conversion on the metric, else 0;
- *mean*: the sum of ``value`` over their counted conversions (0 when none);

where a conversion is *counted* when the same user's exposure happened at or before it. The
``event_dedup`` constraints keep one exposure row per user, so exposure rows are distinct users.

Per day, every quantity is an additive *increment*, so the cumulative sums at any day are prefix sums
of the rows (the performance work keeps the same rows up to date incrementally):

- exposure rows: ``users`` = users first exposed that day (their covariates on the same day);
- conversion rows, per user and day with counted conversions worth ``t`` (cumulative ``c`` after the
  day): ``users`` += 1 on the user's first counted day; ``total`` += t; ``total_sq`` += c² − (c − t)²
  (so the prefix sum is Σ c² at any day); ``products`` += X·t and ``products_bin`` += X on the first
  day (X the user's covariate for the metric, 0 without one); ``events`` += counted conversion events;
- ``late`` / ``unexposed``: conversions not counted (before the exposure / never exposed).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from django.db import connection

from tracking.models import Covariate, Event, VariantConflict

# One query for every variant, metric and day. Four branches:
#   exposure  — exposed users per variant and exposure day;
#   covariate — users with a covariate, Σ X and Σ X², per variant, metric and exposure day;
#   conversion — the per-user-per-day increments described above, from the per-user join (each
#                conversion row joined to the same user's single exposure row);
#   uncounted — conversions with no exposure at or before them, per metric and day.
# The window functions (running sum per user and metric over days) are in SQLite >= 3.25 and PostgreSQL.
# "Counted" (exposure at or before the conversion) is a CASE + HAVING, not a join condition: as a join
# condition SQLite's planner drives the join by the time index instead of the user key (quadratic).
READOUT_AGGREGATE_SQL = """
SELECT 'exposure' AS kind, x.variant_id, '' AS metric, {day_x} AS day,
       COUNT(*) AS users, 0.0 AS total, 0.0 AS total_sq, 0.0 AS products, 0.0 AS products_bin,
       0 AS events, 0 AS late, 0 AS unexposed
FROM {event} x
WHERE x.experiment_id = %(experiment_id)s AND x.event_type = %(exposure)s AND x.metric = ''
GROUP BY x.variant_id, {day_x}
UNION ALL
SELECT 'covariate' AS kind, k.variant_id, k.metric, {day_x} AS day,
       COUNT(*) AS users, SUM(k.value) AS total, SUM(k.value * k.value) AS total_sq, 0.0 AS products,
       0.0 AS products_bin, 0 AS events, 0 AS late, 0 AS unexposed
FROM {covariate} k
JOIN {event} x
  ON x.experiment_id = k.experiment_id AND x.event_type = %(exposure)s AND x.metric = ''
 AND x.user_key = k.user_key
WHERE k.experiment_id = %(experiment_id)s
GROUP BY k.variant_id, k.metric, {day_x}
UNION ALL
SELECT 'conversion' AS kind, d.variant_id, d.metric, d.day,
       SUM(CASE WHEN d.first_day = 1 THEN 1 ELSE 0 END) AS users,
       SUM(d.day_total) AS total,
       SUM(d.cum * d.cum - (d.cum - d.day_total) * (d.cum - d.day_total)) AS total_sq,
       SUM(d.day_total * COALESCE(k.value, 0.0)) AS products,
       SUM(CASE WHEN d.first_day = 1 THEN COALESCE(k.value, 0.0) ELSE 0.0 END) AS products_bin,
       SUM(d.day_events) AS events, 0 AS late, 0 AS unexposed
FROM (
    SELECT u.variant_id, u.user_key, u.metric, u.day, u.day_total, u.day_events,
           SUM(u.day_total) OVER (PARTITION BY u.user_key, u.metric ORDER BY u.day) AS cum,
           ROW_NUMBER() OVER (PARTITION BY u.user_key, u.metric ORDER BY u.day) AS first_day
    FROM (
        SELECT x.variant_id, c.user_key, c.metric, {day_c} AS day,
               SUM(CASE WHEN x.occurred_at <= c.occurred_at THEN COALESCE(c.value, 0.0) ELSE 0.0 END) AS day_total,
               SUM(CASE WHEN x.occurred_at <= c.occurred_at THEN 1 ELSE 0 END) AS day_events
        FROM {event} c
        JOIN {event} x
          ON x.experiment_id = c.experiment_id AND x.event_type = %(exposure)s AND x.metric = ''
         AND x.user_key = c.user_key
        WHERE c.experiment_id = %(experiment_id)s AND c.event_type = %(conversion)s
        GROUP BY x.variant_id, c.user_key, c.metric, {day_c}
        HAVING SUM(CASE WHEN x.occurred_at <= c.occurred_at THEN 1 ELSE 0 END) > 0
    ) u
) d
LEFT JOIN {covariate} k
  ON k.experiment_id = %(experiment_id)s AND k.user_key = d.user_key AND k.metric = d.metric
GROUP BY d.variant_id, d.metric, d.day
UNION ALL
SELECT 'uncounted' AS kind, NULL AS variant_id, c.metric, {day_c} AS day,
       0 AS users, 0.0 AS total, 0.0 AS total_sq, 0.0 AS products, 0.0 AS products_bin, 0 AS events,
       SUM(CASE WHEN x.user_key IS NULL THEN 0 ELSE 1 END) AS late,
       SUM(CASE WHEN x.user_key IS NULL THEN 1 ELSE 0 END) AS unexposed
FROM {event} c
LEFT JOIN {event} x
  ON x.experiment_id = c.experiment_id AND x.event_type = %(exposure)s AND x.metric = ''
 AND x.user_key = c.user_key
WHERE c.experiment_id = %(experiment_id)s AND c.event_type = %(conversion)s
  AND (x.user_key IS NULL OR x.occurred_at > c.occurred_at)
GROUP BY c.metric, {day_c}
"""

# Variant conflicts rejected at ingest for this experiment (tracking's conflict table, if present).
READOUT_VARIANT_CONFLICT_SQL = """
SELECT COUNT(*) AS n FROM {conflict} WHERE {experiment_column} = %(experiment_id)s
"""

# The conflict count of READOUT_VARIANT_CONFLICT_SQL and, in the same statement, the users exposed to more than
# one variant (issue 16): a stored exposure and an exposure rejected as a variant conflict (tracking keeps the
# first exposure; the conflict records the other variant). One row per such user (user_key NULL: none). The
# readout leaves them out of every metric (``readouts.exclusions``) and reports the ``multiple_exposures`` check.
READOUT_CONFLICTS_SQL = """
SELECT c.n, m.user_key
FROM (SELECT COUNT(*) AS n FROM {conflict} WHERE {experiment_column} = %(experiment_id)s) c
LEFT JOIN (
    SELECT DISTINCT k.user_key FROM {conflict} k
    JOIN {event} x
      ON x.experiment_id = k.{experiment_column} AND x.event_type = %(exposure)s AND x.metric = ''
     AND x.user_key = k.user_key
    WHERE k.{experiment_column} = %(experiment_id)s AND k.event_type = %(exposure)s
) m ON 1 = 1
"""

# One breakdown of one metric by an exposure prop (readouts/dimensions.py): exposed users, converted users
# and the per-user value sums per variant and slice, with the per-user rules of READOUT_AGGREGATE_SQL (a
# user's value counts their conversions at or after their single exposure; the slice is the prop on that
# exposure row, as text; NULL when the prop is absent or JSON null). The prop key travels only as a
# parameter (the SQLite JSON path is built from it in Python, after validation). Shape: one row per exposed
# user (exposure LEFT JOIN the user's conversions by the user-key index, "counted" as a CASE), then summed
# per variant and slice — no aggregate subquery on the inner side of a join, which PostgreSQL with stale
# statistics re-ran per exposure. Users exposed to more than one variant (an exposure conflict: readouts/exclusions.py)
# are left out, as from every metric of the readout; the NOT EXISTS reads the conflict's unique index.
READOUT_DIMENSION_SQL = """
SELECT p.variant_id, p.slice, COUNT(*) AS users, SUM(p.converted) AS converted,
       SUM(p.total) AS total, SUM(p.total * p.total) AS total_sq
FROM (
    SELECT x.variant_id, {slice_x} AS slice,
           MAX(CASE WHEN x.occurred_at <= c.occurred_at THEN 1 ELSE 0 END) AS converted,
           SUM(CASE WHEN x.occurred_at <= c.occurred_at THEN COALESCE(c.value, 0.0) ELSE 0.0 END) AS total
    FROM {event} x
    LEFT JOIN {event} c
      ON c.experiment_id = %(experiment_id)s AND c.event_type = %(conversion)s AND c.metric = %(metric)s
     AND c.user_key = x.user_key
    WHERE x.experiment_id = %(experiment_id)s AND x.event_type = %(exposure)s AND x.metric = ''
      AND NOT EXISTS (
          SELECT 1 FROM {conflict} k
          WHERE k.{experiment_column} = %(experiment_id)s AND k.user_key = x.user_key AND k.event_type = %(exposure)s
      )
    GROUP BY x.id, x.variant_id, 2
) p
GROUP BY p.variant_id, p.slice
"""

# Every exposed user's slice (as READOUT_DIMENSION_SQL: the prop on their exposure row, users exposed to more than
# one variant left out), for the breakdown of a catalog metric whose per-user rules run in Python.
READOUT_EXPOSURE_SLICES_SQL = """
SELECT x.user_key, x.variant_id, {slice_x} AS slice
FROM {event} x
WHERE x.experiment_id = %(experiment_id)s AND x.event_type = %(exposure)s AND x.metric = ''
  AND NOT EXISTS (
      SELECT 1 FROM {conflict} k
      WHERE k.{experiment_column} = %(experiment_id)s AND k.user_key = x.user_key AND k.event_type = %(exposure)s
  )
"""

# The slice: a prop of the exposure as text, per vendor. SQLite's json_extract gives 1/0 for true/false,
# so json_type spells them like PostgreSQL's ->> does ('true'/'false'); JSON null is NULL in both.
SLICE_EXPRESSION = {
    "sqlite": (
        "CASE json_type(x.props, %(prop_path)s) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
        "WHEN 'null' THEN NULL ELSE CAST(json_extract(x.props, %(prop_path)s) AS TEXT) END"
    ),
    "postgresql": "(x.props ->> %(prop)s)",
}

# The UTC calendar day of an event, per vendor (SQLite stores UTC text; PostgreSQL timestamptz).
DAY_EXPRESSION = {
    "sqlite": "date({col})",
    "postgresql": "CAST(({col} AT TIME ZONE 'UTC') AS date)",
}


@dataclass(frozen=True)
class SumsRow:
    """One row of the aggregate: additive increments for (kind, variant, metric, UTC day)."""

    kind: str  # 'exposure' | 'covariate' | 'conversion' | 'uncounted'
    variant_id: int | None
    metric: str
    day: date
    users: int
    total: float
    total_sq: float
    products: float
    products_bin: float
    events: int  # conversion rows: counted conversion events (a user's repeat purchases each count)
    late: int
    unexposed: int


@dataclass(frozen=True)
class BoundQuery:
    """The exact SQL text and parameters that were run (kept for the readout bundle)."""

    sql: str
    params: dict


def _tables() -> dict[str, str]:
    qn = connection.ops.quote_name
    return {"event": qn(Event._meta.db_table), "covariate": qn(Covariate._meta.db_table)}


def readout_aggregate_query(*, experiment_id: int) -> BoundQuery:
    day = DAY_EXPRESSION[connection.vendor]
    sql = READOUT_AGGREGATE_SQL.format(
        day_x=day.format(col="x.occurred_at"), day_c=day.format(col="c.occurred_at"), **_tables()
    )
    return BoundQuery(
        sql=sql.strip(),
        params={"experiment_id": experiment_id, "exposure": "exposure", "conversion": "conversion"},
    )


def readout_variant_conflict_query(*, model, experiment_id: int) -> BoundQuery:
    qn = connection.ops.quote_name
    column = model._meta.get_field("experiment").column
    sql = READOUT_VARIANT_CONFLICT_SQL.format(conflict=qn(model._meta.db_table), experiment_column=qn(column))
    return BoundQuery(sql=sql.strip(), params={"experiment_id": experiment_id})


def readout_conflicts_query(*, model, experiment_id: int) -> BoundQuery:
    """``model``: tracking's VariantConflict (passed in, as for ``readout_variant_conflict_query``)."""
    qn = connection.ops.quote_name
    column = model._meta.get_field("experiment").column
    sql = READOUT_CONFLICTS_SQL.format(
        conflict=qn(model._meta.db_table), experiment_column=qn(column), event=_tables()["event"]
    )
    return BoundQuery(sql=sql.strip(), params={"experiment_id": experiment_id, "exposure": "exposure"})


def readout_conflicts(query: BoundQuery) -> tuple[int, frozenset[str]]:
    """(variant conflicts, users exposed to more than one variant)."""
    rows = _fetch(query)
    return int(rows[0]["n"] or 0), frozenset(r["user_key"] for r in rows if r["user_key"] is not None)


def readout_count(query: BoundQuery) -> int:
    with connection.cursor() as cursor:
        cursor.execute(query.sql, query.params)
        return int(cursor.fetchone()[0])


def _fetch(query: BoundQuery) -> list[dict]:
    with connection.cursor() as cursor:
        cursor.execute(query.sql, query.params)
        columns = [c[0] for c in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def _day(value) -> date:
    return date.fromisoformat(value) if isinstance(value, str) else value  # SQLite returns 'YYYY-MM-DD'


def readout_aggregate(query: BoundQuery) -> list[SumsRow]:
    """Run the aggregate (one query, whatever the number of variants, metrics and days)."""
    return [
        SumsRow(
            kind=r["kind"],
            variant_id=r["variant_id"],
            metric=r["metric"],
            day=_day(r["day"]),
            users=int(r["users"] or 0),
            total=float(r["total"] or 0.0),
            total_sq=float(r["total_sq"] or 0.0),
            products=float(r["products"] or 0.0),
            products_bin=float(r["products_bin"] or 0.0),
            events=int(r["events"] or 0),
            late=int(r["late"] or 0),
            unexposed=int(r["unexposed"] or 0),
        )
        for r in _fetch(query)
    ]


@dataclass(frozen=True)
class SliceRow:
    """One row of a dimension breakdown: a variant's users in one slice (``slice`` None: prop absent)."""

    variant_id: int
    slice: str | None
    users: int
    converted: int  # users with at least one counted conversion on the metric
    total: float  # Σ per-user value (sum of counted conversion values)
    total_sq: float  # Σ per-user value²


def _dimension_query(template: str, *, experiment_id: int, prop: str, **params) -> BoundQuery:
    qn = connection.ops.quote_name
    sql = template.format(
        slice_x=SLICE_EXPRESSION[connection.vendor],
        conflict=qn(VariantConflict._meta.db_table),
        experiment_column=qn(VariantConflict._meta.get_field("experiment").column),
        **_tables(),
    )
    params = {"experiment_id": experiment_id, "exposure": "exposure", **params}
    params.update({"prop_path": f'$."{prop}"'} if connection.vendor == "sqlite" else {"prop": prop})
    return BoundQuery(sql=sql.strip(), params=params)


def readout_dimension_query(*, experiment_id: int, metric: str, prop: str) -> BoundQuery:
    """``prop`` must already be validated (``readouts.dimensions.DIMENSION_KEY_RE``); it is only a parameter.
    ``metric``: the conversion event name the metric reads."""
    return _dimension_query(
        READOUT_DIMENSION_SQL, experiment_id=experiment_id, prop=prop, conversion="conversion", metric=metric
    )


def readout_exposure_slices(*, experiment_id: int, prop: str) -> tuple[BoundQuery, dict[str, str | None]]:
    """(the query, user → slice) for every exposed user kept by the readout; ``prop`` validated by the caller."""
    query = _dimension_query(READOUT_EXPOSURE_SLICES_SQL, experiment_id=experiment_id, prop=prop)
    return query, {r["user_key"]: None if r["slice"] is None else str(r["slice"]) for r in _fetch(query)}


def readout_dimension(query: BoundQuery) -> list[SliceRow]:
    """Run one breakdown (one query, whatever the number of variants and slices)."""
    return [
        SliceRow(
            variant_id=r["variant_id"],
            slice=None if r["slice"] is None else str(r["slice"]),
            users=int(r["users"] or 0),
            converted=int(r["converted"] or 0),
            total=float(r["total"] or 0.0),
            total_sq=float(r["total_sq"] or 0.0),
        )
        for r in _fetch(query)
    ]


# --- catalog metrics with per-user rules (windows, delays, filters, caps, count, ratio, funnel) ----------
# Rollup rows cannot represent these (a window or a cap depends on each user's exposure time and on the
# distribution over all users), so their readout reads the exposures and the conversions of the events
# they name, and ``readouts.metric_values`` applies the rules. Two statements, both by the event
# readout index (experiment, type, metric, user).
def readout_metric_events(*, experiment_id: int, events: list[str]):
    """(exposures by user, conversions by user) for the conversion ``events`` (each stored event once)."""
    from readouts.metric_values import Conversion, Exposure  # noqa: PLC0415 - pure module, no cycle

    exposures = {
        user: Exposure(user, variant_id, at)
        for user, variant_id, at in Event.objects.filter(
            experiment_id=experiment_id, event_type=Event.EventType.EXPOSURE, metric=""
        ).values_list("user_key", "variant_id", "occurred_at")
    }
    conversions: dict[str, list] = {}
    if events:
        for user, metric, value, at, props in (
            Event.objects.filter(
                experiment_id=experiment_id, event_type=Event.EventType.CONVERSION, metric__in=sorted(set(events))
            )
            .order_by("occurred_at", "id")
            .values_list("user_key", "metric", "value", "occurred_at", "props")
        ):
            conversions.setdefault(user, []).append(Conversion(user, metric, value, at, props or {}))
    return exposures, conversions


# --- catalog rule metrics from their per-user rollups (readouts.metric_rollups) ---------------------------
# A percentile cap c changes a user-day row only when the row's peak (max of the uncapped cumulative value
# before and after the day) is above c; the rollups keep the uncapped sums, so the readout reads just those
# rows (an index range: about 1 − q of the users) and swaps their uncapped increments (ra − rb) for the
# capped ones, min(after, c) − min(before, c) (the user's first day: − 0, as metric_values._capped does).
METRIC_USER_DAY_ABOVE_SQL = """
SELECT u.variant_id, u.day, SUM(u.ra - u.rb) AS raw_total, SUM(u.ra * u.ra - u.rb * u.rb) AS raw_total_sq,
       SUM(u.a - u.b) AS total, SUM(u.a * u.a - u.b * u.b) AS total_sq
FROM (
    SELECT variant_id, day, cum_after AS ra, CASE WHEN is_first THEN 0.0 ELSE cum_before END AS rb,
           {after} AS a, CASE WHEN is_first THEN 0.0 ELSE {before} END AS b
    FROM {user_day}
    WHERE experiment_id = %(experiment_id)s AND definition = %(definition)s AND peak > %(cap)s
) u
GROUP BY u.variant_id, u.day
"""

# A ratio with a percentile-capped part: the users whose part is above its cap (index ranges), their
# uncapped and capped Σm, Σm², Σd, Σd², Σm·d per variant. {above} is "value > %(numerator_cap)s" and/or
# "denominator > %(denominator_cap)s" (OR), {numerator}/{denominator} the capped columns.
METRIC_USER_RATIO_ABOVE_SQL = """
SELECT u.variant_id, SUM(u.rm) AS raw_m, SUM(u.rm * u.rm) AS raw_m2, SUM(u.rd) AS raw_d, SUM(u.rd * u.rd) AS raw_d2,
       SUM(u.rm * u.rd) AS raw_md, SUM(u.m) AS m, SUM(u.m * u.m) AS m2, SUM(u.d) AS d, SUM(u.d * u.d) AS d2,
       SUM(u.m * u.d) AS md
FROM (
    SELECT variant_id, value AS rm, denominator AS rd, {numerator} AS m, {denominator} AS d
    FROM {user_value}
    WHERE experiment_id = %(experiment_id)s AND definition = %(definition)s AND ({above})
) u
GROUP BY u.variant_id
"""

# min(column, cap) in portable SQL (the cap a parameter).
CAPPED_EXPRESSION = "CASE WHEN {column} > %({cap})s THEN %({cap})s ELSE {column} END"


def _capped_column(column: str, cap_param: str | None) -> str:
    quoted = connection.ops.quote_name(column)
    return quoted if cap_param is None else CAPPED_EXPRESSION.format(column=quoted, cap=cap_param)


def metric_user_day_above_query(*, experiment_id: int, definition: str, cap: float) -> BoundQuery:
    from readouts.models import MetricUserDay  # noqa: PLC0415 - readouts.models imports nothing from here

    sql = METRIC_USER_DAY_ABOVE_SQL.format(
        user_day=connection.ops.quote_name(MetricUserDay._meta.db_table),
        after=_capped_column("cum_after", "cap"),
        before=_capped_column("cum_before", "cap"),
    )
    return BoundQuery(sql=sql.strip(), params={"experiment_id": experiment_id, "definition": definition, "cap": cap})


def metric_user_ratio_above_query(*, experiment_id: int, definition: str, numerator_cap: float | None,
                                  denominator_cap: float | None) -> BoundQuery:  # fmt: skip
    """At least one of the caps is set (the percentile-capped parts)."""
    from readouts.models import MetricUserValue  # noqa: PLC0415

    params: dict = {"experiment_id": experiment_id, "definition": definition}
    above = []
    for column, name, cap in (("value", "numerator_cap", numerator_cap), ("denominator", "denominator_cap",
                                                                          denominator_cap)):  # fmt: skip
        if cap is not None:
            above.append(f"{connection.ops.quote_name(column)} > %({name})s")
            params[name] = float(cap)
    sql = METRIC_USER_RATIO_ABOVE_SQL.format(
        user_value=connection.ops.quote_name(MetricUserValue._meta.db_table),
        numerator=_capped_column("value", None if numerator_cap is None else "numerator_cap"),
        denominator=_capped_column("denominator", None if denominator_cap is None else "denominator_cap"),
        above=" OR ".join(above),
    )
    return BoundQuery(sql=sql.strip(), params=params)


def metric_fetch(query: BoundQuery) -> list[dict]:
    """Run one of the metric rollup queries; rows as dicts by column name."""
    return _fetch(query)
