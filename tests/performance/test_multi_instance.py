"""Two app servers, one limit: gunicorn instances share an API key's throttle through a real Redis (issue 10).

A real `redis-server` on a free loopback port (no persistence), two `gunicorn -c gunicorn.conf.py` instances
(2 workers each) with the same `REDIS_URL` and the test database, one API key limited to 60 per hour; 100
requests alternate between the instances. Skipped loudly without `redis-server`, unless REQUIRE_REDIS=1
(set by .ci/run), where that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from tests.hardening.conftest import free_port, gunicorn, http_request, wait_for
from tests.tracking.conftest import make_experiment

LIMIT = 60
REQUESTS = 100


@pytest.fixture
def redis_url(tmp_path):
    """A throwaway redis-server on 127.0.0.1 (no RDB, no AOF); stopped by its PID afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("REQUIRE_REDIS") == "1":
            pytest.fail("REQUIRE_REDIS=1 but redis-server is not installed (apt-get install redis-server)")
        pytest.skip("!!! redis-server not installed: multi-instance Redis throttle test SKIPPED "
                    "(apt-get install redis-server)")  # fmt: skip
    import redis

    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(tmp_path)]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        wait_for(lambda: _ping(client, proc), timeout=10, what="redis-server to answer PING")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _ping(client, proc: subprocess.Popen) -> bool:
    import redis

    if proc.poll() is not None:
        raise AssertionError(f"redis-server exited with {proc.returncode}")
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def _database_url() -> str:
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    return f"postgres://{s['USER']}:{s['PASSWORD']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def _redis_counts(url: str) -> dict[str, int]:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return {key.decode(): int(client.get(key)) for key in client.scan_iter("*rate:api_key:*")}
    finally:
        client.close()


@pytest.mark.django_db(transaction=True)
def test_api_key_limit__2_gunicorn_instances_sharing_redis__exactly_60_of_100_pass(redis_url, make_user):
    from tracking.models import Event, ServiceAPIKey

    # Given a running experiment, one API key limited to 60/hour, and two app servers (2 workers each)
    # on one database, sharing one Redis
    make_experiment(make_user("owner"))
    api_key, key = ServiceAPIKey.objects.create_key(name="two-instances")
    env = {"REDIS_URL": redis_url, "SIGNALDASH_THROTTLE_RATE": f"{LIMIT}/hour", "GUNICORN_WORKERS": "2",
           "SIGNALDASH_API_KEY_CACHE_S": "0"}  # fmt: skip
    database_url = _database_url()
    with gunicorn(database_url=database_url, extra_env=env) as port_a, \
         gunicorn(database_url=database_url, extra_env=env) as port_b:  # fmt: skip
        # (not in the last 30 s of the hour, so all 100 requests fall in one window)
        wait_for(lambda: 30 < 3600 - time.time() % 3600, timeout=40, interval=0.5, what="a fresh hourly window")
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

        def send(n: int) -> tuple[int, int]:
            port = (port_a, port_b)[n % 2]  # alternate between the instances
            event = {"experiment": "checkout", "variant": "control", "user_key": f"u{n}", "event_type": "exposure"}
            reply = http_request(port, "POST", "/api/track", body=json.dumps(event).encode(), headers=headers,
                                 timeout=30)  # fmt: skip
            return port, reply.status

        # When 4 clients send 100 requests, request n to instance n % 2
        with ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(send, range(REQUESTS)))
    statuses = Counter(status for _, status in replies)
    per_instance = {port: Counter(s for p, s in replies if p == port) for port in (port_a, port_b)}
    print(f"\n2 gunicorn instances × 2 workers, Redis, {LIMIT}/hour, {REQUESTS} requests: {dict(statuses)}; "
          f"per instance: {[dict(c) for c in per_instance.values()]}")  # fmt: skip
    # Then exactly 60 pass (and are stored) and 40 are throttled, whichever instance they reached
    assert statuses == Counter({201: LIMIT, 429: REQUESTS - LIMIT})
    assert Event.objects.count() == LIMIT
    assert all(sum(c.values()) == REQUESTS // 2 and c[201] > 0 for c in per_instance.values())
    # And the one count lives in Redis (every request counted there), not in the database
    assert list(_redis_counts(redis_url).values()) == [REQUESTS]
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM ratelimit_ratecounter WHERE bucket LIKE %s", [f"%key-{api_key.pk}%"])
        assert cursor.fetchone()[0] == 0
