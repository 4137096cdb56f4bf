"""A real Spark Connect server in front of a two-executor cluster, on 127.0.0.1, for the tests.

The server side (the full ``pyspark`` distribution: Spark's jars and launch scripts) never enters the
app's dependencies: it lives in a test-only virtualenv, ``.venv-spark`` at the repository root, built
on first use with the same version as the app's thin client (``pyspark-client``). Java 17 comes from
the system. ``spark-submit --class …SparkConnectServer --master local-cluster[2,1,1024]`` starts a
driver and two executor JVMs; everything binds loopback (``SPARK_LOCAL_IP``, the gRPC binding address).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPARK_VENV = ROOT / ".venv-spark"
START_TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spark_home() -> Path:
    """The test-only environment's pyspark (installed on first use), as SPARK_HOME."""
    wanted = version("pyspark-client")
    python = SPARK_VENV / "bin" / "python"
    probe = [str(python), "-c", "import pyspark, os; print(pyspark.__version__, os.path.dirname(pyspark.__file__))"]
    if python.exists():
        out = subprocess.run(probe, capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.split()[0] == wanted:
            return Path(out.stdout.split()[1])
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(SPARK_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"pyspark=={wanted}"], check=True)
    out = subprocess.run(probe, capture_output=True, text=True, check=True)
    return Path(out.stdout.split()[1])


def java_available() -> bool:
    return shutil.which("java") is not None


def _wait(proc: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Spark Connect server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise RuntimeError(f"Spark Connect server did not listen within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def wait_executors(ui_port: int, count: int, timeout_s: float = 120) -> list[dict]:
    """Poll (bounded) until ``count`` executors registered; returns them."""
    deadline, found = time.monotonic() + timeout_s, []
    while time.monotonic() < deadline:
        try:
            found = executors(ui_port)
        except OSError:
            found = []
        if len(found) >= count:
            return found
        time.sleep(1)
    return found


def executors(ui_port: int) -> list[dict]:
    """The application's executors (driver excluded), from Spark's monitoring REST API on loopback."""
    base = f"http://127.0.0.1:{ui_port}/api/v1/applications"
    with urllib.request.urlopen(base, timeout=30) as r:  # noqa: S310 - loopback only
        app = json.load(r)[0]["id"]
    with urllib.request.urlopen(f"{base}/{app}/executors", timeout=30) as r:  # noqa: S310
        return [e for e in json.load(r) if e["id"] != "driver"]


@contextmanager
def spark_connect_server(
    workdir: Path, *, worker_memory_mb: int = 1024, executor_memory: str = "512m", shuffle_partitions: int = 2
):
    """Yield (sc:// URL, UI port) of a running server; stop it (by its process group) afterwards.

    Two executors of one core each; the defaults fit the tests' small datasets (bench/warehouse.py sizes them
    for millions of events)."""
    home = spark_home()
    port, ui_port = _free_port(), _free_port()
    log = workdir / "spark-connect.log"
    env = {
        **os.environ,
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": str(SPARK_VENV / "bin" / "python"),
        "SPARK_LOG_DIR": str(workdir),
    }
    cmd = [
        str(home / "bin" / "spark-submit"),
        "--class",
        "org.apache.spark.sql.connect.service.SparkConnectServer",
        "--master",
        f"local-cluster[2,1,{worker_memory_mb}]",
        "--conf",
        "spark.connect.grpc.binding.address=127.0.0.1",
        "--conf",
        f"spark.connect.grpc.binding.port={port}",
        "--conf",
        "spark.driver.host=127.0.0.1",
        "--conf",
        "spark.driver.bindAddress=127.0.0.1",
        "--conf",
        f"spark.ui.port={ui_port}",
        "--conf",
        "spark.sql.session.timeZone=UTC",
        "--conf",
        f"spark.executor.memory={executor_memory}",
        "--conf",
        f"spark.sql.shuffle.partitions={shuffle_partitions}",
        "--conf",
        f"spark.local.dir={workdir}",
        "spark-internal",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir, start_new_session=True)
    try:
        _wait(proc, port, log)
        yield f"sc://127.0.0.1:{port}", ui_port
    finally:
        try:
            os.killpg(proc.pid, 15)  # our own process group: the driver and its executor JVMs
            proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, 9)
