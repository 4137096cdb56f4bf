"""Ingest reads its experiments share-locked in the write transaction's first statement (issue 10: one round
trip fewer per request). readouts/rollups.py's horizon relies on that lock: an end transition or a catch-up's
`FOR NO KEY UPDATE` of the experiment row waits for every open ingest transaction."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

from tracking import selectors

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]


def test_ingest_read__lock_true__holds_for_share_until_commit_and_update_waits(running):
    # Given an ingest transaction that has read its experiment (lock=True) and not yet committed
    locked, release = threading.Event(), threading.Event()
    seen: dict = {}

    def ingest_transaction():
        try:
            with transaction.atomic():
                seen["status"] = selectors.experiments_for_ingest(slugs=["checkout"], lock=True)["checkout"].status
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=ingest_transaction)
    thread.start()
    assert locked.wait(10)
    # When an UPDATE of the experiment row (what the end transition does) runs meanwhile, with a lock timeout
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '300ms'")
            cursor.execute("UPDATE experiments_experiment SET ended_at = now() WHERE id = %s", [running.pk])
        seen["updated"] = True
    except Exception as exc:  # noqa: BLE001 - the lock timeout is the expected outcome
        seen["error"] = type(exc).__name__
    finally:
        release.set()
        thread.join(10)
    # Then it had to wait for the ingest transaction; the read saw the experiment running
    assert seen == {"status": "running", "error": "OperationalError"}


def test_ingest_read__lock_false__takes_no_lock(running):
    # Given a plain read (the assignment endpoint's pre-read) inside an open transaction
    locked, release = threading.Event(), threading.Event()

    def reader():
        try:
            with transaction.atomic():
                selectors.experiments_for_ingest(slugs=["checkout"])
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=reader)
    thread.start()
    assert locked.wait(10)
    try:
        # When the row is updated meanwhile / Then it does not wait
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '300ms'")
            cursor.execute("UPDATE experiments_experiment SET ended_at = now() WHERE id = %s", [running.pk])
            assert cursor.rowcount == 1
    finally:
        release.set()
        thread.join(10)
