"""The reused-connection health check (signaldash/db/postgresql/base.py) against a real PostgreSQL started here.

A connection whose server process is stopped (SIGSTOP: the kernel still acknowledges its bytes) must be
reported unusable after about SIGNALDASH_DB_HEALTH_CHECK_TIMEOUT_S, not after the freeze ends; a healthy one
stays usable and keeps answering, in and out of transactions.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from django.conf import settings
from django.db.utils import load_backend

from tests.pgcluster import PostgresCluster, find_bindir

pytestmark = [
    pytest.mark.postgres_only,  # once per `make test`: in the PostgreSQL pass
    pytest.mark.skipif(find_bindir() is None, reason="needs PostgreSQL server binaries (initdb, pg_ctl)"),
]


@pytest.fixture(scope="module")
def cluster():
    cluster = PostgresCluster()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def wrapper(cluster, django_db_blocker):
    """A Django connection of the app's engine and options to the cluster's `postgres` database."""
    settings_dict = {
        **settings.DATABASES["default"],
        "NAME": "postgres",
        "USER": "postgres",
        "PASSWORD": "",
        "HOST": "127.0.0.1",
        "PORT": str(cluster.port),
        "TEST": {},
    }
    conn = load_backend(settings.POSTGRESQL_ENGINE).DatabaseWrapper(settings_dict, alias="health-check-test")
    with django_db_blocker.unblock():  # a connection of its own, outside the test database
        conn.ensure_connection()
        yield conn
        conn.close()


def _backend_pid(conn) -> int:
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def test_health_check__server_process_frozen__unusable_after_the_timeout_not_the_freeze(cluster, wrapper):
    # Given a reused connection whose server process stops answering
    pid = _backend_pid(wrapper)
    assert pid in cluster.server_pids()
    assert wrapper.is_usable()
    os.kill(pid, signal.SIGSTOP)
    thaw = threading.Timer(20, os.kill, (pid, signal.SIGCONT))  # a check that waits for the thaw fails, not hangs
    thaw.start()
    try:
        # When Django checks it before a request uses it
        started = time.monotonic()
        usable = wrapper.is_usable()
        elapsed = time.monotonic() - started
    finally:
        thaw.cancel()
        os.kill(pid, signal.SIGCONT)
    # Then it is unusable after the bound (1 s), where Django's own check would wait for the thaw
    bound = settings.SIGNALDASH_DB_HEALTH_CHECK_TIMEOUT_S
    assert usable is False
    assert bound <= elapsed < bound + 10  # "no hang": far below a freeze, far above scheduling noise


def test_health_check__server_stopped__unusable_at_once(cluster, wrapper):
    cluster.stop("fast")
    try:
        assert wrapper.is_usable() is False
    finally:
        cluster.start()


def test_health_check__healthy_connection__usable_and_queries_still_answer(wrapper):
    assert wrapper.is_usable()
    # Inside a transaction (the check may run after BEGIN was decided) and outside one
    wrapper.set_autocommit(False)
    try:
        assert wrapper.is_usable()
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT 2")
            assert cursor.fetchone() == (2,)
        wrapper.commit()
    finally:
        wrapper.set_autocommit(True)
    assert wrapper.is_usable()
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT 3")
        assert cursor.fetchone() == (3,)
