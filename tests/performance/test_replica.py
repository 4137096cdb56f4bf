"""Readouts from a streaming replica (issue 10): writes go to the primary, rollup reads to the replica, and the
app keeps answering readouts when the replica is down.

Real servers on loopback, started and stopped here: a primary PostgreSQL cluster (`wal_level=replica`, a
`replicator` role with an hba entry for 127.0.0.1), a hot standby made with `pg_basebackup -R` and run with
`log_statement=all` (its log shows which statements reached it), and gunicorn with `DATABASE_URL` (primary) and
`DATABASE_REPLICA_URL` (replica). PostgreSQL pass only; skipped when the server binaries are missing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hardening.conftest import ROOT, gunicorn, http_request, wait_for
from tests.pgcluster import PostgresCluster, _as_server_user, _free_port, find_bindir

pytestmark = pytest.mark.postgres_only

USERS = 40  # per variant: every user exposed; a third of them convert

SETUP = """
import json
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone
from experiments.models import Experiment, Variant
from tracking.models import ServiceAPIKey
owner = get_user_model().objects.create_user(username="owner", password=None)
e = Experiment.objects.create(name="Replica", slug="replica", owner=owner, primary_metric="purchase")
Variant.objects.create(experiment=e, key="control", name="Control", is_control=True)
Variant.objects.create(experiment=e, key="treatment", name="Treatment")
Experiment.objects.filter(pk=e.pk).update(started_at=timezone.now() - timezone.timedelta(hours=1))
with connection.cursor() as c:
    c.execute("UPDATE experiments_experiment SET status = 'running' WHERE id = %s", [e.pk])
print(json.dumps({"key": ServiceAPIKey.objects.create_key(name="replica-test", scopes="track,read")[1]}))
"""


# Every statement is logged with its database name, so a test can tell which server ran what.
LOG_STATEMENTS = "-c log_statement=all -c log_line_prefix=%m:%d:"
ROLLUP_TABLE = '"readouts_rollup"'  # quoted: not the watermark table


def statements(log: Path, since: int = 0) -> list[str]:
    """The statements a server ran on the app's database, from byte `since` of its log (whitespace folded)."""
    text = log.read_bytes()[since:].decode(errors="replace")
    entries = re.findall(r"^\S+ \S+ \S+:signaldash:LOG:  statement: (.*?)(?=^\d{4}-|\Z)", text, re.M | re.S)
    return [" ".join(entry.split()) for entry in entries]


def log_size(log: Path) -> int:
    return log.stat().st_size


class Primary(PostgresCluster):
    """A throwaway primary that streams WAL to a standby (fsync off: durability is not what is tested)."""

    def start(self) -> None:
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c max_connections=60 -c fsync=off "
                f"-c synchronous_commit=off -c wal_level=replica -c max_wal_senders=4 {LOG_STATEMENTS}")  # fmt: skip
        self._pg_ctl("-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(_as_server_user([str(self.bindir / "pg_ctl"), "-D", str(self.data), *args]), check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip

    def sql(self, statement: str, *, database: str = "postgres", port: int | None = None) -> str:
        psql = [str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(port or self.port), "-U", "postgres",
                "-d", database, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", statement]  # fmt: skip
        return subprocess.run(psql, check=True, capture_output=True, text=True, timeout=30).stdout.strip()


class Standby:
    """A hot standby of `primary` in the same temporary root, on its own port, logging every statement."""

    def __init__(self, primary: Primary) -> None:
        self.primary = primary
        self.data = primary.root / "replica"
        self.log = primary.root / "replica.log"
        self.port = _free_port()

    def create(self) -> None:
        basebackup = [str(self.primary.bindir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.primary.port),
                      "-U", "replicator", "-D", str(self.data), "-R", "-X", "stream", "-c", "fast"]  # fmt: skip
        subprocess.run(_as_server_user(basebackup), check=True, stdout=subprocess.DEVNULL, timeout=60)

    def start(self) -> None:
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.primary.root} -c hot_standby=on "
                f"{LOG_STATEMENTS} -c fsync=off")  # fmt: skip
        start = [str(self.primary.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w",
                 "-t", "60", "start"]  # fmt: skip
        subprocess.run(_as_server_user(start), check=True, stdout=subprocess.DEVNULL)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            stop = [str(self.primary.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]
            subprocess.run(_as_server_user(stop), check=False, stdout=subprocess.DEVNULL)


@pytest.fixture
def primary_and_standby():
    if find_bindir() is None:
        pytest.skip("!!! no PostgreSQL server binaries: replica test SKIPPED")
    primary = Primary()
    standby = Standby(primary)
    try:
        primary.init()
        with (primary.data / "pg_hba.conf").open("a") as hba:
            hba.write("\nhost replication replicator 127.0.0.1/32 trust\n")
        primary.start()
        primary.sql("CREATE ROLE replicator WITH REPLICATION LOGIN")
        primary.sql("CREATE DATABASE signaldash")
        yield primary, standby
    finally:
        standby.stop()
        primary.remove()


def _manage(env: dict, *args: str) -> str:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True,
                          text=True, timeout=180).stdout  # fmt: skip


def _events() -> list[dict]:
    events = []
    for n in range(2 * USERS):
        variant, user = ("control", "treatment")[n % 2], f"user-{n}"
        events.append({"experiment": "replica", "variant": variant, "user_key": user, "event_type": "exposure"})
        if n % 3 == 0:
            events.append({"experiment": "replica", "variant": variant, "user_key": user, "event_type": "conversion"})
    return events


def _replayed(primary: Primary, standby: Standby) -> bool:
    """The standby has replayed everything the primary has written so far."""
    target = primary.sql("SELECT pg_current_wal_lsn()")
    return primary.sql(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn", port=standby.port) == "t"


def _counts(readout: dict) -> dict[str, tuple[int, int]]:
    return {v["key"]: (v["exposures"], v["conversions"]) for v in readout["variants"]}


def test_replica__events_to_primary_readout_rollups_from_replica_and_replica_down_still_200(primary_and_standby):
    primary, standby = primary_and_standby
    # Given a migrated primary with a running experiment and a key that may track and read
    env = {**os.environ, "DATABASE_URL": primary.url, "DJANGO_SETTINGS_MODULE": "signaldash.settings",
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    env.pop("DATABASE_REPLICA_URL", None)
    _manage(env, "migrate", "--noinput", "-v", "0")
    key = json.loads(_manage(env, "shell", "-c", SETUP).strip().splitlines()[-1])["key"]
    # And a streaming replica of it, and the app with both URLs
    standby.create()
    standby.start()
    replica_url = f"postgres://postgres@127.0.0.1:{standby.port}/signaldash"
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    expected = {"control": (USERS, len(range(0, 2 * USERS, 6))), "treatment": (USERS, len(range(3, 2 * USERS, 6)))}
    app_env = {"DATABASE_REPLICA_URL": replica_url, "GUNICORN_WORKERS": "1", "SIGNALDASH_DB_CONNECT_TIMEOUT_S": "2"}
    with gunicorn(database_url=primary.url, extra_env=app_env) as port:
        # When events are tracked
        before_writes = log_size(standby.log)
        body = json.dumps({"events": _events()}).encode()
        tracked = http_request(port, "POST", "/api/track/batch", body=body, headers=headers, timeout=60)
        # Then they are stored on the primary (the standby is read-only and saw no write)
        assert tracked.status == 200 and tracked.json()["accepted"] == len(_events())
        assert primary.sql("SELECT COUNT(*) FROM tracking_event", database="signaldash") == str(len(_events()))
        assert not [s for s in statements(standby.log, before_writes) if re.match(r"(?i)\s*(insert|update|delete)", s)]

        # When the first readout has caught the rollups up on the primary and the standby has replayed that
        def readout() -> dict:
            reply = http_request(port, "GET", "/api/experiments/replica/readout", headers=headers, timeout=30)
            assert reply.status == 200, reply.body[:500]
            return reply.json()

        assert _counts(readout()) == expected
        wait_for(lambda: _replayed(primary, standby), timeout=30, interval=0.1, what="the standby to replay")
        before_read, before_read_primary = log_size(standby.log), log_size(primary.log)
        served = readout()
        # Then the next readout's rollup rows come from the standby (and not from the primary), right numbers
        rollup_reads = [s for s in statements(standby.log, before_read) if ROLLUP_TABLE in s]
        assert rollup_reads, standby.log.read_text()[-2000:]
        assert not [s for s in statements(primary.log, before_read_primary) if ROLLUP_TABLE in s]
        print(f"\nreplica served {len(rollup_reads)} rollup statement(s): {rollup_reads[0][:160]}…")
        assert _counts(served) == expected

        # When the standby is stopped
        standby.stop()
        assert not (standby.data / "postmaster.pid").exists()
        before_down = log_size(primary.log)
        # Then readouts still answer 200 with the same numbers, read from the primary
        assert _counts(readout()) == expected
        assert _counts(readout()) == expected
        assert [s for s in statements(primary.log, before_down) if ROLLUP_TABLE in s]
