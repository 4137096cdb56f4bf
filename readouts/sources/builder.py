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

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlglot
from sqlglot import exp

from readouts.definitions import MetricDefinition
from readouts.sources.plan import IDENTIFIER_RE, QueryPlan

DIALECTS = {"duckdb": "duckdb", "postgresql": "postgres", "spark": "spark"}
EXPOSURE_COLUMNS = ("experiment_key", "variant_key", "user_key", "timestamp")
EVENT_COLUMNS = ("user_key", "timestamp", "event", "value")
HEALTH_KINDS = ("unknown_variants", "multiple_exposures")
# Dimension breakdowns: the slices shown (by exposed users), every other value merged, no value (readouts.dimensions).
TOP_SLICES, OTHER, NONE = 20, "(other)", "(none)"
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
    props_type: str = ""  # the engine's type of the events' ``props`` column, lower case ('' = JSON or JSON text)


# --- the canonical query ------------------------------------------------------------------------------
BASE = """
WITH src_x AS (SELECT 1), src_e AS (SELECT 1),
x_raw AS (
  SELECT CAST(s.variant_key AS TEXT) AS variant_key, CAST(s.user_key AS TEXT) AS user_key, s."timestamp" AS ts
         {dim_cols}
  FROM src_x s
  WHERE s.experiment_key = :experiment_key AND s."timestamp" >= :start_ts AND s."timestamp" <= :end_ts
),
x_users AS (
  SELECT user_key, MIN(ts) AS x_ts, MIN(variant_key) AS variant_key, MAX(variant_key) AS last_variant
  FROM x_raw WHERE variant_key IN (:variant_keys) GROUP BY user_key
),
units AS MATERIALIZED (
  SELECT user_key, variant_key, x_ts, CAST(x_ts AS DATE) AS x_day FROM x_users WHERE variant_key = last_variant
),
ev AS (
  SELECT CAST(s.user_key AS TEXT) AS user_key, s."timestamp" AS ts, CAST(s.event AS TEXT) AS event,
         COALESCE(CAST(s.value AS DOUBLE), CAST(0 AS DOUBLE)) AS value {event_extras}
  FROM src_e s
  WHERE s.event IN (:events) AND s."timestamp" >= :lookback_ts AND s."timestamp" <= :end_ts
),
{ue},
evc AS (
  SELECT e.event, CAST(e.ts AS DATE) AS day, SUM(CASE WHEN e.ts >= e.x_ts THEN 1 ELSE 0 END) AS counted,
         SUM(CASE WHEN e.ts < e.x_ts THEN 1 ELSE 0 END) AS late
  FROM ue e WHERE e.ts >= :start_ts GROUP BY e.event, CAST(e.ts AS DATE)
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
FROM x_users WHERE variant_key <> last_variant
{metric_selects}
"""

# Repeat deliveries of one event (same user, event and event_id) count once, the earliest; rows without an id all
# count. Grouping a million (user, event, event_id) string keys is the query's most expensive step, so it runs in
# two passes: a hash of the key is counted first (one integer per row), and only the rows whose hash is seen more
# than once go through the exact dedup. Rows with the same key share a hash, so a hash seen once is a unique
# delivery whatever the hash function (a collision only sends a few unique rows through the exact path).
UE_DEDUP = """
eu AS (SELECT u.variant_key, u.x_ts, e.* FROM units u JOIN ev e ON e.user_key = u.user_key),
evh AS MATERIALIZED (
  SELECT e.*, CASE WHEN e.event_id IS NULL THEN NULL ELSE HASH(e.user_key, e.event, e.event_id) END AS h FROM eu e
),
dup_h AS (SELECT h FROM evh WHERE h IS NOT NULL GROUP BY h HAVING COUNT(*) > 1),
ue AS MATERIALIZED (
  SELECT e.variant_key, e.x_ts, e.user_key, e.ts, e.event, e.value {extras_e}
  FROM evh e LEFT JOIN dup_h k ON k.h = e.h WHERE k.h IS NULL
  UNION ALL
  SELECT variant_key, x_ts, user_key, ts, event, value {extras} FROM (
    SELECT e.*, ROW_NUMBER() OVER (PARTITION BY e.user_key, e.event, e.event_id ORDER BY e.ts) AS dup
    FROM evh e JOIN dup_h k ON k.h = e.h
  ) d WHERE d.dup = 1
)
"""
# The units' events are joined first and deduplicated after: only the experiment's users' events are hashed and
# grouped (in a warehouse most events belong to users outside the experiment; they never count anywhere), with
# no join more than before. (Joins, not ``h NOT IN (SELECT h FROM dup_h)``: with the ``h IS NULL OR`` Spark ran
# that as a nested loop over every event × every repeated hash. dup_h's hashes are unique, so neither join
# repeats a row.)
UE_PLAIN = "ue AS MATERIALIZED (SELECT u.variant_key, u.x_ts, e.* FROM units u JOIN ev e ON e.user_key = u.user_key)"

# Per value part j (a binary or mean definition: a planned metric, or one part of a ratio). ``{matches}`` and
# ``{counted}`` are conditions over e (event) built below; ``{value}`` is what one counted event adds. ``c{j}`` is the
# part's counted events themselves (no per-user-day GROUP BY: nearly every counted event is its user's only one that
# day, so grouping kept ~90% of the rows and cost as much as the window after it).
PART_CTES = """,
c{j} AS (
  SELECT e.variant_key, e.user_key, e.ts, CAST(e.ts AS DATE) AS day, {value} AS day_total, 1 AS day_events
  FROM ue e
  WHERE {matches} AND {counted}
),
k{j} AS ({cap})
"""
# The increments of the (capped) cumulative value per counted event: ``cc`` after the event, ``pc`` before it (a
# running sum in ROWS frame, so events at the same instant add one after another). Within a user's day they
# telescope, so their sums per variant and day are the per-day increments the SumsRows hold; rn = 1 is the user's
# first counted event, on the first counted day.
ROWS_CTES = """,
r{j} AS (
  SELECT c.*, SUM(c.day_total) OVER (PARTITION BY c.user_key ORDER BY c.ts ROWS UNBOUNDED PRECEDING) AS cum,
         ROW_NUMBER() OVER (PARTITION BY c.user_key ORDER BY c.ts) AS rn
  FROM c{j} c
),
s{j} AS (
  SELECT r.variant_key, r.user_key, r.day, r.rn, r.day_events, {cc} AS cc, {pc} AS pc
  FROM r{j} r CROSS JOIN k{j} k
)
"""
CC_SUM = "CASE WHEN k.cap IS NULL THEN r.cum ELSE LEAST(r.cum, k.cap) END"
PC_SUM = "CASE WHEN k.cap IS NULL THEN r.cum - r.day_total ELSE LEAST(r.cum - r.day_total, k.cap) END"
# A binary rule metric (catalog_metrics: value 1 from the first counted day on).
CC_FIRST = "CAST(1 AS DOUBLE)"
PC_FIRST = "CASE WHEN r.rn = 1 THEN CAST(0 AS DOUBLE) ELSE CAST(1 AS DOUBLE) END"
# Every CUPED covariate (the same metric's per-user value in the lookback before exposure) in ONE pass over ``ue``:
# the rows any covariate reads, grouped per user, one conditional aggregate per metric; x = 0 without such events.
COVARIATES_CTE = """,
v_all AS (
  SELECT u.user_key, u.variant_key, u.x_day {cov_cols}
  FROM units u LEFT JOIN (
    SELECT e.user_key {cov_aggs} FROM ue e WHERE e.ts < e.x_ts AND e.ts >= e.x_ts - :lookback AND ({any_cov})
    GROUP BY e.user_key
  ) p ON p.user_key = u.user_key
)
"""
COV_AGG = ", {fn}(CASE WHEN {matches} THEN {value} END) AS x{j}"
COV_COL = ", CAST(COALESCE(p.x{j}, 0) AS DOUBLE) AS x{j}"
# Every exposed user's final (capped) value of a part (ratio parts).
FINAL_CTE = """,
f{j} AS (
  SELECT u.user_key, u.variant_key, {final} AS m
  FROM units u
  LEFT JOIN (SELECT user_key, SUM(day_total) AS t FROM c{j} GROUP BY user_key) c ON c.user_key = u.user_key
  CROSS JOIN k{j} k
)
"""
FINAL_SUM = "CASE WHEN k.cap IS NULL THEN COALESCE(c.t, {zero_f}) ELSE LEAST(COALESCE(c.t, {zero_f}), k.cap) END"
FINAL_BINARY = "CASE WHEN c.user_key IS NULL THEN {zero_f} ELSE CAST(1 AS DOUBLE) END"
CONVERSION_SELECT = """
UNION ALL
SELECT 'conversion' AS kind, s.variant_key, :key_{i} AS metric, s.day, SUM(CASE WHEN s.rn = 1 THEN 1 ELSE 0 END),
       SUM(s.cc - s.pc), SUM(s.cc * s.cc - s.pc * s.pc), {products}, {products_bin}, SUM(s.day_events), 0, 0
FROM s{j} s {covariate_join}
GROUP BY s.variant_key, s.day
"""
PRODUCTS = "SUM((s.cc - s.pc) * COALESCE(v.x{j}, {zero_f}))"
PRODUCTS_BIN = "SUM(CASE WHEN s.rn = 1 THEN COALESCE(v.x{j}, {zero_f}) ELSE {zero_f} END)"
COVARIATE_JOIN = "LEFT JOIN v_all v ON v.user_key = s.user_key"
COVARIATE_SELECT = """
UNION ALL
SELECT 'covariate' AS kind, variant_key, :key_{i}, x_day, COUNT(*), SUM(x{j}), SUM(x{j} * x{j}), {zero_f}, {zero_f},
       0, 0, 0
FROM v_all GROUP BY variant_key, x_day
"""
# Dimension breakdowns (``readouts.dimensions``): every extra exposure column n is a dimension; a user's slice is the
# column's text on their first exposure row (as the internal side reads the props of the one stored exposure). The
# TOP_SLICES values with the most exposed users (ties by value) are shown, every other value is OTHER, NULL is NONE.
# Per planned metric, each kept user's final value (``f{j}``: the capped per-user value; a funnel: reached its last
# step) is summed per variant, dimension and slice: 'slice' rows (users n, total Σm, total_sq Σm², products Σm·d of
# a ratio) and, for a ratio, 'slice_den' rows (Σd, Σd²). Every row of the query then carries ``dimension`` and
# ``slice`` (NULL outside these rows).
DIM_COL = ", CAST(s.{column} AS TEXT) AS dim_{n}"
DIM_CTES = """,
x_first AS (
  SELECT f.user_key {dims} FROM (
    SELECT r.*, ROW_NUMBER() OVER (PARTITION BY r.user_key ORDER BY r.ts {dim_order}) AS rn
    FROM x_raw r WHERE r.variant_key IN (:variant_keys)
  ) f WHERE f.rn = 1
),
dim_users AS ({dim_users}),
dim_rank AS (
  SELECT d.dimension, d.raw, ROW_NUMBER() OVER (PARTITION BY d.dimension ORDER BY COUNT(*) DESC, d.raw) AS r
  FROM dim_users d WHERE d.raw IS NOT NULL GROUP BY d.dimension, d.raw
),
dim_slices AS (
  SELECT d.user_key, d.variant_key, d.dimension,
         CASE WHEN d.raw IS NULL THEN :slice_none WHEN k.r <= :top_slices THEN d.raw ELSE :slice_other END AS slice
  FROM dim_users d LEFT JOIN dim_rank k ON k.dimension = d.dimension AND k.raw = d.raw
)
"""
DIM_USERS = (
    "SELECT u.user_key, u.variant_key, :dim_{n} AS dimension, f.dim_{n} AS raw "
    "FROM units u JOIN x_first f ON f.user_key = u.user_key"
)
# One select per kind: 'slice' sums part ``g`` (and Σm·d of a ratio in ``products``), 'slice_den' a ratio's ``d``.
SLICE_SELECT = """
UNION ALL
SELECT '{kind}' AS kind, s.variant_key, :key_{i}, {null_d}, COUNT(*), SUM({v}.m), SUM({v}.m * {v}.m), {products},
       {zero_f}, 0, 0, 0, s.dimension, s.slice
FROM dim_slices s {join} GROUP BY s.variant_key, s.dimension, s.slice
"""
SLICE_JOIN = "JOIN f{j} {v} ON {v}.user_key = s.user_key"
SLICE_JOIN_FUNNEL = (
    "JOIN (SELECT u.user_key, CASE WHEN f.user_key IS NULL THEN {zero_f} ELSE CAST(1 AS DOUBLE) END AS m FROM units u "
    "LEFT JOIN fs{i}_{k} f ON f.user_key = u.user_key) g ON g.user_key = s.user_key"
)
DIMENSION_COLUMNS = ("dimension", "slice")
# Late conversions, as the internal rollups count them: an event the metric reads, since the start, before the
# user's exposure (whatever the metric's delay or filter).
UNCOUNTED_SELECT = """
UNION ALL
SELECT 'uncounted' AS kind, {null_s}, :key_{i}, day, 0, {zero_f}, {zero_f}, {zero_f}, {zero_f}, 0, SUM(late), 0
FROM evc WHERE event IN (:events_{i}) GROUP BY day HAVING SUM(late) > 0
"""
# Every event the plan reads, as the internal aggregate counts them per event name (not per metric): counted
# (at or after the exposure) and late (before it), since the start (the ``conversions_without_exposure`` check).
# Both read ``evc``: one pass over the users' events, per event name and day.
EVENT_COUNTS_SELECT = """
UNION ALL
SELECT 'event' AS kind, {null_s}, event, day, 0, {zero_f}, {zero_f}, {zero_f}, {zero_f}, counted, late, 0 FROM evc
"""
# The cap a part used (``variant_key`` carries the part: '', 'numerator' or 'denominator'; NULL: no users).
CAP_SELECT = """
UNION ALL
SELECT 'cap' AS kind, :part_{j}, :key_{i}, {null_d}, 0, k.cap, {zero_f}, {zero_f}, {zero_f}, 0, 0, 0 FROM k{j} k
"""
# A ratio's per-variant sums (stats.RatioSums): 'ratio' n, Σm, Σm², Σm·d; 'ratio_den' n, Σd, Σd².
RATIO_SELECT = """
UNION ALL
SELECT 'ratio' AS kind, n.variant_key, :key_{i}, {null_d}, COUNT(*), SUM(n.m), SUM(n.m * n.m), SUM(n.m * d.m),
       {zero_f}, 0, 0, 0
FROM f{num} n JOIN f{den} d ON d.user_key = n.user_key GROUP BY n.variant_key
UNION ALL
SELECT 'ratio_den' AS kind, d.variant_key, :key_{i}, {null_d}, COUNT(*), SUM(d.m), SUM(d.m * d.m), {zero_f},
       {zero_f}, 0, 0, 0
FROM f{den} d GROUP BY d.variant_key
"""
# Funnel step k of metric i: when each user first reached it (step 0: a counted event; step k: a counted event at
# or after the time step k − 1 was reached).
FUNNEL_FIRST = """,
fs{i}_{k} AS (
  SELECT e.user_key, MIN(e.variant_key) AS variant_key, MIN(e.ts) AS t FROM ue e
  WHERE {matches} AND {counted} GROUP BY e.user_key
)
"""
FUNNEL_NEXT = """,
fs{i}_{k} AS (
  SELECT e.user_key, MIN(e.variant_key) AS variant_key, MIN(e.ts) AS t
  FROM ue e JOIN fs{i}_{prev} p ON p.user_key = e.user_key
  WHERE {matches} AND {counted} AND e.ts >= p.t GROUP BY e.user_key
)
"""
FUNNEL_SELECT = """
UNION ALL
SELECT '{kind}' AS kind, variant_key, {metric}, CAST(t AS DATE), COUNT(*), CAST(COUNT(*) AS DOUBLE),
       CAST(COUNT(*) AS DOUBLE), {zero_f}, {zero_f}, COUNT(*), 0, 0
FROM fs{i}_{k} GROUP BY variant_key, CAST(t AS DATE)
"""
COUNTED = "e.ts >= :start_ts AND e.ts <= :end_ts AND e.ts >= e.x_ts + :delay_{j}"
COUNTED_WINDOW = " AND e.ts <= e.x_ts + :until_{j}"
CAP_NONE = "SELECT CAST(NULL AS DOUBLE) AS cap"
CAP_ABSOLUTE = "SELECT CAST(:cap_{j} AS DOUBLE) AS cap"
CAP_PERCENTILE = """
SELECT PERCENTILE_CONT(:cap_{j}) WITHIN GROUP (ORDER BY t.v) AS cap FROM (
  SELECT u.user_key, COALESCE(SUM(c.day_total), {zero_f}) AS v FROM units u LEFT JOIN c{j} c ON c.user_key = u.user_key
  GROUP BY u.user_key
) t {ignore_zeros}
"""
TYPED = {"zero_f": "CAST(0 AS DOUBLE)", "null_s": "CAST(NULL AS TEXT)", "null_d": "CAST(NULL AS DATE)"}
VALUE_KINDS = ("binary", "mean")


def rollup_shaped(d: MetricDefinition) -> bool:
    """The internal readout reads these from the rollups (``catalog_metrics.rollup_shaped``): the rows keep the
    rollups' shape (a binary metric's ``total`` is Σ value, CUPED covariates); every other definition has
    ``catalog_metrics``' shape (a binary value is 1, no covariates)."""
    from readouts.catalog_metrics import rollup_shaped as shaped  # noqa: PLC0415 - no Django at import time

    return shaped(d)


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


def _validate_part(d: MetricDefinition, what: str) -> None:
    if d.kind not in VALUE_KINDS:
        raise BuildError(f"Metric {what}: a {d.kind} cannot be read here (only binary or mean).")
    if not d.event:
        raise BuildError(f"Metric {what}: no event to read.")
    _validate_rules(d, what)


def _validate_rules(d: MetricDefinition, what: str) -> None:
    if d.filter_prop and not IDENTIFIER_RE.fullmatch(d.filter_prop):
        raise BuildError(f"Metric {what}: filter property {d.filter_prop!r} is not a plain column name.")
    if d.cap == "percentile" and not (d.cap_value is not None and 0 < d.cap_value < 1):
        raise BuildError(f"Metric {what}: a percentile cap needs a value in (0, 1).")
    if d.cap == "absolute" and d.cap_value is None:
        raise BuildError(f"Metric {what}: an absolute cap needs a value.")


def _validate(d: MetricDefinition) -> None:
    if d.kind == "ratio":
        if d.numerator is None or d.denominator is None:
            raise BuildError(f"Metric {d.key}: a ratio needs a numerator and a denominator.")
        _validate_part(d.numerator, f"{d.key} (numerator)")
        _validate_part(d.denominator, f"{d.key} (denominator)")
    elif d.kind == "funnel":
        if not d.steps:
            raise BuildError(f"Metric {d.key}: a funnel needs at least one step.")
        _validate_rules(d, d.key)
    elif d.kind in VALUE_KINDS:
        _validate_part(d, d.key)
    else:
        raise BuildError(f"Metric {d.key}: {d.kind} metrics are not computed on warehouse sources.")


def _filter(d: MetricDefinition, j: int, columns: frozenset[str]) -> str:
    if not d.filter_prop:
        return ""
    if d.filter_prop in columns:  # an extra column of the events SELECT
        return f" AND CAST(e.{d.filter_prop} AS TEXT) IN (:filter_{j})"
    if "props" in columns:  # engine JSON, JSON text or a map: PROPS_GET, rendered per engine (_props_get)
        return f" AND CAST(PROPS_GET(e.props, :prop_key_{j}) AS TEXT) IN (:filter_{j})"
    raise BuildError(f"Metric {d.key}: the events SELECT has neither a {d.filter_prop} column nor props.")


@dataclass
class _Query:
    """The pieces of one experiment's query as they are added, and the values of their placeholders."""

    columns: frozenset[str]
    lookback_days: int
    ctes: list[str] = field(default_factory=list)
    selects: list[str] = field(default_factory=list)
    values: dict = field(default_factory=dict)
    rules: list[MetricDefinition] = field(default_factory=list)  # every definition with time bounds (parts, funnels)
    needed: set[str] = field(default_factory=set)  # extra event columns a filter reads
    cov_aggs: list[str] = field(default_factory=list)  # v_all: one conditional aggregate per covariate
    cov_cols: list[str] = field(default_factory=list)
    cov_matches: list[str] = field(default_factory=list)
    dimensions: tuple[str, ...] = ()
    finals: set[int] = field(default_factory=set)  # parts whose f{j} (every user's final value) exists

    def rule(self, d: MetricDefinition, *, event: str | None = None) -> tuple[int, str, str]:
        """Number the rule set ``d`` (delay, window, filter, event): (j, matches, counted)."""
        j = len(self.rules)
        self.rules.append(d)
        delay = _seconds(d.delay_hours)
        self.values[f"event_{j}"] = exp.Literal.string(event or d.event)
        self.values[f"delay_{j}"] = _interval(delay)
        if d.window_hours is not None:
            self.values[f"until_{j}"] = _interval(delay + _seconds(d.window_hours))
        if d.cap_value is not None:
            self.values[f"cap_{j}"] = exp.Literal.number(float(d.cap_value))
        if d.filter_prop:
            self.values[f"filter_{j}"] = _literals(d.filter_values or ("",))
            self.values[f"prop_key_{j}"] = exp.Literal.string(d.filter_prop)
            self.needed.add(d.filter_prop if d.filter_prop in self.columns else "props")
        matches = f"e.event = :event_{j}" + _filter(d, j, self.columns)
        counted = COUNTED + (COUNTED_WINDOW if d.window_hours is not None else "")
        return j, matches, counted.format(j=j)

    def part(self, d: MetricDefinition, *, shape: str, name: str = "") -> int:
        """A binary or mean value: c/k CTEs (shape 'rollup': the rollups' rows; 'rule': catalog_metrics' rows)."""
        j, matches, counted = self.rule(d)
        self.values[f"part_{j}"] = exp.Literal.string(name)
        if d.kind == "mean" and d.aggregation == "count":
            value = "CAST(1 AS DOUBLE)"
        elif d.kind == "binary" and shape == "rule":
            value = TYPED["zero_f"]
        else:
            value = "e.value"
        cap = CAP_NONE
        if d.kind == "mean" and d.cap == "absolute":
            cap = CAP_ABSOLUTE
        elif d.kind == "mean" and d.cap == "percentile":
            cap = CAP_PERCENTILE.replace("{ignore_zeros}", "WHERE t.v <> 0" if d.cap_ignore_zeros else "")
        cap = cap.format(j=j, **TYPED)
        self.ctes.append(PART_CTES.format(j=j, value=value, matches=matches, counted=counted, cap=cap))
        return j

    def rows(self, d: MetricDefinition, i: int, j: int, *, shape: str, covariates: bool) -> None:
        first = d.kind == "binary" and shape == "rule"
        self.ctes.append(ROWS_CTES.format(j=j, cc=CC_FIRST if first else CC_SUM, pc=PC_FIRST if first else PC_SUM))
        products, products_bin, join = TYPED["zero_f"], TYPED["zero_f"], ""
        if covariates:
            _, matches, _ = self.rule(d)  # the covariate reads the same events (its own numbered placeholders)
            fn, value = ("MAX", "1") if d.kind == "binary" else ("SUM", "e.value")
            self.cov_aggs.append(COV_AGG.format(j=j, fn=fn, value=value, matches=matches))
            self.cov_cols.append(COV_COL.format(j=j))
            self.cov_matches.append(f"({matches})")
            products, products_bin = PRODUCTS.format(j=j, **TYPED), PRODUCTS_BIN.format(j=j, **TYPED)
            join = COVARIATE_JOIN.format(j=j)
            self.selects.append(COVARIATE_SELECT.format(i=i, j=j, **TYPED))
        self.selects.append(
            CONVERSION_SELECT.format(
                i=i, j=j, products=products, products_bin=products_bin, covariate_join=join, **TYPED
            )
        )

    def covariates(self) -> str:
        if not self.cov_aggs:
            return ""
        return COVARIATES_CTE.format(
            cov_cols="".join(self.cov_cols), cov_aggs="".join(self.cov_aggs), any_cov=" OR ".join(self.cov_matches)
        )

    def final(self, d: MetricDefinition, j: int) -> None:
        if j in self.finals:
            return
        self.finals.add(j)
        final = FINAL_BINARY if d.kind == "binary" else FINAL_SUM
        self.ctes.append(FINAL_CTE.format(j=j, final=final.format(**TYPED)))

    def dimension_ctes(self) -> str:
        if not self.dimensions:
            return ""
        users = " UNION ALL ".join(DIM_USERS.format(n=n) for n in range(len(self.dimensions)))
        for n, name in enumerate(self.dimensions):
            self.values[f"dim_{n}"] = exp.Literal.string(name)
        return DIM_CTES.format(
            dims="".join(f", f.dim_{n}" for n in range(len(self.dimensions))),
            dim_order="".join(f", r.dim_{n} NULLS LAST" for n in range(len(self.dimensions))),
            dim_users=users,
        )

    def slices(self, d: MetricDefinition, i: int, j: int | None = None, den: int | None = None) -> None:
        """The 'slice' rows of metric i: part j's final values (and, for a ratio, denominator part ``den``)."""
        if not self.dimensions:
            return
        products = TYPED["zero_f"]
        if d.kind == "funnel":
            join = SLICE_JOIN_FUNNEL.format(i=i, k=len(d.steps) - 1, **TYPED)
        else:
            self.final(d.numerator if d.kind == "ratio" else d, j)
            join = SLICE_JOIN.format(j=j, v="g")
        if den is not None:
            den_join = SLICE_JOIN.format(j=den, v="d")
            self.selects.append(
                SLICE_SELECT.format(kind="slice_den", i=i, v="d", join=den_join, products=products, **TYPED)
            )
            join, products = f"{join} {den_join}", "SUM(g.m * d.m)"
        self.selects.append(SLICE_SELECT.format(kind="slice", i=i, v="g", join=join, products=products, **TYPED))

    def metric(self, d: MetricDefinition, i: int) -> None:
        _validate(d)
        self.values[f"key_{i}"] = exp.Literal.string(d.key)
        self.values[f"events_{i}"] = _literals(d.events())
        if d.kind == "ratio":
            num = self.part(d.numerator, shape="rule", name="numerator")
            den = self.part(d.denominator, shape="rule", name="denominator")
            self.rows(d.numerator, i, num, shape="rule", covariates=False)
            self.final(d.numerator, num)
            self.final(d.denominator, den)
            self.selects.append(RATIO_SELECT.format(i=i, num=num, den=den, **TYPED))
            self.selects += [CAP_SELECT.format(i=i, j=j, **TYPED) for j in (num, den)]
            self.slices(d, i, num, den)
        elif d.kind == "funnel":
            self._funnel(d, i)
            self.slices(d, i)
        else:
            shape = "rollup" if rollup_shaped(d) else "rule"
            j = self.part(d, shape=shape)
            self.rows(d, i, j, shape=shape, covariates=shape == "rollup" and self.lookback_days > 0)
            if d.kind == "mean" and d.cap != "none":
                self.selects.append(CAP_SELECT.format(i=i, j=j, **TYPED))
            self.slices(d, i, j)
        self.selects.append(UNCOUNTED_SELECT.format(i=i, **TYPED))

    def _funnel(self, d: MetricDefinition, i: int) -> None:
        last = len(d.steps) - 1
        for k, event in enumerate(d.steps):
            _, matches, counted = self.rule(d, event=event)
            template = FUNNEL_FIRST if k == 0 else FUNNEL_NEXT
            self.ctes.append(template.format(i=i, k=k, prev=k - 1, matches=matches, counted=counted))
            self.values[f"step_{i}_{k}"] = exp.Literal.string(f"{d.key}#{k}")
            self.selects.append(FUNNEL_SELECT.format(kind="step", metric=f":step_{i}_{k}", i=i, k=k, **TYPED))
        self.selects.append(FUNNEL_SELECT.format(kind="conversion", metric=f":key_{i}", i=i, k=last, **TYPED))


def _values(plan: QueryPlan, q: _Query) -> dict[str, exp.Expression | list[exp.Expression]]:
    events = sorted({e for d in plan.definitions for e in d.events()})
    lookback = max(plan.cuped_lookback_days, 0)
    earliest_delay = min([0.0, *(d.delay_hours for d in q.rules)])
    values: dict = {
        "experiment_key": exp.Literal.string(plan.experiment_key),
        "variant_keys": _literals(plan.variant_keys or ("",)),
        "events": _literals(events or ("",)),
        "start_ts": _ts(plan.start),
        "end_ts": _ts(plan.end),
        "lookback": _interval(lookback * 86400),
        **q.values,
    }
    values["lookback_ts"] = _ts(plan.start - timedelta(days=lookback, hours=-earliest_delay))
    values |= {
        "top_slices": exp.Literal.number(TOP_SLICES),
        "slice_other": exp.Literal.string(OTHER),
        "slice_none": exp.Literal.string(NONE),
    }
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


# One key of the events' ``props``, as text, per engine and type of the column (``__c`` stands for it; the key is a
# validated identifier): a map is indexed, JSON (or JSON in a text column) is extracted.
PROPS_GET = {
    ("duckdb", "map"): "__c['{key}']",
    ("duckdb", "json"): "__c ->> '$.{key}'",
    ("postgresql", "json"): "__c ->> '{key}'",
    ("postgresql", "text"): "CAST(__c AS JSONB) ->> '{key}'",
    ("spark", "map"): "TRY_ELEMENT_AT(__c, '{key}')",
    ("spark", "json"): "GET_JSON_OBJECT(CAST(__c AS STRING), '$.{key}')",
}


def _props_kind(engine: str, props_type: str) -> str:
    if engine == "postgresql":
        return "json" if props_type in ("json", "jsonb") else "text"
    return "map" if props_type.startswith("map") else "json"


def _props_get(tree: exp.Expression, *, engine: str, props_type: str) -> exp.Expression:
    """Every ``PROPS_GET(column, 'key')`` of the canonical query becomes the engine's way to read that key."""
    template = PROPS_GET[(engine, _props_kind(engine, props_type))]

    def swap(node: exp.Expression):
        if isinstance(node, exp.Anonymous) and node.name.upper() == "PROPS_GET":
            column, key = node.expressions
            if not IDENTIFIER_RE.fullmatch(key.name):
                raise BuildError(f"Property {key.name!r} is not a plain name.")
            read = sqlglot.parse_one(template.format(key=key.name), read=DIALECTS[engine])
            return read.transform(lambda n: column.copy() if isinstance(n, exp.Column) and n.name == "__c" else n)
        return node

    return tree.transform(swap)


def _union_leaves(node: exp.Expression):
    if isinstance(node, exp.Union):
        yield from _union_leaves(node.left)
        yield from _union_leaves(node.right)
    else:
        yield node


def _pad_dimension_columns(tree: exp.Expression) -> None:
    """Every branch of the final UNION without the ``dimension``/``slice`` columns gets them as typed NULLs."""
    width = len(OUTPUT_COLUMNS) + len(DIMENSION_COLUMNS)
    for n, leaf in enumerate(_union_leaves(tree)):
        if isinstance(leaf, exp.Select) and len(leaf.expressions) < width:
            for name in DIMENSION_COLUMNS:  # the first branch names the UNION's columns
                null = exp.cast(exp.null(), exp.DataType.build("TEXT"))
                leaf.select(exp.alias_(null, name) if n == 0 else null, copy=False)


def _postgres_fixes(tree: exp.Expression) -> exp.Expression:
    """PostgreSQL has no variadic HASH: hash the key's text (the dedup only needs equal keys to hash equal); and the
    slices' tie-break orders by code point (COLLATE "C", as DuckDB, Spark and Python do), not the database's locale."""
    for cte in tree.find_all(exp.CTE):
        if cte.alias == "dim_rank":
            for ordered in cte.find_all(exp.Ordered):
                if isinstance(ordered.this, exp.Column) and ordered.this.name == "raw":
                    collation = exp.Identifier(this="C", quoted=True)
                    ordered.set("this", exp.Collate(this=ordered.this.copy(), expression=collation))

    def fix(node: exp.Expression):
        if isinstance(node, exp.Anonymous) and node.name.upper() == "HASH":
            text = exp.Anonymous(
                this="CONCAT_WS", expressions=[exp.Literal.string("|"), *[a.copy() for a in node.expressions]]
            )
            return exp.Anonymous(this="HASHTEXTEXTENDED", expressions=[text, exp.Literal.number(0)])
        return node

    return tree.transform(fix)


SPARK_KEEP = exp.condition("RAND() >= 0")


def _spark_fixes(tree: exp.Expression) -> exp.Expression:
    """Spark renders PERCENTILE_CONT as the approximate PERCENTILE_APPROX: use the exact PERCENTILE; hash the dedup key
    in 64 bits; and keep every shared CTE a CTE (below)."""

    def fix(node: exp.Expression):
        if isinstance(node, exp.WithinGroup) and isinstance(node.this, exp.PercentileCont):
            order = node.expression.expressions[0].this
            return exp.Anonymous(this="PERCENTILE", expressions=[order.copy(), node.this.this.copy()])
        if isinstance(node, exp.Anonymous) and node.name.upper() == "HASH":
            # Spark's HASH is 32-bit Murmur3: 10M keys share ~11,600 hashes by chance (each a trip through the exact
            # path); XXHASH64 has 64 bits, as DuckDB's HASH and PostgreSQL's HASHTEXTEXTENDED.
            return exp.Anonymous(this="XXHASH64", expressions=[a.copy() for a in node.expressions])
        return node

    tree = tree.transform(fix)
    # Spark has no MATERIALIZED hint, and its optimizer (InlineCTE) copies every *deterministic* CTE into each place
    # that reads it: the bench query scanned the events 104 times and 10M events did not finish in 30 minutes. A CTE
    # read more than once gets an always-true non-deterministic filter (rand() is in [0, 1)), which Spark never
    # inlines: it plans the CTE once and every reader shares its exchange.
    names = {cte.alias for cte in tree.find_all(exp.CTE)}
    reads = Counter(t.name for t in tree.find_all(exp.Table) if not t.db and t.name in names)
    for cte in tree.find_all(exp.CTE):
        cte.set("materialized", None)
        if reads[cte.alias] > 1:
            query = cte.this if isinstance(cte.this, exp.Select) else exp.select("*").from_(cte.this.subquery("q"))
            cte.set("this", query.where(SPARK_KEEP.copy(), copy=False))
    return tree


_DIALECT_FIXES = {"postgresql": _postgres_fixes, "spark": _spark_fixes}


def _validate_dimensions(names: tuple[str, ...]) -> None:
    for name in names:
        if not IDENTIFIER_RE.fullmatch(name) or name in EXPOSURE_COLUMNS:
            raise BuildError(f"Dimension {name!r} is not a plain extra column name of the exposure SELECT.")


def build_query(*, plan: QueryPlan, source: SourceSQL, engine: str) -> str:
    """The experiment's one query, as the engine's SQL text (what runs, and what the snapshot keeps)."""
    if engine not in DIALECTS:
        raise BuildError(f"Unknown engine {engine!r}.")
    exposure = parse_select(source.exposure_sql, engine=engine, what="exposure")
    events = parse_select(source.events_sql, engine=engine, what="events")
    _validate_dimensions(plan.dimensions)
    q = _Query(
        columns=frozenset(source.events_columns),
        lookback_days=plan.cuped_lookback_days,
        dimensions=tuple(plan.dimensions),
    )
    dimension_ctes = q.dimension_ctes()
    for i, d in enumerate(plan.definitions):
        q.metric(d, i)
    # Only the columns a filter reads travel past the source's SELECT (no JSON carried when no filter needs it).
    kept = sorted(c for c in q.needed if IDENTIFIER_RE.fullmatch(c))
    dedup = "event_id" in q.columns
    event_extras = "".join(f", s.{c}" for c in [*kept, *(["event_id"] if dedup else [])])
    extras = {"extras": "".join(f", {c}" for c in kept), "extras_e": "".join(f", e.{c}" for c in kept)}
    ue = UE_DEDUP.format(**extras) if dedup else UE_PLAIN
    q.selects.append(EVENT_COUNTS_SELECT.format(**TYPED))
    text = BASE.format(
        event_extras=event_extras,
        ue=ue,
        dim_cols="".join(DIM_COL.format(column=c, n=n) for n, c in enumerate(plan.dimensions)),
        metric_ctes=dimension_ctes + q.covariates() + "".join(q.ctes),
        metric_selects="".join(q.selects),
        **TYPED,
    )
    tree = sqlglot.parse_one(text, read="duckdb")
    for cte in tree.find_all(exp.CTE):
        if cte.alias == "src_x":
            cte.set("this", exposure)
        elif cte.alias == "src_e":
            cte.set("this", events)
    tree = _replace(tree, _values(plan, q))
    if "props" in q.needed:
        tree = _props_get(tree, engine=engine, props_type=source.props_type)
    if q.dimensions:
        _pad_dimension_columns(tree)
    fix = _DIALECT_FIXES.get(engine)
    if fix:
        tree = fix(tree)
    return tree.sql(dialect=DIALECTS[engine], pretty=True)


def probe_query(*, sql: str, engine: str, what: str, limit: int = 5) -> str:
    """``SELECT * FROM (<the source's SELECT>) LIMIT n`` in the engine's dialect (column checks, Test connection)."""
    inner = parse_select(sql, engine=engine, what=what)
    return exp.select("*").from_(inner.subquery("probe")).limit(limit).sql(dialect=DIALECTS[engine])
