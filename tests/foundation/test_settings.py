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


def test_settings__database_url__selects_engine():
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "d = settings.DATABASES['default']; print(d['ENGINE'], d['NAME'], d['HOST'], d['PORT'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(DJANGO_SETTINGS_MODULE="signaldash.settings", DATABASE_URL="postgres://u:p@db.internal:6543/sd")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["django.db.backends.postgresql", "sd", "db.internal", "6543"]


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
