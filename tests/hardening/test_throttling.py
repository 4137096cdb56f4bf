"""Rate limits that hold across workers and app servers (issue 11: "throttling is per worker", the readout
API was not throttled, logins were not limited).

Counts live in the database (`ratelimit_ratecounter`, one atomic upsert per hit) or in Redis when REDIS_URL
is set; the 4-worker test runs the real gunicorn against the test database.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from signaldash.ratelimit import counters
from signaldash.ratelimit.counters import Rate
from tests.experiments import conftest as workflow
from tests.hardening.conftest import free_port, gunicorn, http_request, wait_for

# The workflow fixtures (users in each role, experiments driven through the services).
approver, make_experiment, ops, workflow_groups = (
    workflow.approver,
    workflow.make_experiment,
    workflow.ops,
    workflow.workflow_groups,
)


def _rates(**rates: str) -> dict:
    return {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], **rates},
    }


# --- The counter --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "limit", "period"),
    [("60/min", 60, 60), ("6000/m", 6000, 60), ("10/15min", 10, 900), ("5/hour", 5, 3600), ("1/day", 1, 86400)],
)
def test_rate_parse__drf_syntax_and_multiples(text, limit, period):
    assert Rate.parse(text) == Rate(limit=limit, period_s=period)


@pytest.mark.django_db
def test_hit__same_window__counts_up_then_refuses_and_next_window_starts_over():
    rate = Rate(limit=2, period_s=60)
    t0 = 1_800_000_000.0  # a window start
    verdicts = [counters.hit("unit", "c1", rate, now=t0 + i) for i in range(3)]
    assert [(v.allowed, v.count) for v in verdicts] == [(True, 1), (True, 2), (False, 3)]
    assert verdicts[2].retry_after_s == 58
    assert counters.hit("unit", "c1", rate, now=t0 + 60).count == 1  # next window
    assert counters.hit("unit", "c2", rate, now=t0 + 60).count == 1  # other client


@pytest.mark.django_db(transaction=True)
def test_hit__8_threads_200_hits_one_bucket__every_count_seen_once():
    # Given 8 threads, each with its own database connection, hitting the same client's bucket
    rate = Rate(limit=1000, period_s=3600)
    now = time.time()
    seen: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker():
        try:
            barrier.wait(timeout=10)
            for _ in range(25):
                count = counters.hit("race", "one-client", rate, now=now).count
                with lock:
                    seen.append(count)
        finally:
            connection.close()

    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(worker) for _ in range(8)]:
            future.result(timeout=120)
    # Then no increment was lost: a read-then-write counter (cache.incr on the database cache) repeats counts
    assert sorted(seen) == list(range(1, 201))


# --- Leases: a busy key costs one statement per run of counts ------------------------------------------------
@pytest.mark.django_db
def test_hit__busy_key__counts_leased_in_runs_every_count_once_and_few_statements():
    # Given a key with a large limit, When it is hit 1,000 times in one process
    rate = Rate(limit=100_000, period_s=3600)
    now = 1_800_000_000.0
    with CaptureQueriesContext(connection) as seen:
        counts = [counters.hit("lease", "busy", rate, now=now).count for _ in range(1000)]
    # Then every count is handed out once, in order, from leases of LEASE_MAX counts
    assert counts == list(range(1, 1001))
    statements = 1000 // counters.LEASE_MAX + 1
    assert len(seen) == statements * (1 if connection.vendor == "postgresql" else 2)


@pytest.mark.django_db
def test_hit__3_processes_sharing_a_key__limit_exact_and_never_exceeded(monkeypatch):
    # Given 3 processes (each with its own leases) sharing one key whose limit is 5,000 a window
    rate = Rate(limit=5000, period_s=3600)
    now = 1_800_000_000.0
    processes = [{}, {}, {}]
    allowed: list[int] = []
    # When 6,000 requests arrive round-robin
    for i in range(6000):
        monkeypatch.setattr(counters, "_leases", processes[i % 3])
        verdict = counters.hit("lease", "shared", rate, now=now)
        if verdict.allowed:
            allowed.append(verdict.count)
    # Then exactly the limit passes, each count once: leases shrink to single counts near the limit
    assert sorted(allowed) == list(range(1, 5001))


@pytest.mark.django_db
def test_hit__small_limit__every_hit_counted_in_the_database():
    rate = Rate(limit=60, period_s=60)
    with CaptureQueriesContext(connection) as seen:
        verdicts = [counters.hit("lease", "small", rate, now=1_800_000_000.0) for _ in range(61)]
    assert [v.count for v in verdicts] == list(range(1, 62)) and not verdicts[-1].allowed
    assert len(seen) == 61 * (1 if connection.vendor == "postgresql" else 2)


# --- Redis, when REDIS_URL is set ---------------------------------------------------------------------
@pytest.fixture
def redis_server(tmp_path):
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("REQUIRE_REDIS") == "1":
            pytest.fail("REQUIRE_REDIS=1 but redis-server is not installed (apt-get install redis-server)")
        pytest.skip("!!! redis-server not installed: Redis throttle test SKIPPED (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port)
        wait_for(lambda: _redis_ping(client), timeout=10, what="redis-server to answer PING")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _redis_ping(client) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.mark.django_db
def test_hit__redis_url__atomic_incr_with_expiry_and_no_database(redis_server, settings, django_assert_num_queries):
    # Given REDIS_URL configured (the settings module then uses Django's Redis cache)
    from django.core.cache import caches

    settings.REDIS_URL = redis_server
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_server}}
    caches._settings = None  # noqa: SLF001 - let the cache handler see the overridden CACHES
    rate = Rate(limit=100, period_s=3600)
    now = time.time()
    seen: list[int] = []
    try:
        # When 8 threads hit one bucket 25 times each
        with ThreadPoolExecutor(8) as pool:
            results = pool.map(lambda _: [counters.hit("redis", "c", rate, now=now).count for _ in range(25)], range(8))
            for counts in results:
                seen.extend(counts)
        # Then every count is seen once, the key expires with its window, and the database was not used
        assert sorted(seen) == list(range(1, 201))
        from django.core.cache import cache

        client = cache._cache.get_client(write=True)  # noqa: SLF001
        (key,) = client.keys("*rate:redis:c:*")
        assert 0 < client.ttl(key) <= 3601
        with django_assert_num_queries(0):
            assert counters.hit("redis", "c", rate, now=now).allowed is False
    finally:
        caches._settings = None  # noqa: SLF001


# --- Across 4 gunicorn workers -------------------------------------------------------------------------
def _database_url() -> str:
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    return f"postgres://{s['USER']}:{s['PASSWORD']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


@pytest.mark.django_db(transaction=True)
def test_api_key_limit__4_gunicorn_workers_100_requests__exactly_60_pass():
    from tracking.models import ServiceAPIKey

    # Given one API key, a limit of 60 per hour, and gunicorn with 4 workers on the test database
    _, key = ServiceAPIKey.objects.create_key(name="four-workers")
    env = {"SIGNALDASH_THROTTLE_RATE": "60/hour", "GUNICORN_WORKERS": "4"}
    with gunicorn(database_url=_database_url(), extra_env=env, args=("--workers", "4")) as port:
        # (not in the last 30 s of the hour, so all 100 requests fall in one window)
        wait_for(lambda: 30 < 3600 - time.time() % 3600, timeout=40, interval=0.5, what="a fresh hourly window")
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

        def send(_):
            return http_request(port, "POST", "/api/track", body=b"{}", headers=headers, timeout=30).status

        # When 8 clients send 100 requests in parallel (each counted before its body is validated)
        with ThreadPoolExecutor(8) as pool:
            statuses = Counter(pool.map(send, range(100)))
        workers = _worker_pids(port)
    # Then exactly 60 pass the throttle (400: the empty body is invalid) and 40 are throttled
    print(f"\n4 gunicorn workers ({workers} pids), 60/hour, 100 requests: {dict(statuses)}")
    assert statuses == Counter({400: 60, 429: 40})


def _worker_pids(port: int) -> int:
    """How many worker processes gunicorn runs (children of the arbiter listening on `port`)."""
    try:
        out = subprocess.run(["pgrep", "-f", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return -1
    return max(0, len(out.split()) - 1)


# --- Readout throttle ---------------------------------------------------------------------------------
@pytest.mark.django_db
def test_readout_limit__per_user__api_page_and_exports_share_the_budget_then_429(
    client, make_user, make_experiment, settings
):
    # Given a readout budget of 3 per minute and two readers
    settings.REST_FRAMEWORK = _rates(readout="3/min")
    experiment = make_experiment("throttled", status="running")
    client.force_login(make_user("reader-1", groups=("reviewer",)))
    # When the first reader uses the API, the page and the CSV, then asks once more
    urls = [
        f"/api/experiments/{experiment.slug}/readout",
        f"/experiments/{experiment.slug}/readout",
        f"/experiments/{experiment.slug}/readout.csv",
        f"/experiments/{experiment.slug}/readout-bundle.zip",
    ]
    responses = [client.get(url) for url in urls]
    # Then the fourth request is refused with Retry-After, on any readout URL
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert 0 < int(responses[3]["Retry-After"]) <= 60
    assert client.get(urls[0]).status_code == 429
    assert "Retry-After" in client.get(urls[0]).headers
    # And another reader has their own budget
    client.force_login(make_user("reader-2", groups=("reviewer",)))
    assert client.get(urls[0]).status_code == 200


@pytest.mark.django_db
def test_readout_limit__per_api_key__429_json(make_experiment, settings):
    from rest_framework.test import APIClient

    from tracking.models import ServiceAPIKey

    settings.REST_FRAMEWORK = _rates(readout="2/min")
    experiment = make_experiment("key-throttled", status="running")
    _, key = ServiceAPIKey.objects.create_key(name="reader-service", scopes="read")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    statuses = [api.get(f"/api/experiments/{experiment.slug}/readout").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


# --- Login attempts -----------------------------------------------------------------------------------
@pytest.mark.django_db
def test_login__11th_attempt_within_limit__429_even_with_the_right_password(client, make_user, settings):
    # Given a user, and a limit of 10 attempts per user name per 15 minutes
    settings.SIGNALDASH_LOGIN_RATE = "10/15min"
    make_user("victim", password="right-password-1")
    # When an attacker tries 10 wrong passwords
    for i in range(10):
        assert client.post("/accounts/login/", {"username": "victim", "password": f"guess-{i}"}).status_code == 200
    # Then the 11th attempt is refused without checking the password, even the right one
    response = client.post("/accounts/login/", {"username": "Victim ", "password": "right-password-1"})
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 900
    assert "Too many login attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_login__success__resets_the_user_count_and_other_users_unaffected(client, make_user, settings):
    settings.SIGNALDASH_LOGIN_RATE = "3/15min"
    make_user("alice", password="alice-password-1")
    make_user("bob", password="bob-password-1")
    client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    # a successful login clears alice's count
    assert client.post("/accounts/login/", {"username": "alice", "password": "alice-password-1"}).status_code == 302
    client.logout()
    statuses = [
        client.post("/accounts/login/", {"username": "alice", "password": "wrong"}).status_code for _ in range(3)
    ]
    assert statuses == [200, 200, 200]
    # bob is not locked out by alice's attempts
    assert client.post("/accounts/login/", {"username": "bob", "password": "bob-password-1"}).status_code == 302


@pytest.mark.django_db
def test_login__per_address_limit__429_across_user_names(client, make_user, settings):
    settings.SIGNALDASH_LOGIN_IP_RATE = "5/15min"
    statuses = [
        client.post("/accounts/login/", {"username": f"user{i}", "password": "x"}).status_code for i in range(6)
    ]
    assert statuses == [200] * 5 + [429]


# --- The shared cache ---------------------------------------------------------------------------------
def test_settings__no_redis_url__database_cache_and_redis_url__redis_cache():
    code = (
        "import django; django.setup(); from django.conf import settings; print(settings.CACHES['default']['BACKEND'])"
    )
    base = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    base["DJANGO_SETTINGS_MODULE"] = "signaldash.settings"
    run = lambda env: subprocess.run(  # noqa: E731
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=settings.BASE_DIR
    ).stdout.strip()
    assert run(base) == "django.core.cache.backends.db.DatabaseCache"
    assert run({**base, "REDIS_URL": "redis://127.0.0.1:6399/0"}) == "django.core.cache.backends.redis.RedisCache"


@pytest.mark.django_db
def test_database_cache__test_database__table_exists_and_shared():
    from django.core.cache import cache

    cache.set("shared-probe", {"n": 1}, timeout=60)
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM signaldash_cache")
        assert cursor.fetchone()[0] >= 1
    assert cache.get("shared-probe") == {"n": 1}


def test_docs__createcachetable_in_make_demo():
    makefile = (settings.BASE_DIR / "Makefile").read_text()
    assert "manage.py createcachetable" in makefile


@pytest.mark.django_db
def test_login__behind_trusted_proxy__limit_per_forwarded_client(client, settings):
    # Given the app behind a proxy on loopback (trusted) that appends the client address to X-Forwarded-For
    settings.SIGNALDASH_LOGIN_IP_RATE = "2/15min"

    def attempt(client_ip: str, forged: str = "") -> int:
        xff = f"{forged}, {client_ip}" if forged else client_ip
        data = {"username": "u", "password": "x"}
        return client.post("/accounts/login/", data, HTTP_X_FORWARDED_FOR=xff).status_code

    # When one client is over its limit, even when it forges a left-hand X-Forwarded-For entry
    assert [attempt("203.0.113.7"), attempt("203.0.113.7", forged="1.2.3.4"), attempt("203.0.113.7")] == [200, 200, 429]
    # Then another client behind the same proxy is not locked out
    assert attempt("198.51.100.9") == 200
