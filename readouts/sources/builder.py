"""The one logical warehouse query of an experiment, built once and rendered per engine by sqlglot.

Shape (GrowthBook's ``integrations/sql``): CTEs over the source's two SELECTs → the experiment's
exposures in its time range → first exposure per user, users seen in more than one variant left out
(``multiple_exposures``) and rows with unknown variant keys counted (``unknown_variants``) → per metric,
the per-user-per-day values of its *counted* conversions (``docs/metrics.md``: at or after first
exposure + delay, within the window, passing the filter; ``count`` counts events, ``sum`` sums
``value``; caps on the cumulative per-user value, the percentile computed in the engine) → CUPED
covariates (the same metric's per-user value in the ``cuped_lookback_days`` before exposure) → the
``SumsRow`` increments per variant, metric and UTC day, exactly as ``readouts.queries`` documents them.

The query text below is canonical (read as DuckDB SQL) and holds only structure: every value (the
experiment key, variant keys, event names, filter values, dates, caps, windows) is a ``:placeholder``
replaced by a sqlglot literal; CTE names are numbered, so metric keys never become identifiers; the
only identifiers taken from definitions are filter columns, validated by ``plan.IDENTIFIER_RE``. A
dialect quirk is a transform in ``_DIALECT_FIXES``, never a second copy of the query.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlglot
from sqlglot import exp

from readouts.definitions import MetricDefinition
from readouts.sources.plan import IDENTIFIER_RE, QueryPlan

DIALECTS = {"duckdb": "duckdb", "postgresql": "postgres", "spark": "spark"}
EXPOSURE_COLUMNS = ("experiment_key", "variant_key", "user_key", "timestamp")
EVENT_COLUMNS = ("user_key", "timestamp", "event", "value")
HEALTH_KINDS = ("unknown_variants", "multiple_exposures")
SUPPORTED_KINDS = ("binary", "mean")
OUTPUT_COLUMNS = (
    "kind",
    "variant_key",
    "metric",
    "day",
    "users",
    "total",
    "total_sq",
    "products",
    "products_bin",
    "events",
    "late",
    "unexposed",
)


class BuildError(ValueError):
    """The source's SELECTs or a definition cannot be turned into a query (a plain message for people)."""


@dataclass(frozen=True)
class SourceSQL:
    exposure_sql: str
    events_sql: str
    events_columns: frozenset[str] = frozenset()  # what the events SELECT returns (event_id, props, extras)


# --- the canonical query ------------------------------------------------------------------------------
BASE = """
WITH src_x AS (SELECT 1), src_e AS (SELECT 1),
x_raw AS (
  SELECT CAST(s.variant_key AS TEXT) AS variant_key, CAST(s.user_key AS TEXT) AS user_key, s."timestamp" AS ts
  FROM src_x s
  WHERE s.experiment_key = :experiment_key AND s."timestamp" >= :start_ts AND s."timestamp" <= :end_ts
),
x_users AS (
  SELECT user_key, MIN(ts) AS x_ts, MIN(variant_key) AS variant_key, COUNT(DISTINCT variant_key) AS n_variants
  FROM x_raw WHERE variant_key IN (:variant_keys) GROUP BY user_key
),
units AS MATERIALIZED (
  SELECT user_key, variant_key, x_ts, CAST(x_ts AS DATE) AS x_day FROM x_users WHERE n_variants = 1
),
ev AS (
  SELECT CAST(s.user_key AS TEXT) AS user_key, s."timestamp" AS ts, CAST(s.event AS TEXT) AS event,
         COALESCE(CAST(s.value AS DOUBLE), CAST(0 AS DOUBLE)) AS value {event_extras}
  FROM src_e s
  WHERE s.event IN (:events) AND s."timestamp" >= :lookback_ts AND s."timestamp" <= :end_ts
),
evd AS ({evd}),
ue AS MATERIALIZED (
  SELECT u.variant_key, u.x_ts, e.* FROM units u JOIN evd e ON e.user_key = u.user_key
)
{metric_ctes}
SELECT 'exposure' AS kind, variant_key, '' AS metric, x_day AS day, COUNT(*) AS users, {zero_f} AS total,
       {zero_f} AS total_sq, {zero_f} AS products, {zero_f} AS products_bin, 0 AS events, 0 AS late, 0 AS unexposed
FROM units GROUP BY variant_key, x_day
UNION ALL
SELECT 'unknown_variants' AS kind, {null_s} AS variant_key, '' AS metric, {null_d} AS day, COUNT(*) AS users,
       {zero_f}, {zero_f}, {zero_f}, {zero_f}, 0, 0, 0
FROM x_raw WHERE variant_key IS NULL OR variant_key NOT IN (:variant_keys)
UNION ALL
SELECT 'multiple_exposures' AS kind, {null_s} AS variant_key, '' AS metric, {null_d} AS day, COUNT(*) AS users,
       {zero_f}, {zero_f}, {zero_f}, {zero_f}, 0, 0, 0
FROM x_users WHERE n_variants > 1
{metric_selects}
"""

# Repeat deliveries of one event (same user, event and event_id) count once; rows without an id all count.
EVD_DEDUP = """
SELECT user_key, ts, event, value {extras} FROM (
  SELECT e.*, ROW_NUMBER() OVER (PARTITION BY e.user_key, e.event, e.event_id ORDER BY e.ts) AS dup
  FROM ev e
) d WHERE d.event_id IS NULL OR d.dup = 1
"""
EVD_PLAIN = "SELECT * FROM ev"

# Per metric i. ``{counted}`` / ``{matches}`` are conditions over e (event) and u (unit) built below.
METRIC_CTES = """,
c{i} AS (
  SELECT e.variant_key, e.user_key, CAST(e.ts AS DATE) AS day, SUM({value}) AS day_total, COUNT(*) AS day_events
  FROM ue e
  WHERE {matches} AND {counted}
  GROUP BY e.variant_key, e.user_key, CAST(e.ts AS DATE)
),
k{i} AS ({cap}),
r{i} AS (
  SELECT c.*, SUM(c.day_total) OVER (PARTITION BY c.user_key ORDER BY c.day) AS cum,
         ROW_NUMBER() OVER (PARTITION BY c.user_key ORDER BY c.day) AS rn
  FROM c{i} c
),
s{i} AS (
  SELECT r.variant_key, r.user_key, r.day, r.rn, r.day_events,
         CASE WHEN k.cap IS NULL THEN r.cum ELSE LEAST(r.cum, k.cap) END AS cc,
         CASE WHEN k.cap IS NULL THEN r.cum - r.day_total ELSE LEAST(r.cum - r.day_total, k.cap) END AS pc
  FROM r{i} r CROSS JOIN k{i} k
),
v{i} AS (
  SELECT u.user_key, u.variant_key, u.x_day, {cov_value} AS x
  FROM units u LEFT JOIN (
    SELECT e.user_key, {cov_agg} AS x
    FROM ue e
    WHERE {matches} AND e.ts < e.x_ts AND e.ts >= e.x_ts - :lookback_{i}
    GROUP BY e.user_key
  ) p ON p.user_key = u.user_key
)
"""
METRIC_SELECTS = """
UNION ALL
SELECT 'conversion' AS kind, s.variant_key, :key_{i} AS metric, s.day, SUM(CASE WHEN s.rn = 1 THEN 1 ELSE 0 END),
       SUM(s.cc - s.pc), SUM(s.cc * s.cc - s.pc * s.pc), SUM((s.cc - s.pc) * COALESCE(v.x, {zero_f})),
       SUM(CASE WHEN s.rn = 1 THEN COALESCE(v.x, {zero_f}) ELSE {zero_f} END), SUM(s.day_events), 0, 0
FROM s{i} s LEFT JOIN v{i} v ON v.user_key = s.user_key
GROUP BY s.variant_key, s.day
UNION ALL
SELECT 'uncounted' AS kind, {null_s}, :key_{i}, CAST(e.ts AS DATE), 0, {zero_f}, {zero_f}, {zero_f}, {zero_f}, 0,
       COUNT(*), 0
FROM ue e
WHERE {matches} AND e.ts >= :start_ts AND e.ts < e.x_ts + :delay_{i}
GROUP BY CAST(e.ts AS DATE)
"""
METRIC_COVARIATE_SELECT = """
UNION ALL
SELECT 'covariate' AS kind, variant_key, :key_{i}, x_day, COUNT(*), SUM(x), SUM(x * x), {zero_f}, {zero_f}, 0, 0, 0
FROM v{i} GROUP BY variant_key, x_day
"""
COUNTED = "e.ts >= :start_ts AND e.ts <= :end_ts AND e.ts >= e.x_ts + :delay_{i}"
COUNTED_WINDOW = " AND e.ts <= e.x_ts + :until_{i}"
CAP_NONE = "SELECT CAST(NULL AS DOUBLE) AS cap"
CAP_ABSOLUTE = "SELECT CAST(:cap_{i} AS DOUBLE) AS cap"
CAP_PERCENTILE = """
SELECT PERCENTILE_CONT(:cap_{i}) WITHIN GROUP (ORDER BY t.v) AS cap FROM (
  SELECT u.user_key, COALESCE(SUM(c.day_total), {zero_f}) AS v FROM units u LEFT JOIN c{i} c ON c.user_key = u.user_key
  GROUP BY u.user_key
) t {ignore_zeros}
"""
TYPED = {"zero_f": "CAST(0 AS DOUBLE)", "null_s": "CAST(NULL AS TEXT)", "null_d": "CAST(NULL AS DATE)"}


# --- building ---------------------------------------------------------------------------------------
def parse_select(sql: str, *, engine: str, what: str) -> exp.Query:
    """One read-only SELECT in the engine's dialect, or a BuildError saying what is wrong with it."""
    try:
        statements = [s for s in sqlglot.parse(sql, read=DIALECTS[engine]) if s is not None]
    except sqlglot.errors.ParseError as e:
        raise BuildError(f"The {what} SELECT does not parse: {str(e).splitlines()[0]}") from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise BuildError(f"The {what} must be exactly one SELECT statement.")
    writes = (exp.Insert, exp.Update, exp.Delete, exp.Create, exp.Drop, exp.Merge, exp.Command, exp.Copy, exp.Into)
    if any(statements[0].find_all(*writes)):
        raise BuildError(f"The {what} SELECT tries to write; sources are read-only.")
    return statements[0]


def _seconds(hours: float) -> int:
    return round(hours * 3600)


def _interval(seconds: int) -> exp.Interval:
    return exp.Interval(this=exp.Literal.string(str(seconds)), unit=exp.var("SECOND"))


def _ts(value: datetime) -> exp.Expression:
    naive = value.astimezone(UTC).replace(tzinfo=None)
    return exp.cast(exp.Literal.string(naive.isoformat(sep=" ")), exp.DataType.build("TIMESTAMP"))


def _literals(values) -> list[exp.Expression]:
    return [exp.Literal.string(str(v)) for v in values]


def _validate(d: MetricDefinition) -> None:
    if d.kind not in SUPPORTED_KINDS:
        raise BuildError(f"Metric {d.key}: {d.kind} metrics are not computed on warehouse sources yet.")
    if not d.event:
        raise BuildError(f"Metric {d.key}: no event to read.")
    if d.filter_prop and not IDENTIFIER_RE.fullmatch(d.filter_prop):
        raise BuildError(f"Metric {d.key}: filter property {d.filter_prop!r} is not a plain column name.")
    if d.cap == "percentile" and not (d.cap_value is not None and 0 < d.cap_value < 1):
        raise BuildError(f"Metric {d.key}: a percentile cap needs a value in (0, 1).")
    if d.cap == "absolute" and d.cap_value is None:
        raise BuildError(f"Metric {d.key}: an absolute cap needs a value.")


def _filter(d: MetricDefinition, i: int, columns: frozenset[str]) -> str:
    if not d.filter_prop:
        return ""
    if d.filter_prop in columns:  # an extra column of the events SELECT
        return f" AND CAST(e.{d.filter_prop} AS TEXT) IN (:filter_{i})"
    if "props" in columns:  # engine JSON: props ->> '$.key'
        return f" AND (e.props ->> :prop_path_{i}) IN (:filter_{i})"
    raise BuildError(f"Metric {d.key}: the events SELECT has neither a {d.filter_prop} column nor props.")


def _metric_sql(d: MetricDefinition, i: int, columns: frozenset[str], covariates: bool) -> tuple[str, str]:
    _validate(d)
    mean = d.kind == "mean"
    matches = f"e.event = :event_{i}" + _filter(d, i, columns)
    counted = COUNTED + (COUNTED_WINDOW if d.window_hours is not None else "")
    value = "1" if mean and d.aggregation == "count" else "e.value"
    cap = CAP_NONE
    if mean and d.cap == "absolute":
        cap = CAP_ABSOLUTE
    elif mean and d.cap == "percentile":
        cap = CAP_PERCENTILE.replace("{ignore_zeros}", "WHERE t.v <> 0" if d.cap_ignore_zeros else "")
    if not mean:
        cov_agg = "1"
    else:
        cov_agg = "COUNT(*)" if d.aggregation == "count" else "SUM(e.value)"
        if d.cap == "absolute":
            cov_agg = f"LEAST({cov_agg}, :cap_{i})"
    cov_value = "CAST(COALESCE(p.x, 0) AS DOUBLE)" if covariates else "CAST(0 AS DOUBLE)"
    ctes = METRIC_CTES.format(
        i=i,
        value=value,
        matches=matches,
        counted=counted.format(i=i),
        cap=cap.format(i=i, **TYPED),
        cov_agg="MAX(1)" if not mean else cov_agg,
        cov_value=cov_value,
        **TYPED,
    )
    selects = METRIC_SELECTS.format(i=i, matches=matches, **TYPED)
    if covariates:
        selects += METRIC_COVARIATE_SELECT.format(i=i, **TYPED)
    return ctes, selects


def _values(plan: QueryPlan) -> dict[str, exp.Expression | list[exp.Expression]]:
    events = sorted({d.event for d in plan.definitions})
    lookback = max(plan.cuped_lookback_days, 0)
    earliest_delay = min([0.0, *(d.delay_hours for d in plan.definitions)])
    values: dict = {
        "experiment_key": exp.Literal.string(plan.experiment_key),
        "variant_keys": _literals(plan.variant_keys or ("",)),
        "events": _literals(events or ("",)),
        "start_ts": _ts(plan.start),
        "end_ts": _ts(plan.end),
    }
    values["lookback_ts"] = _ts(plan.start - timedelta(days=lookback, hours=-earliest_delay))
    for i, d in enumerate(plan.definitions):
        delay = _seconds(d.delay_hours)
        values.update(
            {
                f"key_{i}": exp.Literal.string(d.key),
                f"event_{i}": exp.Literal.string(d.event),
                f"delay_{i}": _interval(delay),
                f"lookback_{i}": _interval(lookback * 86400),
            }
        )
        if d.window_hours is not None:
            values[f"until_{i}"] = _interval(delay + _seconds(d.window_hours))
        if d.cap_value is not None:
            values[f"cap_{i}"] = exp.Literal.number(float(d.cap_value))
        if d.filter_prop:
            values[f"filter_{i}"] = _literals(d.filter_values or ("",))
            values[f"prop_path_{i}"] = exp.Literal.string(f"$.{d.filter_prop}")
    return values


def _replace(tree: exp.Expression, values: dict) -> exp.Expression:
    """Every ``:name`` placeholder becomes its sqlglot literal; ``IN (:list)`` gets one literal per value."""
    for node in list(tree.find_all(exp.In)):
        items = node.expressions
        if len(items) == 1 and isinstance(items[0], exp.Placeholder) and isinstance(values.get(items[0].name), list):
            node.set("expressions", [v.copy() for v in values[items[0].name]])

    def swap(node: exp.Expression):
        if isinstance(node, exp.Placeholder) and isinstance(values.get(node.name), exp.Expression):
            return values[node.name].copy()
        return node

    tree = tree.transform(swap)
    left = [n.name for n in tree.find_all(exp.Placeholder)]
    if left:
        raise BuildError(f"internal: unfilled placeholders {left}")
    return tree


def _spark_fixes(tree: exp.Expression) -> exp.Expression:
    """Spark renders PERCENTILE_CONT as the approximate PERCENTILE_APPROX; use the exact PERCENTILE."""

    def fix(node: exp.Expression):
        if isinstance(node, exp.WithinGroup) and isinstance(node.this, exp.PercentileCont):
            order = node.expression.expressions[0].this
            return exp.Anonymous(this="PERCENTILE", expressions=[order.copy(), node.this.this.copy()])
        return node

    tree = tree.transform(fix)
    for cte in tree.find_all(exp.CTE):  # Spark has no MATERIALIZED hint (it caches shared CTEs itself)
        cte.set("materialized", None)
    return tree


_DIALECT_FIXES = {"spark": _spark_fixes}


def build_query(*, plan: QueryPlan, source: SourceSQL, engine: str) -> str:
    """The experiment's one query, as the engine's SQL text (what runs, and what the snapshot keeps)."""
    if engine not in DIALECTS:
        raise BuildError(f"Unknown engine {engine!r}.")
    exposure = parse_select(source.exposure_sql, engine=engine, what="exposure")
    events = parse_select(source.events_sql, engine=engine, what="events")
    columns = frozenset(source.events_columns)
    covariates = plan.cuped_lookback_days > 0
    parts = [_metric_sql(d, i, columns, covariates) for i, d in enumerate(plan.definitions)]
    extra_cols = sorted(c for c in columns - set(EVENT_COLUMNS) if IDENTIFIER_RE.fullmatch(c))
    dedup = "event_id" in columns
    kept = [c for c in extra_cols if c != "event_id"]
    event_extras = "".join(f", s.{c}" for c in extra_cols)
    evd = EVD_DEDUP.format(extras="".join(f", {c}" for c in kept)) if dedup else EVD_PLAIN
    text = BASE.format(
        event_extras=event_extras,
        evd=evd,
        metric_ctes="".join(c for c, _ in parts),
        metric_selects="".join(s for _, s in parts),
        **TYPED,
    )
    tree = sqlglot.parse_one(text, read="duckdb")
    for cte in tree.find_all(exp.CTE):
        if cte.alias == "src_x":
            cte.set("this", exposure)
        elif cte.alias == "src_e":
            cte.set("this", events)
    tree = _replace(tree, _values(plan))
    fix = _DIALECT_FIXES.get(engine)
    if fix:
        tree = fix(tree)
    return tree.sql(dialect=DIALECTS[engine], pretty=True)


def probe_query(*, sql: str, engine: str, what: str, limit: int = 5) -> str:
    """``SELECT * FROM (<the source's SELECT>) LIMIT n`` in the engine's dialect (column checks, Test connection)."""
    inner = parse_select(sql, engine=engine, what=what)
    return exp.select("*").from_(inner.subquery("probe")).limit(limit).sql(dialect=DIALECTS[engine])
