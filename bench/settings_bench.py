"""Bench-only settings: the real settings plus a URLconf with a no-database DRF view (bench/urls.py)."""

from signaldash.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
