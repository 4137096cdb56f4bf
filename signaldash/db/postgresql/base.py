"""Django's PostgreSQL backend with a health check that cannot hang.

Connections are reused between requests (`CONN_MAX_AGE`, settings.py) and checked once per request
(`CONN_HEALTH_CHECKS`). Django's check runs `SELECT 1` on the reused connection and waits for the
answer without a limit; a server process that is stopped (SIGSTOP, a frozen VM) still has its kernel
acknowledge the bytes, so neither TCP keepalives nor `tcp_user_timeout` end that wait and the request
would hang for the whole freeze. Here the same `SELECT 1` goes through libpq's non-blocking calls
and gives up after `SIGNALDASH_DB_HEALTH_CHECK_TIMEOUT_S` (1 s): the connection is then closed, the
next connect meets `connect_timeout`, and the request gets the usual 503 (signaldash/middleware.py).
"""

from __future__ import annotations

import select
import time

import psycopg
from django.conf import settings
from django.db.backends.postgresql import base
from psycopg import pq

DEFAULT_HEALTH_CHECK_TIMEOUT_S = 1.0


def _wait(fileno: int, *, write: bool, deadline: float) -> bool:
    """Whether the socket became readable (or writable) before `deadline`."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    readers, writers = ([], [fileno]) if write else ([fileno], [])
    ready = select.select(readers, writers, [], remaining)
    return bool(ready[0] or ready[1])


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


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        if self.connection is None or self.connection.closed:
            return False
        timeout = getattr(settings, "SIGNALDASH_DB_HEALTH_CHECK_TIMEOUT_S", DEFAULT_HEALTH_CHECK_TIMEOUT_S)
        return answers_within(self.connection.pgconn, timeout)
