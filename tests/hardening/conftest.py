"""Helpers for tests that run the real server: gunicorn with the repository's gunicorn.conf.py on a free
loopback port, and a tiny HTTP client with a timeout. Every wait polls against a deadline."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    def json(self):
        return json.loads(self.body)


def http_request(
    port: int, method: str, path: str, *, body: bytes | None = None, headers: dict | None = None, timeout: float = 10
) -> Reply:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return Reply(
            response.status, {k.lower(): v for k, v in response.getheaders()}, data, time.monotonic() - started
        )
    finally:
        conn.close()


def wait_for(condition: Callable[[], object], *, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def _healthz_answers(port: int, proc: subprocess.Popen) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"gunicorn exited with {proc.returncode}")
    try:
        return http_request(port, "GET", "/healthz", timeout=2).status in (200, 503)
    except OSError:
        return False


@contextlib.contextmanager
def gunicorn(
    *, database_url: str, extra_env: dict[str, str] | None = None, args: tuple[str, ...] = ()
) -> Iterator[int]:
    """Run `gunicorn -c gunicorn.conf.py` on a free loopback port; yield the port; stop it by PID."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "signaldash.settings",
        "SIGNALDASH_THROTTLE_RATE": "100000/min",
        "PYTHONPATH": str(ROOT),
        **(extra_env or {}),
    }
    log = tempfile.NamedTemporaryFile(prefix="signaldash-gunicorn-", suffix=".log", delete=False)  # noqa: SIM115
    command = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{port}"]
    proc = subprocess.Popen([*command, *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _healthz_answers(port, proc), timeout=60, interval=0.1, what="gunicorn to answer /healthz")
        yield port
    except BaseException:
        print(Path(log.name).read_text()[-4000:], file=sys.stderr)  # the server's side of the failure
        raise
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()
        os.unlink(log.name)
