"""Fault tests: a real PostgreSQL (started here) is stopped, started, frozen and thawed under a real
gunicorn while clients keep sending events.

Expected: the API answers 503 JSON within a few seconds and /healthz says the database is unavailable;
it recovers without an app restart; every event acknowledged with a 2xx is stored. The figures
(acknowledged vs stored, time to the first 503, time to recover) are printed (`pytest -s`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager

import psycopg
import pytest

from tests.hardening.conftest import ROOT, gunicorn, http_request, wait_for
from tests.pgcluster import PostgresCluster, find_bindir

pytestmark = [
    pytest.mark.postgres_only,  # once per `make test`: in the PostgreSQL pass
    pytest.mark.skipif(find_bindir() is None, reason="needs PostgreSQL server binaries (initdb, pg_ctl)"),
]

# Stop: refused at once; freeze: the 1 s health check of the reused connection plus the 3 s connect timeout
# (4 s), or, on a connection whose server answered under SIGNALDASH_DB_HEALTH_CHECK_SKIP_S before (the senders
# keep them busy: the check is skipped), the 5 s bound of the request's first statement, then the connect
# timeout for the next request on that thread. A hang lasts the whole freeze, which here lasts until the 503 is
# seen: the bound only needs to be far from the normal 4–5 s on a busy machine.
FIRST_503_WITHIN_S = 15.0
RECOVERY_WITHIN_S = 30.0
SENDERS = 3


def _manage(url: str, *args: str) -> str:
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "signaldash.settings"}
    out = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.fixture(scope="module")
def stack():
    """A PostgreSQL cluster with the demo data and an API key, and gunicorn serving it."""
    cluster = PostgresCluster(fast=False)  # fsync on: "acknowledged means stored" is about durability
    try:
        cluster.init()
        cluster.start()
        with psycopg.connect(cluster.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE signaldash")
        _manage(cluster.url, "migrate", "--noinput", "-v0")
        _manage(cluster.url, "seed_demo")  # the running experiments tracking needs
        key = _manage(cluster.url, "create_api_key", "fault-test").strip().splitlines()[-1]
        scenarios = json.loads((ROOT / "fixtures" / "demo_scenarios.json").read_text())["experiments"]
        running = next(s for s in scenarios if s["status"] == "running")
        control = next(v["key"] for v in running["variants"] if v["is_control"])
        with gunicorn(database_url=cluster.url) as port:
            yield {"cluster": cluster, "port": port, "key": key, "experiment": running["slug"], "variant": control}
    finally:
        cluster.remove()


class Senders:
    """Client threads posting one exposure per request (unique user keys), recording every answer."""

    def __init__(self, stack: dict, prefix: str) -> None:
        self.stack, self.prefix = stack, prefix
        self.lock = threading.Lock()
        self.acknowledged: list[str] = []
        self.answers: list[tuple[float, int | str, float]] = []  # (finished at, status, seconds)
        self.unexpected: list[str] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(SENDERS)]

    def _run(self, index: int) -> None:
        n = 0
        while not self.stopping.is_set():
            status = self.send(f"{self.prefix}-{index}-{n:06d}")
            n += 1
            if status != 201:
                self.stopping.wait(0.05)  # pacing while the database is away, not a wait for a condition

    def send(self, user: str) -> int | str:
        """Post one exposure for `user` and record the answer; returns the status."""
        headers = {"Authorization": f"Bearer {self.stack['key']}", "Content-Type": "application/json"}
        event = {
            "experiment": self.stack["experiment"],
            "variant": self.stack["variant"],
            "user_key": user,
            "event_type": "exposure",
        }
        started = time.monotonic()
        try:
            reply = http_request(
                self.stack["port"], "POST", "/api/track", body=json.dumps(event).encode(), headers=headers, timeout=60
            )
            status: int | str = reply.status
        except OSError as exc:  # no answer at all: not acknowledged
            status, reply = type(exc).__name__, None
        with self.lock:
            self.answers.append((time.monotonic(), status, time.monotonic() - started))
            if isinstance(status, int) and 200 <= status < 300:
                self.acknowledged.append(user)
            elif status != 503 or reply.json().get("error") != "database_unavailable":
                self.unexpected.append(f"{status}: {reply.body[:200] if reply else ''}")
        return status

    def __enter__(self) -> Senders:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=90)
        assert not any(t.is_alive() for t in self.threads), "a sender is stuck"

    def acknowledged_since(self, since: float) -> int:
        with self.lock:
            return sum(1 for at, s, _ in self.answers if isinstance(s, int) and 200 <= s < 300 and at >= since)

    def slowest(self) -> float:
        with self.lock:
            return max(seconds for _, _, seconds in self.answers)


def _stored(stack: dict, prefix: str) -> set[str]:
    from tracking.models import Event

    table = Event._meta.db_table
    with psycopg.connect(stack["cluster"].url) as conn:
        rows = conn.execute(f'SELECT user_key FROM "{table}" WHERE user_key LIKE %s', [f"{prefix}-%"]).fetchall()
    return {user for (user,) in rows}


def _probe(stack: dict) -> tuple[int, dict | None, float]:
    """One /healthz request now: its status, JSON body and seconds."""
    health = http_request(stack["port"], "GET", "/healthz", timeout=30)
    return health.status, health.json(), health.seconds


def _assert_outage_seen(stack: dict, senders: Senders, since: float) -> dict[str, float]:
    # Probed from here, on fresh connections: the senders may all be waiting on a frozen server.
    probes = iter(range(1_000_000))
    first_503 = wait_for(
        lambda: senders.send(f"{senders.prefix}-probe-{next(probes):06d}") == 503 and time.monotonic(),
        timeout=FIRST_503_WITHIN_S,
        what="a 503 from the API",
    )
    status, body, seconds = _probe(stack)
    assert (status, body["database"]) == (503, "unavailable")
    assert seconds < FIRST_503_WITHIN_S
    return {"first_503_s": first_503 - since, "healthz_s": seconds}


def _assert_recovered(stack: dict, senders: Senders, since: float) -> float:
    recovered = wait_for(
        lambda: senders.acknowledged_since(since) > 0 and time.monotonic(),
        timeout=RECOVERY_WITHIN_S,
        what="the API to acknowledge events again",
    )
    status, body, _ = _probe(stack)
    assert (status, body["database"]) == (200, "ok")
    return recovered - since


def _report(name: str, senders: Senders, stored: set[str], figures: dict[str, float]) -> None:
    statuses = Counter(status for _, status, _ in senders.answers)
    lost = sorted(set(senders.acknowledged) - stored)
    timing = ", ".join(f"{k} {v:.2f}" for k, v in figures.items())
    print(
        f"\n[{name}] acknowledged {len(senders.acknowledged)}, stored {len(stored)}, lost {len(lost)}; "
        f"answers {dict(statuses)}; slowest request {senders.slowest():.2f} s; {timing}"
    )
    assert not lost, f"acknowledged but not stored: {lost[:10]}"
    assert not senders.unexpected, senders.unexpected[:10]


def test_database_stopped_and_started__503_json_then_recovery_and_no_acknowledged_event_lost(stack):
    cluster = stack["cluster"]
    with Senders(stack, "stop") as senders:
        wait_for(lambda: len(senders.acknowledged) >= 30, timeout=30, what="events acknowledged before the outage")
        # When the database is stopped
        stopped_at = time.monotonic()
        cluster.stop("fast")
        figures = _assert_outage_seen(stack, senders, stopped_at)
        # And started again, without restarting the app
        started_at = time.monotonic()
        cluster.start()
        figures["recovery_s"] = _assert_recovered(stack, senders, started_at)
        wait_for(lambda: senders.acknowledged_since(started_at) >= 30, timeout=30, what="events after recovery")
    _report("stop/start", senders, _stored(stack, "stop"), figures)


@contextmanager
def frozen(cluster: PostgresCluster):
    """SIGSTOP the postmaster and its children (all started by this test); always SIGCONT them again.

    The postmaster stops first, so it forks no new child meanwhile; a child that exits between
    listing and stopping (a finished backend) is simply skipped.
    """
    postmaster, *_ = cluster.server_pids()
    pids = [postmaster]
    try:
        os.kill(postmaster, signal.SIGSTOP)
        for pid in cluster.server_pids()[1:]:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                continue
            pids.append(pid)
        yield pids
    finally:
        for pid in reversed(pids):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def test_database_frozen_and_thawed__503_json_then_recovery_and_no_acknowledged_event_lost(stack):
    cluster = stack["cluster"]
    with Senders(stack, "freeze") as senders:
        wait_for(lambda: len(senders.acknowledged) >= 30, timeout=30, what="events acknowledged before the freeze")
        # When the database server freezes (connections open, nothing answers)
        with frozen(cluster):
            frozen_at = time.monotonic()
            figures = _assert_outage_seen(stack, senders, frozen_at)
            thawed_at = time.monotonic()
        # Then after it thaws the API recovers by itself
        figures["frozen_s"] = thawed_at - frozen_at
        figures["recovery_s"] = _assert_recovered(stack, senders, thawed_at)
        wait_for(lambda: senders.acknowledged_since(thawed_at) >= 30, timeout=30, what="events after the thaw")
    _report("freeze/thaw", senders, _stored(stack, "freeze"), figures)
