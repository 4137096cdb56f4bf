"""Warehouse readouts on PostgreSQL: a second database in the test cluster plays the warehouse.

The same dataset goes through Signal Dash's API for one experiment and into the warehouse database for
another: every SumsRow and every statistic equal. Bad sources fail with a plain message, keep the
previous numbers, and never show the URL.
"""

from __future__ import annotations

import json

import pytest
from django.db import connection

from readouts.models import DataSource, ReadoutSnapshot
from readouts.sources import builder, runners
from readouts.sources.refresh import snapshot_request, snapshot_run
from tests.readouts import warehouse_data
from tests.readouts.test_warehouse_rules import _dataset, assert_rules, rules_query
from tests.readouts.warehouse_helpers import (
    EVENT_COLUMNS,
    EXPOSURE_COLUMNS,
    assert_same_readouts,
    running_experiment,
    send_to_api,
    start_time,
)

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db]
WAREHOUSE_DB = "sd_test_warehouse"


def _server_url(dbname: str) -> str:
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgresql://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{dbname}"


@pytest.fixture
def warehouse_db():
    """A fresh second database with the two tables; yields a function loading a dataset into it."""
    import psycopg

    with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{WAREHOUSE_DB}"')
        admin.execute(f'CREATE DATABASE "{WAREHOUSE_DB}"')
    url = _server_url(WAREHOUSE_DB)

    def load(ds) -> None:
        with psycopg.connect(url, autocommit=True) as con:
            con.execute(
                "CREATE TABLE exposures (experiment_key text, variant_key text, user_key text, "
                '"timestamp" timestamptz, country text)'
            )
            con.execute(
                'CREATE TABLE events (user_key text, "timestamp" timestamptz, event text, value double precision, '
                "event_id text, channel text)"
            )
            con.execute("CREATE SEQUENCE touched")
            with con.cursor() as cur:
                cur.executemany(
                    "INSERT INTO exposures VALUES (%s, %s, %s, %s, %s)",
                    [[r[c] for c in EXPOSURE_COLUMNS] for r in ds.exposures],
                )
                cur.executemany(
                    "INSERT INTO events VALUES (%s, %s, %s, %s, %s, %s)",
                    [[r[c] for c in EVENT_COLUMNS] for r in ds.events],
                )

    yield url, load
    with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{WAREHOUSE_DB}" WITH (FORCE)')


def pg_source(**over) -> DataSource:
    fields = {
        "key": "analytics",
        "name": "Analytics replica",
        "engine": "postgresql",
        "url_env": "SD_TEST_PG_URL",
        "exposure_sql": "SELECT * FROM exposures",
        "events_sql": "SELECT * FROM events",
        "cuped_lookback_days": warehouse_data.LOOKBACK_DAYS,
        "timeout_s": 30,
        **over,
    }
    return DataSource.objects.create(**fields)


def test_postgres_snapshot__same_dataset__every_sumsrow_and_statistic_equal(owner, warehouse_db, monkeypatch):
    # Given the dataset sent to the API for one experiment and loaded into the warehouse database
    url, load = warehouse_db
    started = start_time()
    internal = running_experiment(owner, "own-exp", started=started, with_catalog=True)
    ds = warehouse_data.build(start=started, internal_key="own-exp", warehouse_key="wh-exp")
    rejected = send_to_api(ds.api)
    assert rejected == {"unknown_variant": ds.unknown_variant_rows, "variant_conflict": ds.conflicting_exposures}
    load(ds)
    monkeypatch.setenv("SD_TEST_PG_URL", url)
    warehouse = running_experiment(owner, "wh-exp", started=started, data_source=pg_source(), with_catalog=True)

    # When the warehouse experiment is refreshed
    snapshot = snapshot_run(snapshot=snapshot_request(experiment=warehouse, triggered_by="test")[0])

    # Then every SumsRow and every statistic equals the internal readout's
    assert snapshot.status == ReadoutSnapshot.Status.OK, snapshot.error
    assert snapshot.rows["health"] == {
        "unknown_variants": ds.unknown_variant_rows,
        "multiple_exposures": ds.multiple_exposure_users,
    }
    assert_same_readouts(internal, warehouse, ds)


def test_postgres_runner__select_that_writes__refused_by_read_only_transaction(warehouse_db, monkeypatch):
    # Given a warehouse with a sequence (nextval writes, and is a plain SELECT to any parser)
    url, load = warehouse_db
    load(warehouse_data.Dataset())
    monkeypatch.setenv("SD_TEST_PG_URL", url)
    # When a query calls it, Then the read-only transaction refuses it with a plain message
    with pytest.raises(runners.SourceError, match="read-only"):
        runners.run(engine="postgresql", url_env="SD_TEST_PG_URL", sql="SELECT nextval('touched')", timeout_s=5)


def test_postgres_runner__query_past_timeout__cancelled_by_statement_timeout(warehouse_db, monkeypatch):
    url, _ = warehouse_db
    monkeypatch.setenv("SD_TEST_PG_URL", url)
    with pytest.raises(runners.SourceError, match="timeout of 1 s"):
        runners.run(engine="postgresql", url_env="SD_TEST_PG_URL", sql="SELECT pg_sleep(5)", timeout_s=1)


@pytest.mark.parametrize("props_type", ["jsonb", "json", "text"])
def test_postgres_rules__filter_on_props__jsonb_json_or_json_text__values_equal_reference(
    warehouse_db, monkeypatch, props_type
):
    # Given the rules dataset in the warehouse database, the filters' channel in props as jsonb, json or JSON text
    import psycopg

    url, _ = warehouse_db
    exposures, events = _dataset(3)
    with psycopg.connect(url, autocommit=True) as con:
        con.execute('CREATE TABLE r_x (experiment_key text, variant_key text, user_key text, "timestamp" timestamptz)')
        con.execute(
            'CREATE TABLE r_e (user_key text, "timestamp" timestamptz, event text, value double precision, '
            f"event_id text, props {props_type})"
        )
        with con.cursor() as cur:
            cur.executemany("INSERT INTO r_x VALUES (%s, %s, %s, %s)", exposures)
            rows = [(u, at, ev, v, eid, json.dumps({"channel": ch})) for u, at, ev, v, eid, ch in events]
            cur.executemany("INSERT INTO r_e VALUES (%s, %s, %s, %s, %s, %s)", rows)
    monkeypatch.setenv("SD_TEST_PG_URL", url)
    x, e = "SELECT * FROM r_x", "SELECT * FROM r_e"
    # When the probe finds the column's type and the query runs
    probe = runners.run(
        engine="postgresql",
        url_env="SD_TEST_PG_URL",
        sql=builder.probe_query(sql=e, engine="postgresql", what="e"),
        timeout_s=30,
    )
    assert probe.type_of("props") == props_type
    sql = rules_query(engine="postgresql", columns=probe.columns, props_type=probe.type_of("props"), x=x, e=e)
    result = runners.run(engine="postgresql", url_env="SD_TEST_PG_URL", sql=sql, timeout_s=60)
    # Then per definition and variant the values equal the independent reference
    assert_rules(result.dicts(), exposures, events)
