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


@contextlib.contextmanager
def postgres_cluster(*, fast: bool = True) -> Iterator[str]:
    """Yield a DATABASE_URL of a fresh cluster; stop and delete it afterwards."""
    bindir = find_bindir()
    if bindir is None:
        raise FileNotFoundError("no PostgreSQL server binaries (initdb, pg_ctl) found")
    root = Path(tempfile.mkdtemp(prefix="signaldash-pg-"))
    data = root / "data"
    port = _free_port()
    try:
        if os.geteuid() == 0:
            shutil.chown(root, user="postgres", group="postgres")
        os.chmod(root, 0o700)
        subprocess.run(
            _as_server_user(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c max_connections=200"
        if fast:  # a throwaway cluster: durability is irrelevant, speed is not
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        subprocess.run(
            _as_server_user(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(root / "server.log"),
                    "-o",
                    opts,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        print(f"PostgreSQL {bindir.parent.name} started on 127.0.0.1:{port} (cluster {root})", flush=True)
        yield f"postgres://postgres@127.0.0.1:{port}/signaldash"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                _as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                check=False,
                stdout=subprocess.DEVNULL,
            )
        shutil.rmtree(root, ignore_errors=True)


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
