"""The in-process cache of verified API keys (tracking/auth.py): revocation delay SIGNALDASH_API_KEY_CACHE_S."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from signaldash.ratelimit.queries import hit_statements
from tracking import auth
from tracking.models import ServiceAPIKey

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def clean_cache():
    auth.api_key_cache_clear()
    yield
    auth.api_key_cache_clear()


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: now[0])
    return now


def _post(key: str, user: str):
    client = APIClient()
    body = {"experiment": "checkout", "variant": "control", "user_key": user, "event_type": "exposure"}
    return client.post("/api/track", json.dumps(body), content_type="application/json",
                       HTTP_AUTHORIZATION=f"Bearer {key}")  # fmt: skip


def test_api_key_cache__revoked_by_another_process__accepted_until_the_delay_then_401(running, clock, settings):
    # Given a key that was just used, with a 10 s cache
    settings.SIGNALDASH_API_KEY_CACHE_S = 10
    api_key, key = ServiceAPIKey.objects.create_key(name="svc")
    assert _post(key, "u1").status_code == 201
    # When another process revokes it (an UPDATE this process hears nothing of)
    ServiceAPIKey.objects.filter(pk=api_key.pk).update(revoked=True)
    # Then this process accepts it for at most 10 s more, and refuses it afterwards
    clock[0] += 9.9
    assert _post(key, "u2").status_code == 201
    clock[0] += 0.2
    assert _post(key, "u3").status_code == 401


@pytest.mark.parametrize("change", ["revoke", "delete"])
def test_api_key_cache__revoked_or_deleted_in_this_process__refused_at_once(running, clock, settings, change):
    # Given a key that was just used, with a 10 s cache
    settings.SIGNALDASH_API_KEY_CACHE_S = 10
    api_key, key = ServiceAPIKey.objects.create_key(name="svc")
    assert _post(key, "u1").status_code == 201
    # When it is revoked (or deleted) in this process, as the admin does
    if change == "revoke":
        api_key.revoked = True
        api_key.save()
    else:
        api_key.delete()
    # Then the next request is refused, with no time passing
    assert _post(key, "u2").status_code == 401


def test_api_key_cache__off__revocation_immediate(running, settings):
    # Given the cache turned off
    settings.SIGNALDASH_API_KEY_CACHE_S = 0
    api_key, key = ServiceAPIKey.objects.create_key(name="svc")
    assert _post(key, "u1").status_code == 201
    # When the key is revoked / Then the next request is refused
    api_key.revoked = True
    api_key.save()
    assert _post(key, "u2").status_code == 401


def test_api_key_cache__cached_key__one_query_fewer_and_wrong_secret_still_refused(running, clock, settings):
    # Given a verified key
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.SIGNALDASH_API_KEY_CACHE_S = 10
    settings.SIGNALDASH_EXPERIMENT_CACHE_S = 0  # only the key cache differs between the two requests
    _, key = ServiceAPIKey.objects.create_key(name="svc")
    with CaptureQueriesContext(connection) as first:
        assert _post(key, "u1").status_code == 201
    # When it is used again / Then the key lookup is skipped
    with CaptureQueriesContext(connection) as second:
        assert _post(key, "u2").status_code == 201
    # (and the throttle counts from the lease the first request took: its statements are skipped too)
    assert len(second.captured_queries) == len(first.captured_queries) - 1 - hit_statements()
    # And the same prefix with another secret is checked against the database (and refused)
    prefix = key.split(".")[0]
    assert _post(f"{prefix}.wrong-secret", "u3").status_code == 401
