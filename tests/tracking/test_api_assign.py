"""POST /api/assign through the full Django stack."""

from __future__ import annotations

import json

import pytest

from tests.tracking.conftest import event, make_experiment
from tracking.hashing import assign_variant
from tracking.models import Assignment

pytestmark = pytest.mark.django_db
URL = "/api/assign"


def post(client, body, **kwargs):
    return client.post(URL, data=json.dumps(body), content_type="application/json", **kwargs)


def test_assign__new_user__returns_200_hash_variant_new(api, experiment):
    # When a user is assigned for the first time
    response = post(api, {"experiment": "checkout", "user_key": "u1"})
    # Then the variant is the hash's answer, stored once with source "hash"
    assert response.status_code == 200
    body = response.json()
    expected = assign_variant(experiment.salt, "u1", [("control", 1), ("treatment", 1)])
    assert (body["variant"], body["new"]) == (expected, True)
    assert body["assigned_at"]
    stored = Assignment.objects.get()
    assert (stored.variant.key, stored.source) == (expected, "hash")


def test_assign__repeat__same_answer_not_new(api, experiment):
    first = post(api, {"experiment": "checkout", "user_key": "u1"}).json()
    second = post(api, {"experiment": "checkout", "user_key": "u1"}).json()
    assert second == {**first, "new": False}
    assert Assignment.objects.count() == 1


def test_assign__user_already_exposed__returns_exposure_variant(api, experiment):
    # Given a user whose first exposure (upstream) was the variant the hash would not pick
    hashed = assign_variant(experiment.salt, "u1", [("control", 1), ("treatment", 1)])
    upstream = "treatment" if hashed == "control" else "control"
    api.post("/api/track", data=json.dumps(event(variant=upstream)), content_type="application/json")
    # When the user is assigned
    body = post(api, {"experiment": "checkout", "user_key": "u1"}).json()
    # Then the stored assignment wins
    assert (body["variant"], body["new"]) == (upstream, False)


def test_assign__weights__respected(api, owner):
    make_experiment(owner, "all-in", weights=(("control", 1), ("treatment", 1_000_000)))
    variants = {post(api, {"experiment": "all-in", "user_key": f"u{i}"}).json()["variant"] for i in range(20)}
    assert variants == {"treatment"}


def test_assign__unknown_experiment__returns_404(api, experiment):
    response = post(api, {"experiment": "nope", "user_key": "u1"})
    assert response.status_code == 404
    assert response.json()["error"] == "experiment_not_found"


@pytest.mark.parametrize("status", ["draft", "review", "readout", "shipped", "killed"])
def test_assign__experiment_not_running__returns_409(api, owner, status):
    make_experiment(owner, "paused", status=status)
    response = post(api, {"experiment": "paused", "user_key": "u1"})
    assert response.status_code == 409
    assert response.json() == {"error": "experiment_not_running"}
    assert not Assignment.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {"experiment": "checkout"},
        {"experiment": "checkout", "user_key": ""},
        {"experiment": "checkout", "user_key": 7},
        {"experiment": "checkout", "user_key": "x" * 256},
        {"experiment": "checkout", "user_key": "u1", "variant": "control"},
        ["checkout", "u1"],
    ],
)
def test_assign__invalid_input__returns_400(api, experiment, body):
    response = post(api, body)
    assert response.status_code == 400
    assert "errors" in response.json()


def test_assign__missing_key__returns_401(client_without_key, experiment):
    response = post(client_without_key, {"experiment": "checkout", "user_key": "u1"})
    assert response.status_code == 401
    assert "WWW-Authenticate" in response


def test_assign__body_too_large__returns_413(api, experiment, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = post(api, {"experiment": "checkout", "user_key": "u" * 2000})
    assert response.status_code == 413


def test_assign__over_rate__returns_429(api, experiment, throttle_rate):
    throttle_rate("1/min")
    post(api, {"experiment": "checkout", "user_key": "u1"})
    response = post(api, {"experiment": "checkout", "user_key": "u2"})
    assert response.status_code == 429
    assert "Retry-After" in response
