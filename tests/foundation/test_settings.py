"""Settings come from the environment; production mode passes `check --deploy`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    # A deployment environment: none of the test-only variables (the browser fixture sets DJANGO_ALLOW_ASYNC_UNSAFE).
    unset = {"DATABASE_URL", "SECRET_KEY", "DEBUG", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    clean = {k: v for k, v in os.environ.items() if k not in unset}
    clean.update(DJANGO_SETTINGS_MODULE="signaldash.settings", **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120
    )


def test_check_deploy__production_mode__no_warnings():
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        SIGNALDASH_PRODUCTION="1",
        SECRET_KEY="x7" * 30 + "-a-long-random-production-secret",
        ALLOWED_HOSTS="signaldash.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_settings__production_without_secret_key__refuses_to_start():
    result = _manage("check", SIGNALDASH_PRODUCTION="1", ALLOWED_HOSTS="x.example.com")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def _database_settings(**env: str) -> list[str]:
    code = (
        "import django; django.setup(); from django.conf import settings; d = settings.DATABASES['default']; "
        "print(d['ENGINE'], d['NAME'], d['HOST'], d['PORT'], d['CONN_MAX_AGE'], d['CONN_HEALTH_CHECKS'])"
    )
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DB_CONN_MAX_AGE")}
    clean.update(DJANGO_SETTINGS_MODULE="signaldash.settings", **env)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_settings__database_url__selects_engine():
    # PostgreSQL goes through Django's backend with a bounded health check (signaldash/db/postgresql),
    # with connections reused for 60 s and checked before each request uses them.
    assert _database_settings(DATABASE_URL="postgres://u:p@db.internal:6543/sd") == [
        "signaldash.db.postgresql",
        "sd",
        "db.internal",
        "6543",
        "60",
        "True",
    ]


def test_settings__db_conn_max_age__zero_opens_a_connection_per_request():
    settings = _database_settings(DATABASE_URL="postgres://u:p@db.internal:6543/sd", DB_CONN_MAX_AGE="0")
    assert settings[-2:] == ["0", "True"]


def test_settings__no_database_url__sqlite_file_with_wal_and_immediate():
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "d = settings.DATABASES['default']; print(d['ENGINE'], d['OPTIONS']['transaction_mode'], d['NAME'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["DJANGO_SETTINGS_MODULE"] = "signaldash.settings"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    engine, mode, name = out.stdout.split()
    assert engine == "django.db.backends.sqlite3" and mode == "IMMEDIATE"
    assert name.endswith("db.sqlite3")
