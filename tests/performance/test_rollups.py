"""Incremental readouts (readouts/rollups.py) equal the full aggregate (readouts/queries.py).

Integers must be equal, floats within rollups.FLOAT_TOLERANCE (relative 1e-9): the rollups add the same
per-user increments in another order, so only rounding may differ.
"""

from __future__ import annotations

import random
import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from readouts import queries, rollups
from readouts.models import Rollup, RollupWatermark
from tests.performance.conftest import T0, batches, random_events
from tracking import queries as tracking_queries
from tracking.models import Event
from tracking.services import EventIn, events_ingest


def full_rows(experiment):
    return queries.readout_aggregate(queries.readout_aggregate_query(experiment_id=experiment.pk))


def rollup_rows(experiment):
    rollups.catch_up(experiment_id=experiment.pk)
    return rollups._rows("default", experiment.pk)


@pytest.mark.django_db
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_catch_up__random_stream_with_catch_ups_between_batches__equals_full_aggregate(running, seed):
    # Given a random stream (late, duplicate, out-of-order, event_id repeats, covariates, conflicts)
    rng = random.Random(seed)
    stream = random_events(seed)
    # When it is ingested through the service in random batches, catching up at random points
    for batch in batches(stream, seed):
        events_ingest(events=batch, allow_before_start=True)
        if rng.random() < 0.3:
            rollups.catch_up(experiment_id=running.pk)
    # Then the rollups equal the full aggregate, and the stream exercised every rule
    full = full_rows(running)
    assert rollups.rows_differences(full, rollup_rows(running)) == []
    kinds = {r.kind for r in full}
    assert kinds == {"exposure", "covariate", "conversion", "uncounted"}
    assert any(r.late for r in full) and any(r.unexposed for r in full)


@pytest.mark.django_db
def test_catch_up__late_exposure__earlier_conversion_becomes_counted(running):
    # Given a conversion with no exposure yet, caught up as "never exposed"
    def ev(event_type, minutes, **extra):
        return EventIn("checkout", "treatment", "u1", event_type, T0 + timedelta(minutes=minutes), **extra)

    events_ingest(events=[ev("conversion", 10, metric="purchase", value=5.0)], allow_before_start=True)
    assert [(r.kind, r.unexposed) for r in rollup_rows(running)] == [("uncounted", 1)]
    # When the exposure (earlier occurred_at) and an event_id repeat plus a new purchase arrive
    events_ingest(events=[ev("exposure", 0, covariates={"purchase": 2.0})], allow_before_start=True)
    events_ingest(
        events=[ev("conversion", 20, metric="purchase", value=1.0, event_id="p1")] * 2, allow_before_start=True
    )
    rows = rollup_rows(running)
    # Then both conversions count for the user (once), and the result equals the full aggregate
    (conversion,) = [r for r in rows if r.kind == "conversion"]
    assert (conversion.users, conversion.total, conversion.events, conversion.products) == (1, 6.0, 2, 12.0)
    assert [r for r in rows if r.kind == "uncounted"] == []
    assert rollups.rows_differences(full_rows(running), rows) == []


@pytest.mark.django_db
def test_catch_up__nothing_new__no_write_and_idempotent(running, django_assert_max_num_queries):
    # Given caught-up rollups
    events_ingest(events=random_events(7, users=10), allow_before_start=True)
    rollups.catch_up(experiment_id=running.pk)
    before = rollups._rows("default", running.pk)
    # When catching up again with nothing new
    with django_assert_max_num_queries(1):
        result = rollups.catch_up(experiment_id=running.pk)
    # Then nothing is done and nothing changes
    assert result.mode == "none"
    assert rollups._rows("default", running.pk) == before


@pytest.mark.django_db
def test_catch_up__backlog_over_threshold__full_recompute(running, monkeypatch):
    # Given more changed users than the incremental threshold
    monkeypatch.setattr(rollups, "FULL_RECOMPUTE_USERS", 5)
    events_ingest(events=random_events(11, users=20), allow_before_start=True)
    # When catching up
    result = rollups.catch_up(experiment_id=running.pk)
    # Then the full aggregate was used, and the watermark is the newest event
    assert result.mode == "full"
    assert RollupWatermark.objects.get(experiment=running).event_id == Event.objects.latest("id").id
    assert rollups.rows_differences(full_rows(running), rollups._rows("default", running.pk)) == []


@pytest.mark.django_db
def test_readout_rows__selector_rows__equal_full_aggregate(running):
    # Given events
    events_ingest(events=random_events(5, users=30), allow_before_start=True)
    # When the readout rows are read (what readout_get reads)
    rows = rollups.readout_rows(experiment_id=running.pk)
    # Then they are the aggregate's rows, variant None for uncounted ones
    assert rollups.rows_differences(full_rows(running), rows) == []
    assert {r.variant_id for r in rows if r.kind == "uncounted"} == {None}


def test_rows_differences__tolerance__integers_exact_floats_relative():
    # Given two rows that differ by rounding only, and one that differs by an integer
    base = queries.SumsRow("conversion", 1, "m", T0.date(), 3, 1e6, 2e12, 0.0, 0.0, 4, 0, 0)
    rounding = queries.SumsRow("conversion", 1, "m", T0.date(), 3, 1e6 * (1 + 1e-12), 2e12, 0.0, 0.0, 4, 0, 0)
    off_by_one = queries.SumsRow("conversion", 1, "m", T0.date(), 3, 1e6, 2e12, 0.0, 0.0, 5, 0, 0)
    # Then rounding is equal, the integer is not
    assert rollups.rows_differences([base], [rounding]) == []
    assert rollups.rows_differences([base], [off_by_one]) == ["('conversion', 1, 'm', datetime.date(2026, 11, 1)) "
                                                             "events: expected 4, got 5"]  # fmt: skip


@pytest.mark.django_db
def test_recompute_readouts__command__rebuilds_and_verifies(running, capsys):
    # Given events and stale rollups (a row the events do not justify)
    events_ingest(events=random_events(9, users=20), allow_before_start=True)
    rollups.catch_up(experiment_id=running.pk)
    Rollup.objects.filter(experiment=running, kind="exposure").update(users=999)
    # When recomputing with verification
    call_command("recompute_readouts", "--experiment", "checkout", "--verify")
    # Then the stale rows were reported and the rollups equal the aggregate again
    out = capsys.readouterr().out
    assert "checkout: rollups differed" in out and "rebuilt" in out
    assert rollups.rows_differences(full_rows(running), rollups._rows("default", running.pk)) == []


# --- PostgreSQL: concurrency -------------------------------------------------------------------------
def _in_thread(fn):
    def run():
        try:
            fn()
        finally:
            connection.close()

    return run


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_catch_up__concurrent_ingest_threads_and_catch_ups__equals_full_aggregate(running):
    # Given four ingesting threads (the real service) and a thread catching up all the while
    stream = random_events(21, users=120)
    shares = [stream[i::4] for i in range(4)]
    done = threading.Event()
    errors: list[BaseException] = []

    def ingest(share, seed):
        def run():
            try:
                for batch in batches(share, seed, largest=6):
                    events_ingest(events=batch, allow_before_start=True)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        return _in_thread(run)

    def catch_up_loop():
        while not done.is_set():
            rollups.catch_up(experiment_id=running.pk)

    writers = [threading.Thread(target=ingest(s, i)) for i, s in enumerate(shares)]
    reader = threading.Thread(target=_in_thread(catch_up_loop))
    # When they run together
    reader.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=120)
    done.set()
    reader.join(timeout=60)
    # Then a final catch-up equals the full aggregate
    assert errors == []
    assert rollups.rows_differences(full_rows(running), rollup_rows(running)) == []


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_catch_up__lower_id_commits_after_higher_id__still_counted(running):
    # Given an ingest transaction that took a lower event id and stays open (holding FOR SHARE)
    variant = running.variants.get(key="control")
    opened, release = threading.Event(), threading.Event()

    def slow_writer():
        with transaction.atomic():
            tracking_queries.experiments_running_lock([running.pk])
            Event.objects.create(experiment=running, variant=variant, user_key="slow", event_type="exposure",
                                 occurred_at=T0)  # fmt: skip
            opened.set()
            release.wait(30)

    writer = threading.Thread(target=_in_thread(slow_writer))
    writer.start()
    assert opened.wait(30)
    # And a later event (higher id) committed meanwhile
    Event.objects.create(experiment=running, variant=variant, user_key="fast", event_type="exposure", occurred_at=T0)
    # When a catch-up starts, it waits for the open transaction instead of skipping its id
    catcher = threading.Thread(target=_in_thread(lambda: rollups.catch_up(experiment_id=running.pk)))
    catcher.start()
    catcher.join(timeout=0.5)
    assert catcher.is_alive()
    release.set()
    writer.join(30)
    catcher.join(30)
    # Then both exposures are in the rollups
    (row,) = rollups._rows("default", running.pk)
    assert (row.kind, row.users) == ("exposure", 2)
