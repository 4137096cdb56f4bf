"""Start a throwaway PostgreSQL cluster, run a command against it, remove the cluster.

Usage: python tests/pgcluster.py -- <command ...>

- If DATABASE_URL already points at PostgreSQL, the command runs against it unchanged.
- Otherwise a temporary cluster is created from the server binaries on this machine
  (`pg_config --bindir`, or /usr/lib/postgresql/*/bin), served on 127.0.0.1 on a free port;
  when running as root the server runs as the `postgres` user (PostgreSQL refuses root).
- If no server binaries exist the pass is skipped with a loud message (exit 0), unless
  REQUIRE_POSTGRES=1, where that is a failure (exit 3).
Also importable: `with postgres_cluster() as url: ...` (used by bench/).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

BANNER = "=" * 78


def find_bindir() -> Path | None:
    candidates: list[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for d in candidates:
        if (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists():
            return Path(d)
    which_initdb = shutil.which("initdb")
    return Path(which_initdb).parent if which_initdb else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


class PostgresCluster:
    """A throwaway cluster under a temporary directory that a test can stop, start and freeze.

    `postgres_cluster()` below is the usual way in; fault tests (tests/hardening/) also use
    `stop()`, `start()` and `server_pids()` (the postmaster and its children, all started here).
    """

    def __init__(self, *, fast: bool = True) -> None:
        bindir = find_bindir()
        if bindir is None:
            raise FileNotFoundError("no PostgreSQL server binaries (initdb, pg_ctl) found")
        self.bindir = bindir
        self.fast = fast
        self.root = Path(tempfile.mkdtemp(prefix="signaldash-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/signaldash"

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, user="postgres", group="postgres")
        os.chmod(self.root, 0o700)
        initdb = [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]
        subprocess.run(_as_server_user([*initdb, "--no-sync"]), check=True, stdout=subprocess.DEVNULL)

    def start(self) -> None:
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c max_connections=200"
        if self.fast:  # a throwaway cluster: durability is irrelevant, speed is not
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        log = str(self.root / "server.log")
        start = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", log, "-o", opts, "-w", "-t", "60", "start"]
        subprocess.run(_as_server_user(start), check=True, stdout=subprocess.DEVNULL)

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                _as_server_user([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
                check=False,
                stdout=subprocess.DEVNULL,
            )

    def server_pids(self) -> list[int]:
        """The postmaster's PID first, then its children's (from /proc; Linux)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # the process ended meanwhile
                continue
            if int(fields[1]) == postmaster:
                children.append(int(stat.parent.name))
        return [postmaster, *sorted(children)]

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def postgres_cluster(*, fast: bool = True) -> Iterator[str]:
    """Yield a DATABASE_URL of a fresh cluster; stop and delete it afterwards."""
    cluster = PostgresCluster(fast=fast)
    try:
        cluster.init()
        cluster.start()
        print(
            f"PostgreSQL {cluster.bindir.parent.name} started on 127.0.0.1:{cluster.port} (cluster {cluster.root})",
            flush=True,
        )
        yield cluster.url
    finally:
        cluster.remove()


def main(argv: list[str]) -> int:
    if "--" in argv:
        argv = argv[argv.index("--") + 1 :]
    if not argv:
        print(__doc__)
        return 2
    require = os.environ.get("REQUIRE_POSTGRES") == "1"
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://")):
        print(f"{BANNER}\nPostgreSQL pass: using DATABASE_URL from the environment\n{BANNER}", flush=True)
        return subprocess.call(argv)
    if find_bindir() is None:
        msg = "PostgreSQL pass SKIPPED: no PostgreSQL server binaries found and DATABASE_URL is not set"
        if require:
            print(f"{BANNER}\nFAIL: REQUIRE_POSTGRES=1 but {msg[len('PostgreSQL pass SKIPPED: ') :]}\n{BANNER}")
            return 3
        print(f"{BANNER}\n!!! {msg}\n!!! install postgresql (Debian: apt-get install postgresql) to run it\n{BANNER}")
        return 0
    with postgres_cluster() as cluster_url:
        print(
            f"{BANNER}\nPostgreSQL pass: running the suite against a real PostgreSQL server\n{BANNER}",
            flush=True,
        )
        env = {**os.environ, "DATABASE_URL": cluster_url}
        return subprocess.call(argv, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
