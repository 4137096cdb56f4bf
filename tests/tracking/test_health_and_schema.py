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


def test_schema__anonymous__401(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 401


def test_schema__logged_in__describes_tracking_endpoints_with_bearer_auth(client, make_user):
    client.force_login(make_user("schema-reader"))
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    schema = response.json()
    for path in ("/api/track", "/api/track/batch", "/api/assign"):
        assert "post" in schema["paths"][path]
    track = schema["paths"]["/api/track"]["post"]
    assert {"201", "200", "400", "401", "404", "409", "413", "429"} <= set(track["responses"])
    assert schema["components"]["securitySchemes"]["ServiceAPIKey"]["scheme"] == "bearer"
    assert "examples" in track["requestBody"]["content"]["application/json"]


def test_docs__anonymous__redirected_to_login(client):
    response = client.get("/api/docs/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_docs__logged_in__swagger_ui_served_locally_without_cdn(client, make_user):
    # Given a logged-in user
    client.force_login(make_user("docs-reader"))
    # When they open the API docs
    response = client.get("/api/docs/")
    # Then Swagger UI loads from our own static files (drf-spectacular-sidecar), not a CDN
    html = response.content.decode()
    assert response.status_code == 200 and "swagger" in html.lower()
    assert "cdn.jsdelivr" not in html and "unpkg.com" not in html
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in html
    assert client.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js").status_code == 200
