"""Production gunicorn recipe for Signal Dash (docs/deployment.md explains each choice).

    gunicorn -c gunicorn.conf.py          # serves signaldash.wsgi on GUNICORN_BIND

Threaded workers (`gthread`): the app mostly waits on PostgreSQL, so threads add concurrency cheaply,
and a connection that has not sent anything waits in the worker's poller, not in a thread. A client
that sends *part* of a request still holds one thread until it finishes or disconnects (gunicorn has
no header/body read timeout), so run a buffering reverse proxy (nginx) in front: it absorbs slow
clients and hands gunicorn complete requests. Without one, `threads` bounds how many such clients a
worker survives before `/healthz` queues behind them (tests/hardening/test_server.py).
"""

import multiprocessing
import os


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


wsgi_app = "signaldash.wsgi:application"
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")

worker_class = "gthread"
workers = _env_int("GUNICORN_WORKERS", max(2, multiprocessing.cpu_count()))
threads = _env_int("GUNICORN_THREADS", 16)
# Open connections per worker (threads busy + kept alive + waiting for their first bytes).
worker_connections = _env_int("GUNICORN_WORKER_CONNECTIONS", 1000)

# A worker that stops answering its arbiter for `timeout` s is killed and replaced; on shutdown or
# reload, in-flight requests get `graceful_timeout` s. PostgreSQL statements stop at
# SIGNALDASH_DB_STATEMENT_TIMEOUT_S (30 s) and connects at SIGNALDASH_DB_CONNECT_TIMEOUT_S (3 s).
timeout = _env_int("GUNICORN_TIMEOUT", 35)
graceful_timeout = _env_int("GUNICORN_GRACEFUL_TIMEOUT", 30)
# Idle keep-alive connections are closed after this many seconds (the proxy reuses them meanwhile).
keepalive = _env_int("GUNICORN_KEEPALIVE", 5)

# Bounded request heads (bodies are bounded by Django: DATA_UPLOAD_MAX_MEMORY_SIZE, per-view limits).
limit_request_line = 4094
limit_request_fields = 64
limit_request_field_size = 8190

# Recycle workers now and then (bounded memory growth), staggered so they do not restart together.
max_requests = _env_int("GUNICORN_MAX_REQUESTS", 20000)
max_requests_jitter = max_requests // 10

# Load the app once in the arbiter and fork every worker from it: a worker (a recycled one too) starts in a few
# milliseconds instead of importing Django and the app again (about 0.6 s of CPU, then its own warm-up), which
# under load cost a recycle's worth of throughput every 20,000 requests per worker. The price: new code needs a
# restart of gunicorn itself (`HUP` restarts the workers with the code already loaded). GUNICORN_PRELOAD=0: off.
preload_app = os.environ.get("GUNICORN_PRELOAD", "1").strip() != "0"


def pre_fork(server, worker):
    """No database connection may cross the fork (parent and child would share its socket)."""
    if preload_app:
        from django.db import connections

        connections.close_all()


# Heartbeat files on tmpfs where available, so a slow disk cannot make healthy workers look dead.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# X-Forwarded-* are trusted from the local proxy only (override with FORWARDED_ALLOW_IPS).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None  # "-" for stdout; the API logs its own lines
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
