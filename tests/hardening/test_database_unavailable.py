"""Database unavailable: the API answers 503 JSON with Retry-After (logged in the request log), pages a
503 page, /healthz says so; PostgreSQL connections carry a connect and a statement timeout."""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager

import pytest
from django.db import OperationalError, connection
from django.test import Client
from rest_framework.test import APIClient

from tests.tracking.conftest import make_experiment
from tracking.models import ServiceAPIKey

pytestmark = pytest.mark.django_db

EVENT = {"experiment": "checkout", "variant": "control", "user_key": "u1", "event_type": "exposure"}


@contextmanager
def database_down():
    """Every query fails the way a refused or timed-out connection does."""

    def refuse(execute, sql, params, many, context):
        raise OperationalError("connection to server at 127.0.0.1 failed: Connection refused")

    with connection.execute_wrapper(refuse):
        yield


@pytest.fixture
def api(make_user):
    make_experiment(make_user("owner"))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {ServiceAPIKey.objects.create_key(name='svc')[1]}")
    return client


@pytest.mark.parametrize("path", ["/api/track", "/api/track/batch", "/api/assign"])
def test_api__database_down__503_json_with_retry_after(api, path):
    body = {"events": [EVENT]} if path.endswith("batch") else EVENT
    with database_down():
        response = api.post(path, json.dumps(body), content_type="application/json", HTTP_X_REQUEST_ID="req-9")
    assert response.status_code == 503
    assert response.json()["error"] == "database_unavailable"
    assert int(response["Retry-After"]) > 0
    assert response["X-Request-ID"] == "req-9"


def test_api__database_down__one_structured_request_log_line(api, caplog):
    with caplog.at_level(logging.INFO, logger="signaldash.api"), database_down():
        api.post("/api/track", json.dumps(EVENT), content_type="application/json", HTTP_X_REQUEST_ID="req-7")
    (record,) = [r for r in caplog.records if r.name == "signaldash.api"]
    line = json.loads(record.getMessage())
    assert line == record.api
    assert {k: line[k] for k in ("request_id", "method", "path", "status", "outcome")} == {
        "request_id": "req-7",
        "method": "POST",
        "path": "/api/track",
        "status": 503,
        "outcome": "database_unavailable",
    }
    assert line["latency_ms"] >= 0 and "key" in line


def test_readout_api__database_down__503_json(make_user):
    client = Client(raise_request_exception=False)  # the failure happens inside a middleware, see below
    client.force_login(make_user("reader"))
    with database_down():
        response = client.get("/api/experiments/checkout/readout")
    assert response.status_code == 503
    assert response.json()["error"] == "database_unavailable"


def test_page__database_down__503_page_with_retry_after(make_user):
    # Given a logged-in user (the session itself is looked up in the database, inside a middleware,
    # which the test client would re-raise from Django's got_request_exception signal)
    client = Client(raise_request_exception=False)
    client.force_login(make_user("reader"))
    with database_down():
        response = client.get("/")
    assert response.status_code == 503
    assert "Temporarily unavailable" in response.content.decode()
    assert int(response["Retry-After"]) > 0


def test_healthz__database_down__503_unavailable(client):
    with database_down():
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["database"] == "unavailable"


def test_api__other_database_error__still_a_500(api):
    # A bug (not an outage) must stay visible as a 500: only connection-level failures are 503s.
    from django.db import ProgrammingError

    def broken(execute, sql, params, many, context):
        raise ProgrammingError("column does not exist")

    with connection.execute_wrapper(broken), pytest.raises(ProgrammingError):
        api.post("/api/track", json.dumps(EVENT), content_type="application/json")


@pytest.mark.postgres_only
def test_postgres_connection__connect_and_statement_timeouts_set(settings):
    options = settings.DATABASES["default"]["OPTIONS"]
    assert options["connect_timeout"] == settings.DB_CONNECT_TIMEOUT_S > 0
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        (value,) = cursor.fetchone()
    assert value == f"{int(settings.DB_STATEMENT_TIMEOUT_S)}s"
