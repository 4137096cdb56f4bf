"""The warehouse query's per-user rules (windows, delays, filters, counts, caps) against an independent computation.

Hand-made definitions (no catalog model), randomized events loaded into DuckDB, and a reference written
from docs/metrics.md's rules in plain Python/numpy: per variant, exposed users, converted users, Σ value
and Σ value² of the per-user values must equal the sums of the query's SumsRow increments.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from readouts.definitions import MetricDefinition as M
from readouts.sources import builder, runners
from readouts.sources.plan import QueryPlan

START = datetime(2026, 3, 1, tzinfo=UTC)
END = START + timedelta(days=8)
DEFS = (
    M(key="bought_24h", kind="binary", event="purchase", window_hours=24),
    M(key="rev_early", kind="mean", event="purchase", delay_hours=-2, window_hours=48),
    M(
        key="orders_web",
        kind="mean",
        event="purchase",
        aggregation="count",
        filter_prop="channel",
        filter_values=("web",),
    ),
    M(key="rev_cap50", kind="mean", event="purchase", cap="absolute", cap_value=50.0),
    M(key="rev_p90", kind="mean", event="purchase", cap="percentile", cap_value=0.9),
    M(
        key="rev_p75_nz",
        kind="mean",
        event="purchase",
        cap="percentile",
        cap_value=0.75,
        cap_ignore_zeros=True,
        delay_hours=1,
    ),
    M(key="clicks_app", kind="binary", event="click", filter_prop="channel", filter_values=("app", "tv")),
)


def _dataset(seed: int):
    rng = random.Random(seed)
    exposures, events = [], []
    for i in range(400):
        user, variant = f"u{i}", rng.choice(["a", "b"])
        x = START + timedelta(hours=rng.randrange(0, 96), minutes=rng.randrange(60))
        exposures.append(("exp", variant, user, x))
        for k in range(rng.choice([0, 1, 2, 4])):
            event = rng.choice(["purchase", "purchase", "click"])
            # exactly on window/delay edges sometimes: 24 h, 48 h − 2 h, −2 h, +1 h
            edge = rng.choice([None, None, 24, 46, -2, 1])
            at = x + (timedelta(hours=edge) if edge is not None else timedelta(minutes=rng.randrange(-300, 4000)))
            value = round(rng.expovariate(1 / 30), 2) if rng.random() < 0.9 else None
            events.append((user, at, event, value, f"{user}-{k}", rng.choice(["web", "app", "tv"])))
    return exposures, events


def _reference(d: M, exposures, events) -> dict:  # noqa: C901 - the rules, spelled out one by one
    first = {u: (v, x) for _, v, u, x in exposures}
    delay = timedelta(hours=d.delay_hours)
    per_user = defaultdict(list)
    for u, at, ev, value, _, channel in events:
        if u not in first or ev != d.event:
            continue
        if d.filter_prop and channel not in d.filter_values:
            continue
        x = first[u][1]
        lo = x + delay
        if at < lo or at < START or at > END:
            continue
        if d.window_hours is not None and at > lo + timedelta(hours=d.window_hours):
            continue
        per_user[u].append(value or 0.0)
    values = {}
    for u in first:
        convs = per_user.get(u, [])
        if d.kind == "binary":
            values[u] = 1.0 if convs else 0.0
        elif d.aggregation == "count":
            values[u] = float(len(convs))
        else:
            values[u] = float(sum(convs))
    cap = None
    if d.cap == "absolute":
        cap = d.cap_value
    elif d.cap == "percentile":
        pool = [v for v in values.values() if not (d.cap_ignore_zeros and v == 0)]
        cap = float(np.quantile(pool, d.cap_value))
    if cap is not None:
        values = {u: min(v, cap) for u, v in values.items()}
    out = defaultdict(lambda: [0, 0, 0.0, 0.0])  # n, converted, Σv, Σv²
    for u, (variant, _) in first.items():
        acc = out[variant]
        acc[0] += 1
        acc[1] += 1 if per_user.get(u) else 0
        acc[2] += values[u]
        acc[3] += values[u] ** 2
    return dict(out)


# How the events carry ``channel`` (what the filters read): an extra column, or ``props`` as the engine's JSON, JSON
# text, or a map (DuckDB SQL building the ``props`` column from ``channel``).
PROPS_FORMS = {
    "column": "channel",
    "json": "CAST(json_object('channel', channel) AS JSON) AS props",
    "text": "CAST(json_object('channel', channel) AS VARCHAR) AS props",
    "map": "MAP(['channel'], [channel]) AS props",
}


def _load(exposures, events, *, props: str = "column"):
    """The dataset in an in-memory DuckDB: tables exposures and events (``channel`` as ``PROPS_FORMS[props]``)."""
    import duckdb

    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE TABLE exposures (experiment_key TEXT, variant_key TEXT, user_key TEXT, timestamp TIMESTAMP)")
    con.execute(
        "CREATE TABLE raw_events (user_key TEXT, timestamp TIMESTAMP, event TEXT, value DOUBLE, event_id TEXT, "
        "channel TEXT)"
    )
    naive = lambda t: t.astimezone(UTC).replace(tzinfo=None)  # noqa: E731
    con.executemany("INSERT INTO exposures VALUES (?, ?, ?, ?)", [[e, v, u, naive(x)] for e, v, u, x in exposures])
    rows = [[u, naive(at), ev, val, eid, ch] for u, at, ev, val, eid, ch in events]
    con.executemany("INSERT INTO raw_events VALUES (?, ?, ?, ?, ?, ?)", rows)
    con.execute(
        f"CREATE TABLE events AS SELECT user_key, timestamp, event, value, event_id, {PROPS_FORMS[props]} "
        "FROM raw_events"
    )
    return con


def rules_query(*, engine: str, columns, props_type: str = "", x="SELECT * FROM exposures", e="SELECT * FROM events"):
    """The query of DEFS over the two SELECTs (``columns``: the events SELECT's, ``props_type`` as probed)."""
    plan = QueryPlan("exp", ("a", "b"), START, END, DEFS, cuped_lookback_days=0)
    source = builder.SourceSQL(x, e, frozenset(c.lower() for c in columns), props_type=props_type)
    return builder.build_query(plan=plan, source=source, engine=engine)


def assert_rules(rows: list[dict], exposures, events) -> None:
    """Per definition and variant, the query's summed increments equal the reference."""
    n = defaultdict(int)
    for r in rows:
        if r["kind"] == "exposure":
            n[r["variant_key"]] += r["users"]
    for d in DEFS:
        ref = _reference(d, exposures, events)
        got = defaultdict(lambda: [0, 0.0, 0.0])
        for r in rows:
            if r["kind"] == "conversion" and r["metric"] == d.key:
                acc = got[r["variant_key"]]
                acc[0] += r["users"]
                acc[1] += r["total"]
                acc[2] += r["total_sq"]
        for variant, (ref_n, converted, total, total_sq) in ref.items():
            assert n[variant] == ref_n
            g = got[variant]
            assert g[0] == converted, (d.key, variant)
            if d.kind == "mean":
                assert math.isclose(g[1], total, rel_tol=1e-9, abs_tol=1e-9), (d.key, variant, g[1], total)
                assert math.isclose(g[2], total_sq, rel_tol=1e-9, abs_tol=1e-9), (d.key, variant, g[2], total_sq)


@pytest.mark.parametrize("props", list(PROPS_FORMS), ids=[f"filter-{p}" for p in PROPS_FORMS])
@pytest.mark.parametrize("seed", [1, 2])
def test_warehouse_rules__random_events__per_user_values_equal_independent_reference(seed, props):
    # Given random events (the filters' channel as a column, or in props as JSON, JSON text or a map)
    exposures, events = _dataset(seed)
    con = _load(exposures, events, props=props)
    probe = con.execute("SELECT * FROM events LIMIT 0")
    columns = [c[0] for c in probe.description]
    props_type = next((str(c[1]).lower() for c in probe.description if c[0] == "props"), "")
    # When the query of hand-made definitions runs
    cur = con.execute(rules_query(engine="duckdb", columns=columns, props_type=props_type))
    # Then per definition and variant the summed increments equal the reference
    assert_rules(runners.Result([c[0] for c in cur.description], cur.fetchall()).dicts(), exposures, events)


def test_builder__values_only_as_literals__quotes_cannot_escape():
    # Given an experiment key and filter value with quotes and SQL
    d = M(key="m", kind="binary", event="x'); DROP TABLE events; --", filter_prop="channel", filter_values=("a'b",))
    plan = QueryPlan("e'; DELETE FROM t; --", ("a",), START, END, (d,), 0)
    src = builder.SourceSQL("SELECT * FROM exposures", "SELECT * FROM events", frozenset({"channel"}))
    for engine in ("duckdb", "postgresql", "spark"):
        sql = builder.build_query(plan=plan, source=src, engine=engine)
        # Then the parsed query is one SELECT and the values are string literals
        import sqlglot

        tree = sqlglot.parse(sql, read=builder.DIALECTS[engine])
        assert len(tree) == 1 and tree[0].find(sqlglot.exp.Drop) is None and tree[0].find(sqlglot.exp.Delete) is None


@pytest.mark.parametrize(
    "sql, message",
    [
        ("DELETE FROM events", "exactly one SELECT"),
        ("SELECT 1; SELECT 2", "exactly one SELECT"),
        ("CREATE TABLE t AS SELECT 1", "exactly one SELECT"),
        ("SELECT * FROM (", "does not parse"),
    ],
)
def test_builder__source_select_not_a_plain_select__refused(sql, message):
    with pytest.raises(builder.BuildError, match=message):
        builder.parse_select(sql, engine="duckdb", what="events")


def test_builder__filter_prop_not_an_identifier__refused():
    d = M(key="m", kind="binary", event="x", filter_prop="a b; --", filter_values=("1",))
    plan = QueryPlan("e", ("a",), START, END, (d,), 0)
    with pytest.raises(builder.BuildError, match="not a plain column name"):
        builder.build_query(plan=plan, source=builder.SourceSQL("SELECT 1", "SELECT 1", frozenset()), engine="duckdb")


@pytest.mark.parametrize("name", ["timestamp", "a b", "x; DROP TABLE t", ""])
def test_builder__dimension_not_an_extra_column_name__refused(name):
    d = M(key="m", kind="binary", event="x")
    plan = QueryPlan("e", ("a",), START, END, (d,), 0, dimensions=(name,))
    with pytest.raises(builder.BuildError, match="not a plain extra column name"):
        builder.build_query(plan=plan, source=builder.SourceSQL("SELECT 1", "SELECT 1", frozenset()), engine="duckdb")


def test_dimensions_for__registered_first_then_by_name__plain_lower_case_columns_only(db):
    from experiments.models import Experiment
    from readouts.sources.plan import MAX_DIMENSIONS, dimensions_for

    exp = Experiment(slug="e", dimensions=["os", "missing"])
    columns = frozenset({"experiment_key", "variant_key", "user_key", "timestamp", "os", "country", "Weird", "a-b"})
    assert dimensions_for(experiment=exp, columns=columns, standard=builder.EXPOSURE_COLUMNS) == ("os", "country")
    many = frozenset(f"c{k:02d}" for k in range(MAX_DIMENSIONS + 5))
    assert dimensions_for(experiment=exp, columns=many, standard=()) == tuple(sorted(many))[:MAX_DIMENSIONS]
