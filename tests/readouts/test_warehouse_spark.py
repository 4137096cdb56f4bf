"""Warehouse readouts on Apache Spark: a Spark Connect server in front of a two-executor cluster, reading Parquet.

The same dataset goes through Signal Dash's API for one experiment and into Parquet files read by Spark
for another: every SumsRow and every statistic equal. The server starts once per test session (the
``spark_connect`` fixture); this module runs in the SQLite pass only, so ``make test`` pays for it once.
"""

from __future__ import annotations

import pytest
from django.db import connection

from readouts.models import DataSource, ReadoutSnapshot
from readouts.sources.refresh import snapshot_request, snapshot_run
from tests import sparkcluster
from tests.readouts import warehouse_data
from tests.readouts.test_warehouse_duckdb import write_lake
from tests.readouts.warehouse_helpers import (
    assert_same_readouts,
    running_experiment,
    send_to_api,
    start_time,
)

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "sqlite", reason="the Spark cluster runs once, in the SQLite pass"),
]


@pytest.mark.timeout(900)  # includes starting the server (shared by the session) on a busy 2-core machine
def test_spark_snapshot__parquet_on_two_executors__every_sumsrow_and_statistic_equal(
    spark_connect, owner, tmp_path, monkeypatch
):
    # Given a Spark Connect server on a cluster with at least two executors
    url, ui_port = spark_connect
    assert len(sparkcluster.wait_executors(ui_port, 2)) >= 2
    # and the dataset sent to the API for one experiment and written as Parquet for another
    started = start_time()
    internal = running_experiment(owner, "own-exp", started=started, with_catalog=True)
    ds = warehouse_data.build(start=started, internal_key="own-exp", warehouse_key="wh-exp", users=150)
    rejected = send_to_api(ds.api)
    assert rejected == {"unknown_variant": ds.unknown_variant_rows, "variant_conflict": ds.conflicting_exposures}
    write_lake(tmp_path, ds, parquet=True)
    monkeypatch.setenv("SD_TEST_SPARK_URL", url)
    source = DataSource.objects.create(
        key="spark",
        name="Spark lake",
        engine="spark",
        url_env="SD_TEST_SPARK_URL",
        exposure_sql=f"SELECT * FROM parquet.`{tmp_path / 'exposures.parquet'}`",
        events_sql=f"SELECT * FROM parquet.`{tmp_path / 'events.parquet'}`",
        cuped_lookback_days=warehouse_data.LOOKBACK_DAYS,
        timeout_s=600,
    )
    warehouse = running_experiment(owner, "wh-exp", started=started, data_source=source, with_catalog=True)

    # When the warehouse experiment is refreshed on Spark
    snapshot = snapshot_run(snapshot=snapshot_request(experiment=warehouse, triggered_by="test")[0])

    # Then every SumsRow and every statistic equals the internal readout's
    assert snapshot.status == ReadoutSnapshot.Status.OK, snapshot.error
    assert snapshot.rows["health"] == {
        "unknown_variants": ds.unknown_variant_rows,
        "multiple_exposures": ds.multiple_exposure_users,
    }
    assert_same_readouts(internal, warehouse, ds)
    # and the tasks ran on the executors (not only the driver)
    assert sum(e["totalTasks"] for e in sparkcluster.executors(ui_port)) > 0


@pytest.mark.timeout(900)
@pytest.mark.parametrize("props", ["map", "text"])
def test_spark_rules__filter_on_props__map_or_json_text__values_equal_reference(
    spark_connect, tmp_path, monkeypatch, props
):
    # Given the rules dataset as Parquet, the filters' channel in props as a map<string,string> or as JSON text
    from readouts.sources import builder, runners
    from tests.readouts.test_warehouse_rules import _dataset, _load, assert_rules, rules_query

    url, _ = spark_connect
    exposures, events = _dataset(4)
    con = _load(exposures, events, props=props)
    for table in ("exposures", "events"):
        con.execute(f"COPY {table} TO '{tmp_path / table}.parquet' (FORMAT parquet)")
    con.close()
    monkeypatch.setenv("SD_TEST_SPARK_URL", url)
    x = f"SELECT * FROM parquet.`{tmp_path / 'exposures.parquet'}`"
    e = f"SELECT * FROM parquet.`{tmp_path / 'events.parquet'}`"
    # When the probe finds the column's type and the query runs on Spark
    probe_sql = builder.probe_query(sql=e, engine="spark", what="events")
    probe = runners.run(engine="spark", url_env="SD_TEST_SPARK_URL", sql=probe_sql, timeout_s=300)
    assert probe.type_of("props").startswith("map") == (props == "map"), probe.type_of("props")
    sql = rules_query(engine="spark", columns=probe.columns, props_type=probe.type_of("props"), x=x, e=e)
    result = runners.run(engine="spark", url_env="SD_TEST_SPARK_URL", sql=sql, timeout_s=600)
    # Then per definition and variant the values equal the independent reference
    assert_rules(result.dicts(), exposures, events)
