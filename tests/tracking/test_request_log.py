"""One structured log line per API request: request id, key name, outcome, latency."""

from __future__ import annotations

import json
import logging

import pytest

from tests.tracking.conftest import event

pytestmark = pytest.mark.django_db


def _api_records(caplog):
    return [r for r in caplog.records if r.name == "signaldash.api"]


def test_request_log__created_event__one_line_with_id_key_outcome_latency(api, experiment, caplog):
    # When an event is tracked with a request id
    with caplog.at_level(logging.INFO, logger="signaldash.api"):
        response = api.post(
            "/api/track", data=json.dumps(event()), content_type="application/json", HTTP_X_REQUEST_ID="req-123"
        )
    # Then exactly one JSON line describes it, and the id is echoed back
    (record,) = _api_records(caplog)
    line = json.loads(record.getMessage())
    assert line == record.api
    assert (line["request_id"], line["key"], line["outcome"], line["status"]) == (
        "req-123",
        "checkout-service",
        "created",
        201,
    )
    assert line["latency_ms"] >= 0
    assert response["X-Request-ID"] == "req-123"


def test_request_log__unauthenticated__logged_without_key_with_generated_id(client_without_key, caplog):
    with caplog.at_level(logging.INFO, logger="signaldash.api"):
        response = client_without_key.post(
            "/api/track", data="{}", content_type="application/json", HTTP_X_REQUEST_ID="bad id\nwith newline"
        )
    (record,) = _api_records(caplog)
    assert (record.api["key"], record.api["outcome"], record.api["status"]) == (None, "not_authenticated", 401)
    assert record.api["request_id"] == response["X-Request-ID"] != "bad id\nwith newline"


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        (event(user_key=""), "invalid"),
        (event(experiment="nope"), "experiment_not_found"),
    ],
)
def test_request_log__errors__outcome_is_error_code(api, experiment, caplog, body, outcome):
    with caplog.at_level(logging.INFO, logger="signaldash.api"):
        api.post("/api/track", data=json.dumps(body), content_type="application/json")
    assert _api_records(caplog)[-1].api["outcome"] == outcome


def test_request_log__batch__counts_in_line(api, experiment, caplog):
    with caplog.at_level(logging.INFO, logger="signaldash.api"):
        api.post(
            "/api/track/batch",
            data=json.dumps({"events": [event(), event(), event(user_key="")]}),
            content_type="application/json",
        )
    line = _api_records(caplog)[-1].api
    assert (line["outcome"], line["events"], line["accepted"], line["duplicates"], line["rejected"]) == (
        "partially_rejected",
        3,
        1,
        1,
        1,
    )
