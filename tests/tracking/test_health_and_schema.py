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


def _schema(client, make_user) -> dict:
    client.force_login(make_user("schema-contract"))
    return client.get("/api/schema/", HTTP_ACCEPT="application/json").json()


def test_schema__tracking_requests__declare_what_the_serializers_enforce(client, make_user):
    # Given the generated schema
    components = _schema(client, make_user)["components"]["schemas"]
    event = components["TrackEvent"]
    # Then unknown keys are declared refused, and the field rules are there
    assert event["additionalProperties"] is False
    assert components["TrackBatch"]["additionalProperties"] is False
    assert components["AssignRequest"]["additionalProperties"] is False
    props = event["properties"]
    assert props["event_id"]["pattern"] == "^[A-Za-z0-9._:-]+$"
    assert (props["event_id"]["minLength"], props["event_id"]["maxLength"]) == (1, 100)
    assert props["user_key"]["pattern"] == r"^\S(?:[\s\S]*\S)?$" and props["user_key"]["minLength"] == 1
    assert props["metric"]["pattern"] == "^[-a-zA-Z0-9_]+$"
    assert props["covariates"]["maxProperties"] == 20
    assert props["experiment"]["minLength"] == 1 and props["variant"]["minLength"] == 1
    # And the exposure/metric and conversion/covariates rules
    assert event["anyOf"] == [
        {"properties": {"event_type": {"not": {"enum": ["conversion"]}}, "metric": {"not": {"type": "string"}}}},
        {"properties": {"event_type": {"not": {"enum": ["exposure"]}}, "covariates": {"not": {"type": "object"}}}},
    ]


def test_schema__tracking_responses__every_status_code_and_error_code(client, make_user):
    schema = _schema(client, make_user)
    responses = {path: set(schema["paths"][path]["post"]["responses"]) for path in ("/api/track", "/api/track/batch")}
    common = {"400", "401", "403", "411", "413", "415", "429", "503"}
    assert responses["/api/track"] == common | {"200", "201", "404", "409"}
    assert responses["/api/track/batch"] == common | {"200"}
    assert set(schema["paths"]["/api/assign"]["post"]["responses"]) == common | {"200", "404", "409"}
    enums = schema["components"]["schemas"]
    assert set(enums["RejectedErrorEnum"]["enum"]) == {
        "invalid",
        "experiment_not_found",
        "experiment_not_running",
        "unknown_variant",
        "variant_conflict",
        "value_required",
        "unknown_metric",
        "occurred_before_start",
    }
    assert set(enums["TrackValidationErrorErrorEnum"]["enum"]) == {
        "unknown_variant",
        "value_required",
        "unknown_metric",
        "occurred_before_start",
    }
    assert enums["Rejected"]["required"] == ["error", "errors", "index"]


@pytest.mark.parametrize(
    ("item", "valid"),
    [
        ({"event_type": "exposure"}, True),
        ({"event_type": "exposure", "metric": None}, True),
        ({"event_type": "exposure", "metric": "purchase"}, False),
        ({"event_type": "exposure", "covariates": {"revenue": 1}}, True),
        ({"event_type": "conversion", "metric": "purchase"}, True),
        ({"event_type": "conversion", "covariates": None}, True),
        ({"event_type": "conversion", "covariates": {}}, False),
    ],
)
def test_schema__event_type_rules__agree_with_the_serializer(item, valid):
    # The schema's rule (read as JSON Schema) and the serializer accept exactly the same combinations
    from rest_framework import serializers

    from tracking.api import EVENT_TYPE_RULES, event_validate

    def matches(rule, data):
        for name, condition in rule["properties"].items():
            if name not in data:
                continue
            value = data[name]
            if "enum" in condition.get("not", {}) and value in condition["not"]["enum"]:
                return False
            wanted = condition.get("not", {}).get("type")
            if wanted == "string" and isinstance(value, str) or wanted == "object" and isinstance(value, dict):
                return False
        return True

    body = {"experiment": "x", "variant": "v", "user_key": "u", **item}
    try:
        event_validate(body)
        accepted = True
    except serializers.ValidationError:
        accepted = False
    assert accepted == valid
    assert any(matches(rule, item) for rule in EVENT_TYPE_RULES) == valid
