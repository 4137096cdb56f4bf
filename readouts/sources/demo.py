"""The demo's warehouse: a small Parquet "lake" read by DuckDB, and one demo experiment computed there.

``seed_demo`` calls ``demo_lake_seed``: it writes ``demo-lake/exposures.parquet`` and
``demo-lake/events.parquet`` (generated inside DuckDB, seeded), creates the ``demo-lake`` source
(engine DuckDB, URL from ``SIGNALDASH_DEMO_LAKE_URL``, ``duckdb:///:memory:`` by default: the
SELECTs read the files with ``read_parquet``), an approved, running experiment on it, and its first
snapshot — so ``make demo`` shows a warehouse-native readout with no server to start.
"""

from __future__ import annotations

import os
from datetime import UTC, timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from experiments import services
from experiments.models import Experiment, ExperimentMetric, Variant
from readouts.models import DataSource

SLUG = "warehouse-checkout"
URL_ENV = "SIGNALDASH_DEMO_LAKE_URL"
DEFAULT_URL = "duckdb:///:memory:"
USERS = 4000

# Generated in DuckDB (setseed makes random() repeatable): exposures over five days, treatment converts
# more often, revenue per purchase, some purchases in the two weeks before exposure (CUPED), a few rows
# with an unknown variant and a few users exposed to both variants; each exposure carries the user's platform and
# country (extra columns: the dimensions its readout breaks down by; "platform" is pre-registered).
LAKE_SQL = """
SELECT setseed(0.42);
CREATE TABLE users AS
SELECT 'w' || i AS user_key, CASE WHEN random() < 0.5 THEN 'control' ELSE 'treatment' END AS variant_key,
       $start::TIMESTAMP + to_seconds(CAST(random() * 5 * 86400 AS BIGINT)) AS exposed_at,
       CASE WHEN random() < 0.55 THEN 'web' WHEN random() < 0.6 THEN 'ios' ELSE 'android' END AS platform,
       CASE WHEN random() < 0.03 THEN NULL
            ELSE ['US', 'DE', 'GB', 'FR', 'BR', 'IN'][1 + CAST(floor(random() * 6) AS INT)] END AS country
FROM range({users}) t(i);
CREATE TABLE exposures AS
SELECT '{slug}' AS experiment_key, variant_key, user_key, exposed_at AS "timestamp", platform, country FROM users
UNION ALL SELECT '{slug}', 'legacy', user_key, exposed_at, platform, country FROM users WHERE random() < 0.01
UNION ALL SELECT '{slug}', CASE WHEN variant_key = 'control' THEN 'treatment' ELSE 'control' END, user_key,
          exposed_at + INTERVAL 1 HOUR, platform, country FROM users WHERE random() < 0.01;
CREATE TABLE buys AS
SELECT user_key, exposed_at + to_seconds(CAST(random() * 3 * 86400 AS BIGINT)) AS ts,
       round(10 + random() * 90, 2) AS value, user_key || '-p' || k AS id
FROM users, range(2) r(k)
WHERE random() < CASE WHEN variant_key = 'treatment' THEN 0.16 ELSE 0.12 END
UNION ALL
SELECT user_key, exposed_at - to_seconds(CAST(random() * 10 * 86400 AS BIGINT)), round(10 + random() * 90, 2),
       user_key || '-pre'
FROM users WHERE random() < 0.1;
CREATE TABLE events AS
SELECT user_key, ts AS "timestamp", 'purchase' AS event, CAST(NULL AS DOUBLE) AS value, id AS event_id FROM buys
UNION ALL
SELECT user_key, ts, 'revenue', value, id || '-r' FROM buys;
"""


def lake_dir() -> Path:
    return Path(settings.BASE_DIR) / "demo-lake"


def lake_write(*, folder: Path, start) -> None:
    import duckdb

    folder.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(":memory:")
    try:
        script = LAKE_SQL.format(users=USERS, slug=SLUG)
        start_text = start.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        for statement in filter(None, (s.strip() for s in script.split(";"))):
            con.execute(statement.replace("$start", "?"), [start_text] if "$start" in statement else [])
        for table in ("exposures", "events"):
            con.execute(f"COPY {table} TO '{folder / table}.parquet' (FORMAT parquet)")
    finally:
        con.close()


def demo_lake_seed(*, users: dict) -> bool:
    """Create the lake, its source, the demo experiment and its first snapshot (False: already there)."""
    from experiments.demo_data import _scenario_clock
    from readouts.sources.refresh import snapshot_request, snapshot_run

    if Experiment.objects.filter(slug=SLUG).exists():
        return False
    os.environ.setdefault(URL_ENV, DEFAULT_URL)
    now = timezone.now()
    started = now - timedelta(days=6)
    folder = lake_dir()
    lake_write(folder=folder, start=started)
    source, _ = DataSource.objects.update_or_create(
        key="demo-lake",
        defaults={
            "name": "Demo lake (Parquet on DuckDB)",
            "engine": DataSource.Engine.DUCKDB,
            "url_env": URL_ENV,
            "exposure_sql": f"SELECT * FROM read_parquet('{folder / 'exposures.parquet'}')",
            "events_sql": f"SELECT * FROM read_parquet('{folder / 'events.parquet'}')",
            "cuped_lookback_days": 14,
            "timeout_s": 60,
        },
    )
    ops, reviewer = users["ops"], users["reviewer"]
    with _scenario_clock(started - timedelta(days=1)):
        exp = services.experiment_save_plan(
            experiment=Experiment(
                name="Checkout (warehouse-native)",
                slug=SLUG,
                hypothesis="The one-page checkout raises purchases; computed where the events live (a Parquet lake).",
                primary_metric="purchase",
                owner=ops,
                mde=0.2,
                baseline_rate=0.12,
                expected_daily_users=800,
                data_source=source,
                dimensions=["platform"],
            ),
            actor=ops,
        )
        for key, is_control in (("control", True), ("treatment", False)):
            services.variant_save(
                variant=Variant(experiment=exp, key=key, name=key.title(), is_control=is_control), actor=ops
            )
        for key, role, kind in (("purchase", "primary", "binary"), ("revenue", "secondary", "mean")):
            metric = ExperimentMetric(experiment=exp, key=key, role=role, kind=kind)
            services.experiment_metric_save(metric=metric, actor=ops)
        services.experiment_submit_for_review(experiment=exp, actor=ops)
    with _scenario_clock(started):
        services.experiment_approve_and_start(experiment=Experiment.objects.get(pk=exp.pk), actor=reviewer)
    exp = Experiment.objects.get(pk=exp.pk)
    snapshot_run(snapshot=snapshot_request(experiment=exp, triggered_by="seed_demo")[0])
    return True
