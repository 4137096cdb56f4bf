"""Test settings: the real settings plus a fast password hasher and a quiet throttle."""

import os

from signaldash.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
SIGNALDASH_AI_PROVIDER = "none"

# SQLite tests use a file (not :memory:) so live-server threads and concurrent writers share it.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / f".test-db-{os.getpid()}.sqlite3")}  # noqa: F405
