"""Django's PostgreSQL backend with a health check that cannot hang, skipped for a connection that just answered.

Connections are reused between requests (`CONN_MAX_AGE`, settings.py) and checked once per request
(`CONN_HEALTH_CHECKS`). Django's check runs `SELECT 1` on the reused connection and waits for the answer without
a limit; a server process that is stopped (SIGSTOP, a frozen VM) still has its kernel acknowledge the bytes, so
neither TCP keepalives nor `tcp_user_timeout` end that wait and the request would hang for the whole freeze.
Here the same `SELECT 1` goes through libpq's non-blocking calls and gives up after
`SIGNALDASH_DB_HEALTH_CHECK_TIMEOUT_S` (1 s): the connection is then closed, the next connect meets
`connect_timeout`, and the request gets the usual 503 (signaldash/middleware.py).

The check is a round trip before the first statement of every request — for a single tracked event, a second
round trip next to the one that does the work. In an HTTP request (between `request_started` and
`request_finished`) it is skipped when the connection's server answered within `SIGNALDASH_DB_HEALTH_CHECK_SKIP_S`
(1 s) and nothing cheap says otherwise: the connection is open, idle (no transaction) and its socket has nothing
to read (a server that shut down has sent an error and EOF; anything unexpected takes the full check). What the
check guarded against is then bounded instead: the request's first wait on the server — the first statement,
with its `BEGIN` inside a transaction — must be answered within `SIGNALDASH_DB_UNCHECKED_STATEMENT_TIMEOUT_S`
(5 s), or the connection is closed and `psycopg.OperationalError` raised (a 503). Statements after the first,
and every statement outside HTTP requests (management commands, the task worker: their first statement may
legitimately be long), are bounded by the server's `statement_timeout` only, as before.

A statement cut by that bound was sent: a server that is slow rather than frozen may still commit it, and a
frozen one commits it when it resumes. The request was answered 503; its retry is then a duplicate, which the
tracking API answers as such (docs/deployment.md, "When the database fails").
"""

from __future__ import annotations

import math
import select
import sys
import time
from collections.abc import Generator
from typing import Any

import psycopg
from django.conf import settings
from django.core.signals import request_finished, request_started
from django.db import connections
from django.db.backends.postgresql import base
from psycopg import pq

DEFAULT_HEALTH_CHECK_TIMEOUT_S = 1.0
DEFAULT_HEALTH_CHECK_SKIP_S = 1.0
DEFAULT_UNCHECKED_STATEMENT_TIMEOUT_S = 5.0
WAIT_INTERVAL_S = 0.1  # psycopg.connection._WAIT_INTERVAL: how often a wait wakes up (Ctrl-C, a closed socket)


def _ready(fileno: int, *, write: bool, timeout: float) -> bool:
    """Whether the socket is readable (or writable) within `timeout` s (0: now). poll(), not select(): a worker
    with many open connections has descriptors above select()'s FD_SETSIZE (1024), where select() raises."""
    poller = select.poll()
    poller.register(fileno, select.POLLOUT if write else select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def _wait(fileno: int, *, write: bool, deadline: float) -> bool:
    """Whether the socket became readable (or writable) before `deadline`."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    return _ready(fileno, write=write, timeout=remaining)


def answers_within(pgconn: pq.abc.PGconn, timeout: float) -> bool:
    """Send `SELECT 1` on `pgconn` and whether its result arrives (successfully) within `timeout` s."""
    deadline = time.monotonic() + timeout
    try:
        fileno = pgconn.socket
        pgconn.send_query(b"SELECT 1")
        while pgconn.flush():  # 1: part of the query is still in libpq's buffer
            if not _wait(fileno, write=True, deadline=deadline):
                return False
        pgconn.consume_input()
        while pgconn.is_busy():
            if not _wait(fileno, write=False, deadline=deadline):
                return False
            pgconn.consume_input()
        ok = True
        while (result := pgconn.get_result()) is not None:
            ok = ok and result.status == pq.ExecStatus.TUPLES_OK
        return ok
    except (psycopg.Error, OSError, ValueError):  # a broken or closed connection: not usable
        return False


def quiet_and_idle(connection: psycopg.Connection) -> bool:
    """Open, outside a transaction, and nothing to read on its socket (no EOF, no message) — without a round trip."""
    try:
        pgconn = connection.pgconn
        if connection.closed or pgconn.transaction_status != pq.TransactionStatus.IDLE:
            return False
        return not _ready(pgconn.socket, write=False, timeout=0)  # EOF, an error or a notice: not quiet
    except (psycopg.Error, OSError, ValueError):
        return False


def _resumed(first: Any, gen: Generator) -> Generator:
    """`gen`, already advanced once by `next()` (which returned `first`), as a generator to wait on."""
    ready = yield first
    while True:
        try:
            state = gen.send(ready)
        except StopIteration as stop:
            return stop.value
        ready = yield state


# A `prepare_threshold` no statement reaches: psycopg prepares only what is executed with `prepare=True`.
EXPLICIT_PREPARE_ONLY = sys.maxsize


class Connection(psycopg.Connection):
    """psycopg's connection, noting when its server last answered and able to bound its next wait.

    Every statement, commit and rollback of psycopg goes through `wait()`. `answered_at` is the monotonic time
    of the last wait that completed; `next_wait_timeout`, when set, bounds the next wait that has to wait for
    the server (one that completes at once, like switching autocommit outside a transaction, leaves it set).

    Prepared statements: Django connects with `prepare_threshold=None` unless `OPTIONS` sets one, and psycopg
    then prepares nothing, not even a statement executed with `prepare=True`. Here None means "only when asked":
    the ORM's statements are still never prepared, and the few hot statements that ask (`PreparingCursor`) are
    parsed and planned once per connection.
    """

    answered_at: float = -math.inf
    next_wait_timeout: float | None = None

    @classmethod
    def connect(cls, conninfo: str = "", **kwargs: Any) -> Connection:
        conn = super().connect(conninfo, **kwargs)
        if conn.prepare_threshold is None:
            conn.prepare_threshold = EXPLICIT_PREPARE_ONLY
        return conn

    def wait(self, gen, interval: float = WAIT_INTERVAL_S, timeout: float | None = None):
        if self.next_wait_timeout is None:
            rv = super().wait(gen, interval, timeout)
        else:
            rv = self._wait_bounded(gen, interval, timeout)
        self.answered_at = time.monotonic()
        return rv

    def _wait_bounded(self, gen, interval: float, timeout: float | None):
        try:
            first = next(gen)
        except StopIteration as stop:  # done without waiting: the bound stays for the next wait
            return stop.value
        bound = self.next_wait_timeout
        self.next_wait_timeout = None
        own = timeout is not None and timeout <= bound  # the caller's own (shorter) timeout keeps its meaning
        try:
            return super().wait(_resumed(first, gen), interval, timeout if own else bound)
        except psycopg.errors._WaitTimeout:  # psycopg 3.3's wait timeout (Connection.wait documents it)
            if own:
                raise
            self.close()  # mid-statement: the protocol state is unknown, the connection unusable
            raise psycopg.OperationalError(
                f"no answer from the database within {bound:g} s on a connection not health-checked "
                "(SIGNALDASH_DB_UNCHECKED_STATEMENT_TIMEOUT_S); connection closed"
            ) from None


class PreparingCursor(psycopg.Cursor):
    """A cursor whose statements are prepared on their first run on a connection (`execute(prepare=True)`)."""

    def execute(self, query: Any, params: Any = None, *, prepare: bool | None = True, binary: bool | None = None):
        return super().execute(query, params, prepare=prepare, binary=binary)

    def _send_query_prepared(self, name: bytes, pgq: Any, *, binary: bool | None = None) -> None:
        # psycopg 3.3 keeps the statement (what Django's query log reads, `last_executed_query`) only when it is
        # sent unprepared; keep it for prepared runs too, so captured and logged queries show their SQL.
        self._query = pgq
        super()._send_query_prepared(name, pgq, binary=binary)


class _Psycopg:
    """The psycopg module as Django's backend uses it (`DatabaseWrapper.Database`), connecting with `Connection`."""

    connect = staticmethod(Connection.connect)

    def __getattr__(self, name: str) -> Any:
        return getattr(psycopg, name)


class DatabaseWrapper(base.DatabaseWrapper):
    Database = _Psycopg()
    in_request = False  # between request_started and request_finished (the receivers below)

    def is_usable(self) -> bool:
        if self.connection is None or self.connection.closed:
            return False
        timeout = getattr(settings, "SIGNALDASH_DB_HEALTH_CHECK_TIMEOUT_S", DEFAULT_HEALTH_CHECK_TIMEOUT_S)
        return answers_within(self.connection.pgconn, timeout)

    def close_if_health_check_failed(self) -> None:
        if self.connection is not None and self.health_check_enabled and not self.health_check_done:
            bound = getattr(
                settings, "SIGNALDASH_DB_UNCHECKED_STATEMENT_TIMEOUT_S", DEFAULT_UNCHECKED_STATEMENT_TIMEOUT_S
            )
            if bound > 0 and self.in_request and self._answered_recently() and quiet_and_idle(self.connection):
                self.connection.next_wait_timeout = bound
                self.health_check_done = True
                return
        super().close_if_health_check_failed()

    def _answered_recently(self) -> bool:
        skip_s = getattr(settings, "SIGNALDASH_DB_HEALTH_CHECK_SKIP_S", DEFAULT_HEALTH_CHECK_SKIP_S)
        answered_at = getattr(self.connection, "answered_at", -math.inf)  # a pool's connections are plain ones
        return time.monotonic() - answered_at < skip_s


def _mark_requests(in_request: bool) -> None:
    for conn in connections.all(initialized_only=True):
        if isinstance(conn, DatabaseWrapper):
            conn.in_request = in_request
            if not in_request and conn.connection is not None:
                conn.connection.next_wait_timeout = None  # a bound armed but never used ends with its request


def _request_started(**kwargs: Any) -> None:
    _mark_requests(True)


def _request_finished(**kwargs: Any) -> None:
    _mark_requests(False)


request_started.connect(_request_started, dispatch_uid="signaldash.db.postgresql.request_started")
request_finished.connect(_request_finished, dispatch_uid="signaldash.db.postgresql.request_finished")
