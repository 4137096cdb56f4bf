"""GET /healthz and the OpenAPI schema/docs."""

from __future__ import annotations

from unittest import mock

import pytest
from django.db import OperationalError

pytestmark = pytest.mark.django_db


def test_healthz__database_up__returns_200_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


def test_healthz__database_down__returns_503(client):
    # Given a database that refuses connections
    broken = mock.MagicMock()
    broken.cursor.side_effect = OperationalError("connection refused")
    # When health is checked
    with mock.patch("signaldash.views.connection", broken):
        response = client.get("/healthz")
    # Then it reports the database as unavailable
    assert response.status_code == 503
    assert response.json()["database"] == "unavailable"


def test_schema__anonymous__describes_tracking_endpoints_with_bearer_auth(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    schema = response.json()
    for path in ("/api/track", "/api/track/batch", "/api/assign"):
        assert "post" in schema["paths"][path]
    track = schema["paths"]["/api/track"]["post"]
    assert {"201", "200", "400", "401", "404", "409", "413", "429"} <= set(track["responses"])
    assert schema["components"]["securitySchemes"]["ServiceAPIKey"]["scheme"] == "bearer"
    assert "examples" in track["requestBody"]["content"]["application/json"]


def test_docs__anonymous__returns_200_html(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger" in response.content.lower()
