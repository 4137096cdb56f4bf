"""What schemathesis found, pinned: the readout API documents its error answers, unknown API URLs answer JSON,
and `<slug>` path parameters state the pattern the URL resolver accepts."""

from __future__ import annotations

import pytest

from tests.tracking.conftest import make_experiment
from tracking.models import ServiceAPIKey

pytestmark = pytest.mark.django_db

READOUT_PATHS = ("/api/experiments/{slug}/readout", "/api/experiments/{slug}/readout/timeseries")


def _schema(client, make_user) -> dict:
    client.force_login(make_user("schema-errors"))
    return client.get("/api/schema/", HTTP_ACCEPT="application/json").json()


def test_schema__readout_api__documents_every_error_status(client, make_user):
    # Given the generated schema
    schema = _schema(client, make_user)
    # Then both readout operations list the answers the views and middleware give besides 200
    for path in READOUT_PATHS:
        responses = schema["paths"][path]["get"]["responses"]
        assert set(responses) == {"200", "400", "401", "403", "404", "429", "503"}, path


def test_schema__slug_path_parameter__declares_the_resolver_pattern(client, make_user):
    schema = _schema(client, make_user)
    for path in READOUT_PATHS:
        (slug,) = [p for p in schema["paths"][path]["get"]["parameters"] if p["name"] == "slug"]
        assert slug["schema"] == {"type": "string", "pattern": "^[-a-zA-Z0-9_]+$"}


def test_api__path_the_resolver_rejects__404_json(client):
    # Given a read key, and a slug no `<slug:...>` route matches
    _, key = ServiceAPIKey.objects.create_key(name="reader", scopes="read")
    # When it is requested
    response = client.get("/api/experiments/%07G/readout", HTTP_AUTHORIZATION=f"Bearer {key}")
    # Then the answer is JSON, like every other API error
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": "not_found", "detail": "Not found."}


def test_api__unknown_experiment__404_json_detail(client):
    _, key = ServiceAPIKey.objects.create_key(name="reader", scopes="read")
    response = client.get("/api/experiments/no-such-experiment/readout", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 404
    assert "detail" in response.json()


def test_page__unknown_url__404_html_page(client, make_user):
    client.force_login(make_user("browser"))
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_readout_api__malformed_metric__400_with_the_documented_string_body(client, make_user):
    _, key = ServiceAPIKey.objects.create_key(name="reader", scopes="read")
    make_experiment(make_user("owner"), slug="checkout")
    response = client.get("/api/experiments/checkout/readout?metric=bad%20key", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 400
    assert isinstance(response.json()["metric"], str)
