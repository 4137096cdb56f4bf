"""Warehouse readouts on DuckDB: the same dataset through Signal Dash's API and in a DuckDB lake → equal numbers."""

from __future__ import annotations

import pytest

from readouts.models import DataSource, ReadoutSnapshot
from readouts.selectors import readout_get
from readouts.sources.refresh import snapshot_request, snapshot_run
from tests.readouts import warehouse_data
from tests.readouts.warehouse_helpers import (
    EVENT_COLUMNS,
    EXPOSURE_COLUMNS,
    assert_same_readouts,
    naive,
    running_experiment,
    send_to_api,
    start_time,
)

pytestmark = pytest.mark.django_db(transaction=False)


def write_lake(tmp_path, ds, *, parquet: bool) -> str:
    """The dataset as a DuckDB file (tables) or as Parquet files; returns the DuckDB URL."""
    import duckdb

    path = tmp_path / "lake.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE exposures (experiment_key TEXT, variant_key TEXT, user_key TEXT, timestamp TIMESTAMP, "
        "country TEXT)"
    )
    con.execute(
        "CREATE TABLE events (user_key TEXT, timestamp TIMESTAMP, event TEXT, value DOUBLE, event_id TEXT, "
        "channel TEXT)"
    )
    con.executemany(
        "INSERT INTO exposures VALUES (?, ?, ?, ?, ?)", [[r[c] for c in EXPOSURE_COLUMNS] for r in naive(ds.exposures)]
    )
    con.executemany(
        "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", [[r[c] for c in EVENT_COLUMNS] for r in naive(ds.events)]
    )
    if parquet:
        for table in ("exposures", "events"):
            con.execute(f"COPY {table} TO '{tmp_path / table}.parquet' (FORMAT parquet)")
    con.close()
    if parquet:
        path.unlink()
        return "duckdb:///:memory:"
    return f"duckdb:///{path}"


def duckdb_source(tmp_path, *, parquet: bool, **over) -> DataSource:
    if parquet:
        x = f"SELECT * FROM read_parquet('{tmp_path / 'exposures.parquet'}')"
        e = f"SELECT * FROM read_parquet('{tmp_path / 'events.parquet'}')"
    else:
        x, e = "SELECT * FROM exposures", "SELECT * FROM events"
    fields = {
        "key": "lake",
        "name": "Lake",
        "engine": "duckdb",
        "url_env": "SD_TEST_DUCKDB_URL",
        "exposure_sql": x,
        "events_sql": e,
        "cuped_lookback_days": warehouse_data.LOOKBACK_DAYS,
        **over,
    }
    return DataSource.objects.create(**fields)


@pytest.fixture
def two_experiments(owner):
    started = start_time()
    internal = running_experiment(owner, "own-exp", started=started, with_catalog=True)
    ds = warehouse_data.build(start=started, internal_key="own-exp", warehouse_key="wh-exp")
    rejected = send_to_api(ds.api)
    assert rejected == {"unknown_variant": ds.unknown_variant_rows, "variant_conflict": ds.conflicting_exposures}
    return internal, ds, started


@pytest.mark.parametrize("parquet", [False, True], ids=["file", "parquet"])
def test_duckdb_snapshot__same_dataset__every_sumsrow_and_statistic_equal(
    two_experiments, owner, tmp_path, monkeypatch, parquet
):
    # Given the dataset sent to the API for one experiment and loaded into DuckDB for another (ad-hoc and catalog
    # metrics: windows, delays, a filter, a count, absolute and percentile caps, a ratio, a funnel)
    internal, ds, started = two_experiments
    monkeypatch.setenv("SD_TEST_DUCKDB_URL", write_lake(tmp_path, ds, parquet=parquet))
    source = duckdb_source(tmp_path, parquet=parquet)
    warehouse = running_experiment(owner, "wh-exp", started=started, data_source=source, with_catalog=True)

    # When the warehouse experiment is refreshed
    snapshot, created = snapshot_request(experiment=warehouse, triggered_by="test")
    snapshot = snapshot_run(snapshot=snapshot)

    # Then the snapshot is ok, its health counts are the dataset's
    assert created and snapshot.status == ReadoutSnapshot.Status.OK, snapshot.error
    assert snapshot.rows["health"] == {
        "unknown_variants": ds.unknown_variant_rows,
        "multiple_exposures": ds.multiple_exposure_users,
    }
    assert ds.unknown_variant_rows > 0 and ds.multiple_exposure_users > 0
    a = readout_get(experiment=internal)
    assert any(r.kind == "covariate" for r in a.rows) and any(r.late for r in a.rows)
    # and every planned metric's SumsRow and every statistic of every metric equals the internal readout's
    assert_same_readouts(internal, warehouse, ds)
