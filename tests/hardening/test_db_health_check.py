"""The reused-connection health check (signaldash/db/postgresql/base.py) against a real PostgreSQL started here.

A connection whose server process is stopped (SIGSTOP: the kernel still acknowledges its bytes) must be
reported unusable after about SIGNALDASH_DB_HEALTH_CHECK_TIMEOUT_S, not after the freeze ends; a healthy one
stays usable and keeps answering, in and out of transactions.

In an HTTP request the check is skipped for a connection whose server answered moments ago; that request's
first statement is then bounded by SIGNALDASH_DB_UNCHECKED_STATEMENT_TIMEOUT_S instead, so a freeze still ends
in an OperationalError (a 503) within the bound. Requests are driven here by Django's own signals
(`request_started` / `request_finished`, which the WSGI handler sends) with the test's connection registered
in `django.db.connections`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import pytest
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import OperationalError, connections, transaction
from django.db.utils import load_backend

from signaldash.db.postgresql import base as pg_base
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
    conn = load_backend(settings.POSTGRESQL_ENGINE).DatabaseWrapper(settings_dict, alias=ALIAS)
    with django_db_blocker.unblock():  # a connection of its own, outside the test database
        conn.ensure_connection()
        yield conn
        conn.close()


ALIAS = "health-check-test"


@pytest.fixture
def in_requests(wrapper):
    """`wrapper` registered as a database and a connection of this thread, so the request signals reach it."""
    connections.settings[ALIAS] = wrapper.settings_dict  # what connections.all() iterates
    connections[ALIAS] = wrapper
    try:
        yield wrapper
    finally:
        request_finished.send(sender=WSGIHandler)
        del connections[ALIAS]
        del connections.settings[ALIAS]


@pytest.fixture
def checks(monkeypatch):
    """The health checks' round trips (`answers_within` calls) made from here on."""
    calls = []
    real = pg_base.answers_within

    def counted(pgconn, timeout):
        calls.append(timeout)
        return real(pgconn, timeout)

    monkeypatch.setattr(pg_base, "answers_within", counted)
    return calls


def _request(conn, sql: str):
    """One request as Django's handler runs it: the signals around the first query (with its health check)."""
    request_started.send(sender=WSGIHandler)
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchone()
    finally:
        request_finished.send(sender=WSGIHandler)


@contextlib.contextmanager
def _frozen(pid: int):
    """The server process `pid` stopped (SIGSTOP); resumed on exit, or after 20 s if the test hangs."""
    os.kill(pid, signal.SIGSTOP)
    thaw = threading.Timer(20, os.kill, (pid, signal.SIGCONT))  # a wait for the thaw fails the test, not hangs
    thaw.start()
    try:
        yield
    finally:
        thaw.cancel()
        os.kill(pid, signal.SIGCONT)


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


def test_request__server_answered_moments_ago__check_skipped_and_statement_answers(in_requests, checks):
    # Given a connection whose server has just answered
    _backend_pid(in_requests)
    # When requests use it one after another (each starts with Django's reset of the per-request check)
    answers = [_request(in_requests, f"SELECT {n}") for n in range(3)]
    assert in_requests.health_check_done is False  # request_finished reset it: the signals reached it
    # Then no health check round trip was made, and every statement answered on the same connection
    assert answers == [(0,), (1,), (2,)]
    assert checks == []
    assert in_requests.connection.next_wait_timeout is None  # the bound ended with the first statement
    assert in_requests.in_request is False


@pytest.mark.parametrize("switch", ["answered_before_the_window", "skip_window_0", "bound_0"])
def test_request__connection_quiet_longer_than_the_skip_window_or_skip_off__checked(
    in_requests, checks, settings, switch
):
    # Given a connection whose server answered longer ago than the skip window, or the skip turned off
    settings.SIGNALDASH_DB_HEALTH_CHECK_SKIP_S = 0.0 if switch == "skip_window_0" else 0.5
    if switch == "bound_0":
        settings.SIGNALDASH_DB_UNCHECKED_STATEMENT_TIMEOUT_S = 0.0
    _backend_pid(in_requests)
    if switch == "answered_before_the_window":
        in_requests.connection.answered_at -= 60
    # When a request uses it
    answer = _request(in_requests, "SELECT 1")
    # Then the full check ran first, once
    assert answer == (1,)
    assert checks == [settings.SIGNALDASH_DB_HEALTH_CHECK_TIMEOUT_S]


def test_outside_requests__recently_used_connection__checked_and_first_statement_unbounded(wrapper, checks, settings):
    # Given a bound shorter than a legitimate statement, outside any HTTP request (a command, the task worker)
    settings.SIGNALDASH_DB_UNCHECKED_STATEMENT_TIMEOUT_S = 0.2
    _backend_pid(wrapper)
    wrapper.close_if_unusable_or_obsolete()  # what close_old_connections() does between the worker's tasks
    # When its next (long) statement runs
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(0.6), 7")
        answer = cursor.fetchone()
    # Then it was health-checked as before, and not cut
    assert answer[1] == 7
    assert checks == [settings.SIGNALDASH_DB_HEALTH_CHECK_TIMEOUT_S]


def test_request__statements_after_the_first__not_bounded(in_requests, checks, settings):
    settings.SIGNALDASH_DB_UNCHECKED_STATEMENT_TIMEOUT_S = 0.2
    _backend_pid(in_requests)
    request_started.send(sender=WSGIHandler)
    with in_requests.cursor() as cursor:
        cursor.execute("SELECT 1")  # the first statement, bounded
        cursor.execute("SELECT pg_sleep(0.6), 8")  # longer than the bound: the bound was for the first one only
        assert cursor.fetchone()[1] == 8
    assert checks == []


@pytest.mark.parametrize("in_transaction", [False, True], ids=["autocommit", "atomic"])
def test_request__server_frozen_just_after_answering__operational_error_within_the_bound_not_the_freeze(
    cluster, in_requests, checks, settings, in_transaction
):
    # Given a connection whose server answered moments ago, then froze
    settings.SIGNALDASH_DB_UNCHECKED_STATEMENT_TIMEOUT_S = 2.0
    pid = _backend_pid(in_requests)
    assert pid in cluster.server_pids()  # a process this test's cluster started
    frozen_connection = in_requests.connection
    with _frozen(pid):
        # When a request starts (the check is skipped: the server answered moments ago) and runs a statement
        request_started.send(sender=WSGIHandler)
        started = time.monotonic()
        with pytest.raises(OperationalError):
            if in_transaction:
                with transaction.atomic(using=ALIAS), in_requests.cursor() as cursor:
                    cursor.execute("SELECT 1")
            else:
                with in_requests.cursor() as cursor:
                    cursor.execute("SELECT 1")
        elapsed = time.monotonic() - started
        request_finished.send(sender=WSGIHandler)
        # Then it failed after the bound (2 s), not the freeze (20 s), without a health check round trip
        bound = settings.SIGNALDASH_DB_UNCHECKED_STATEMENT_TIMEOUT_S
        assert bound <= elapsed < bound + 10  # far below the freeze, far above scheduling noise
        assert checks == []
        assert frozen_connection.closed  # never reused (the server may yet answer on it)
    # And once the server resumes, the next request reconnects and answers
    assert _request(in_requests, "SELECT 5") == (5,)


def test_request__server_stopped_after_answering__not_skipped_and_reconnect_refused(cluster, in_requests, checks):
    # Given a connection whose server answered moments ago, then shut down (it sends an error and EOF)
    _backend_pid(in_requests)
    cluster.stop("fast")
    try:
        # When a request starts
        request_started.send(sender=WSGIHandler)
        # Then the socket's EOF sends it to the full check, which fails: the reconnect is refused at once
        with pytest.raises(OperationalError):
            in_requests.cursor()
        assert len(checks) == 1
    finally:
        request_finished.send(sender=WSGIHandler)
        cluster.start()


def test_socket_readiness__descriptor_above_select_limit__answered_not_raised():
    # Given a socket whose descriptor is above select()'s FD_SETSIZE (a gunicorn worker with many connections)
    import resource
    import socket

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft <= 1100:
        pytest.skip(f"needs more than 1,100 open files (RLIMIT_NOFILE {soft})")
    left, right = socket.socketpair()
    high = os.dup2(left.fileno(), 1100)
    try:
        # When the checks ask whether it is readable: Then they answer (select() would raise ValueError)
        assert pg_base._ready(high, write=False, timeout=0) is False
        right.send(b"x")
        assert pg_base._ready(high, write=False, timeout=5) is True
        assert pg_base._ready(high, write=True, timeout=0) is True
    finally:
        os.close(high)
        left.close()
        right.close()
