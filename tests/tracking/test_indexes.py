"""Every statement the ingest (dedup), the readout catch-up and the full readout aggregate run against the
tracking tables can be served by an index, after migration 0006 dropped the experiment-only indexes that
the composite ones already serve (PostgreSQL `EXPLAIN`).

The tables here are tiny, so PostgreSQL would pick sequential scans whatever the indexes; with
`enable_seqscan = off` it still picks one only when no index can serve the statement.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from readouts import queries, rollups
from tracking.models import Assignment, Covariate, Event, VariantConflict
from tracking.services import EventIn, events_ingest

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db]

TRACKING_TABLES = tuple(m._meta.db_table for m in (Event, Assignment, Covariate, VariantConflict))


def _events(experiment, prefix: str) -> list[EventIn]:
    now = timezone.now()
    later = now + timedelta(seconds=1)
    slug = experiment.slug
    events = []
    for i in range(20):
        user, variant = f"{prefix}-{i}", ("control", "treatment")[i % 2]
        events.append(EventIn(slug, variant, user, "exposure", now, covariates={"revenue": float(i)}))
        events.append(EventIn(slug, variant, user, "conversion", later, metric="purchase"))
        events.append(
            EventIn(slug, variant, user, "conversion", later, metric="revenue", value=2.0, event_id=f"{user}-a")
        )
    events += [
        EventIn(slug, "control", f"{prefix}-0", "exposure", now),  # a duplicate exposure
        EventIn(slug, "treatment", f"{prefix}-0", "conversion", later, metric="purchase"),  # a variant conflict
        EventIn(
            slug, "control", f"{prefix}-0", "conversion", later, metric="revenue", value=1.0, event_id=f"{prefix}-0-a"
        ),
    ]
    return events


def _plan(sql: str, params=None) -> str:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        transaction.set_rollback(True)  # nothing ran (no ANALYZE); the setting ends with the transaction
    return plan


def _sequential_scans(plan: str) -> list[str]:
    return [
        line.strip() for line in plan.splitlines() if "Seq Scan on" in line and any(t in line for t in TRACKING_TABLES)
    ]


def _statements(captured: CaptureQueriesContext) -> list[str]:
    statements = [q["sql"] for q in captured.captured_queries]
    return [
        s for s in statements if any(t in s for t in TRACKING_TABLES) and not s.startswith(("SAVEPOINT", "RELEASE"))
    ]


def test_indexes__experiment_only_indexes_dropped__composites_remain():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = %s AND indexdef LIKE %s",
            [Event._meta.db_table, "%(experiment_id)"],
        )
        assert cursor.fetchall() == []
        constraints = connection.introspection.get_constraints(cursor, Event._meta.db_table)
    assert constraints["event_readout_idx"]["columns"][0] == "experiment_id"
    assert constraints["event_experiment_time_idx"]["columns"][0] == "experiment_id"


def test_ingest_catch_up_and_readout__every_tracking_statement__served_by_an_index(experiment):
    # Given an experiment with exposures, covariates, conversions and repeat purchases, and its rollups built
    with CaptureQueriesContext(connection) as ingest:
        events_ingest(events=_events(experiment, "a"))
        events_ingest(events=_events(experiment, "a"))  # the whole batch again: dedup on every row
    with CaptureQueriesContext(connection) as rebuild:
        rollups.recompute(experiment_id=experiment.pk)
    # When more events arrive and the readout catches up incrementally
    events_ingest(events=_events(experiment, "b"))
    with CaptureQueriesContext(connection) as catch_up:
        result = rollups.catch_up(experiment_id=experiment.pk)
    aggregate = queries.readout_aggregate_query(experiment_id=experiment.pk)
    # Then every statement that touched a tracking table has a plan without a sequential scan of one
    statements = _statements(ingest) + _statements(rebuild) + _statements(catch_up)
    assert any("ON CONFLICT" in s for s in _statements(ingest))  # the dedup statements were captured
    assert len(_statements(catch_up)) >= 2, result
    plans = {s: _plan(s) for s in statements}
    plans[aggregate.sql] = _plan(aggregate.sql, aggregate.params)
    scans = {s[:120]: _sequential_scans(plan) for s, plan in plans.items() if _sequential_scans(plan)}
    assert scans == {}
