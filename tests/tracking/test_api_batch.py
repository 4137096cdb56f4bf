"""POST /api/track/batch through the full Django stack."""

from __future__ import annotations

import json

import pytest

from tests.tracking.conftest import event, make_experiment
from tracking.models import Assignment, Event, VariantConflict

pytestmark = pytest.mark.django_db
URL = "/api/track/batch"


def post(client, body, **kwargs):
    return client.post(URL, data=json.dumps(body), content_type="application/json", **kwargs)


def test_batch__all_valid__returns_200_all_accepted(api, experiment):
    # Given three distinct events
    events = [
        event(user_key="a"),
        event(user_key="b", variant="treatment"),
        event(user_key="a", event_type="conversion"),
    ]
    # When they are sent as one batch
    response = post(api, {"events": events})
    # Then all are stored
    assert response.status_code == 200
    assert response.json() == {"accepted": 3, "duplicates": 0, "rejected": []}
    assert Event.objects.count() == 3
    assert Assignment.objects.count() == 2


def test_batch__mixed_valid_and_invalid__stores_valid_and_reports_rejected_by_index(api, owner, experiment):
    # Given a batch with invalid, unknown, stopped, conflicting and valid events
    make_experiment(owner, "stopped", status="killed")
    events = [
        event(user_key="ok"),
        event(user_key=""),
        event(experiment="nope"),
        event(experiment="stopped"),
        event(variant="ghost"),
        event(user_key="ok", variant="treatment"),
        "not an object",
        event(user_key="ok2", event_type="conversion"),
    ]
    # When it is sent
    response = post(api, {"events": events})
    # Then the valid events are stored and every other one is rejected with its index and reason
    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["duplicates"]) == (2, 0)
    rejected = {r["index"]: r for r in body["rejected"]}
    assert sorted(rejected) == [1, 2, 3, 4, 5, 6]
    assert "user_key" in rejected[1]["errors"]
    assert rejected[2]["error"] == "experiment_not_found"
    assert rejected[3]["error"] == "experiment_not_running"
    assert "variant" in rejected[4]["errors"]
    assert rejected[5]["error"] == "variant_conflict"
    assert "non_field_errors" in rejected[6]["errors"]
    assert Event.objects.count() == 2
    assert VariantConflict.objects.count() == 1


def test_batch__repeat_inside_batch__stored_once_counted_as_duplicate(api, experiment):
    # When a batch holds the same event twice
    response = post(api, {"events": [event(), event(), event(event_type="conversion")]})
    # Then it is stored once and the repeat is a duplicate
    assert response.json() == {"accepted": 2, "duplicates": 1, "rejected": []}
    assert Event.objects.count() == 2


def test_batch__repeat_of_stored_event__counted_as_duplicate(api, experiment):
    # Given a stored batch
    post(api, {"events": [event(), event(user_key="u2")]})
    # When it is sent again with one new event
    response = post(api, {"events": [event(user_key="u2"), event(), event(user_key="u3")]})
    # Then only the new event is accepted
    assert response.json() == {"accepted": 1, "duplicates": 2, "rejected": []}


def test_batch__two_variants_for_one_user_in_batch__first_wins_second_conflicts(api, experiment):
    response = post(api, {"events": [event(variant="treatment"), event(variant="control")]})
    body = response.json()
    assert (body["accepted"], [r["index"] for r in body["rejected"]]) == (1, [1])
    assert Assignment.objects.get().variant.key == "treatment"


def test_batch__empty__returns_200_nothing_accepted(api, experiment):
    assert post(api, {"events": []}).json() == {"accepted": 0, "duplicates": 0, "rejected": []}


@pytest.mark.parametrize(
    "body",
    [{}, {"events": "x"}, {"events": {"a": 1}}, {"events": [], "extra": 1}, [], {"events": [event()] * 1001}],
)
def test_batch__invalid_envelope__returns_400(api, experiment, body):
    response = post(api, body)
    assert response.status_code == 400
    assert "errors" in response.json()
    assert not Event.objects.exists()


def test_batch__1000_events__accepted(api, experiment):
    events = [event(user_key=f"user-{i}") for i in range(1000)]
    response = post(api, {"events": events})
    assert response.json()["accepted"] == 1000
    assert Event.objects.count() == 1000


def test_batch__missing_key__returns_401(client_without_key, experiment):
    response = post(client_without_key, {"events": [event()]})
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_batch__body_too_large__returns_413(api, experiment, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    response = post(api, {"events": [event(user_key=f"user-{i}") for i in range(200)]})
    assert response.status_code == 413
    assert not Event.objects.exists()


def test_batch__over_rate__returns_429(api, experiment, throttle_rate):
    throttle_rate("1/min")
    post(api, {"events": [event()]})
    response = post(api, {"events": [event(user_key="u2")]})
    assert response.status_code == 429
    assert "Retry-After" in response


def test_batch__query_count__constant_in_batch_size(api, experiment, django_assert_max_num_queries):
    # Given a batch of 300 exposures (new users) and 300 conversions (existing users)
    post(api, {"events": [event(user_key=f"u{i}") for i in range(300)]})
    events = [event(user_key=f"u{i}", event_type="conversion") for i in range(300)]
    events += [event(user_key=f"n{i}") for i in range(300)]
    # When it is sent, Then the number of queries does not grow with the number of events
    with django_assert_max_num_queries(12):
        response = post(api, {"events": events})
    assert response.json()["accepted"] == 600
