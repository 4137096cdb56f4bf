"""POST /api/track through the full Django stack: every response code of the contract."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.utils import timezone

from experiments.models import Experiment
from tests.tracking.conftest import event, make_experiment
from tracking.models import Assignment, Event, VariantConflict

pytestmark = pytest.mark.django_db
URL = "/api/track"


def post(client, body, **kwargs):
    return client.post(URL, data=json.dumps(body), content_type="application/json", **kwargs)


# --- 201 / 200 ------------------------------------------------------------------------------------
def test_track__new_exposure__returns_201_created_and_fixes_assignment(api, experiment):
    # Given a running experiment
    # When a first exposure arrives
    response = post(api, event())
    # Then it is stored and the user's variant is fixed from it
    assert response.status_code == 201
    assert response.json() == {"status": "created", "duplicate": False}
    stored = Event.objects.get()
    assert (stored.user_key, stored.event_type, stored.metric, stored.variant.key) == ("u1", "exposure", "", "control")
    assignment = Assignment.objects.get()
    assert (assignment.variant.key, assignment.source) == ("control", "upstream")


def test_track__duplicate_event__returns_200_duplicate(api, experiment):
    # Given a stored exposure
    post(api, event())
    # When the same exposure is sent again, saying another time
    response = post(api, event(occurred_at=experiment.started_at.isoformat()))
    # Then it is reported as a duplicate and not stored twice
    assert response.status_code == 200
    assert response.json() == {"status": "duplicate", "duplicate": True}
    assert Event.objects.count() == 1


def test_track__conversion_without_metric__stored_under_primary_metric(api, experiment):
    # When a conversion without a metric arrives before any exposure
    response = post(api, event(event_type="conversion", value=12.5, props={"plan": "pro"}))
    # Then it is stored (out of order is fine) under the primary metric, and assigns nobody
    assert response.status_code == 201
    stored = Event.objects.get()
    assert (stored.metric, stored.value, stored.props) == ("purchase", 12.5, {"plan": "pro"})
    assert not Assignment.objects.exists()


def test_track__conversions_of_two_metrics__both_created(api, experiment):
    # When a user converts on two metrics
    codes = [post(api, event(event_type="conversion", metric=m)).status_code for m in ("purchase", "signup")]
    # Then both are stored
    assert codes == [201, 201]
    assert sorted(Event.objects.values_list("metric", flat=True)) == ["purchase", "signup"]


def test_track__occurred_at__stored_as_given(api, experiment):
    # Given an experiment running since 2026-01-01
    Experiment.objects.filter(pk=experiment.pk).update(started_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    # When an event says when it happened
    post(api, event(occurred_at="2026-03-01T10:00:00+02:00"))
    # Then that time is stored (in UTC)
    assert Event.objects.get().occurred_at == dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)


# --- 400 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "field"),
    [
        (event(extra="x"), "extra"),
        ({**event(), "\ud800": 1}, "\ud800"),
        (event(event_type="\ud800"), "event_type"),
        (event(user_key=""), "user_key"),
        (event(user_key="x" * 256), "user_key"),
        (event(user_key=42), "user_key"),
        (event(user_key="a\x00b"), "user_key"),
        (event(user_key=...), "user_key"),
        (event(event_type="click"), "event_type"),
        (event(event_type=["exposure"]), "event_type"),
        (event(metric="purchase"), "metric"),
        (event(event_type="conversion", metric="not a slug"), "metric"),
        (event(value="12"), "value"),
        (event(value=True), "value"),
        (event(occurred_at="yesterday"), "occurred_at"),
        (event(occurred_at=1700000000), "occurred_at"),
        (event(props=[1, 2]), "props"),
        (event(props={"big": "x" * 9000}), "props"),
        (event(variant="nope"), "variant"),
        (event(experiment=None), "experiment"),
    ],
)
def test_track__invalid_input__returns_400_with_field_errors(api, experiment, body, field):
    # When an event is invalid
    response = post(api, body)
    # Then 400 names the field, and nothing is stored
    assert response.status_code == 400
    assert field in response.json()["errors"]
    assert not Event.objects.exists()


def test_track__occurred_at_too_far_in_future__returns_400(api, experiment):
    # Given a time 10 minutes ahead (more than the 5 minutes of clock skew allowed)
    future = (timezone.now() + dt.timedelta(minutes=10)).isoformat()
    # When it is sent
    response = post(api, event(occurred_at=future))
    # Then it is refused
    assert response.status_code == 400
    assert "occurred_at" in response.json()["errors"]


def test_track__malformed_json__returns_400(api, experiment):
    response = api.post(URL, data='{"experiment": ', content_type="application/json")
    assert response.status_code == 400
    assert "non_field_errors" in response.json()["errors"]


def test_track__body_not_an_object__returns_400(api, experiment):
    response = post(api, [event()])
    assert response.status_code == 400
    assert "non_field_errors" in response.json()["errors"]


def test_track__nan_value__returns_400(api, experiment):
    response = api.post(URL, data=json.dumps(event(value=float("nan"))), content_type="application/json")
    assert response.status_code == 400


# --- 401 ------------------------------------------------------------------------------------------
def test_track__missing_key__returns_401_with_www_authenticate(client_without_key, experiment):
    response = post(client_without_key, event())
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"] == "not_authenticated"
    assert not Event.objects.exists()


@pytest.mark.parametrize("header", ["Bearer nope", "Bearer abc.def", "Bearer", "Bearer a b", "Token abc.def"])
def test_track__invalid_key__returns_401(client_without_key, experiment, api_key, header):
    response = post(client_without_key, event(), HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_track__revoked_key__returns_401(api, api_key, experiment):
    # Given a key revoked in the admin
    api_key[0].revoked = True
    api_key[0].save()
    # When it is used
    response = post(api, event())
    # Then it no longer works
    assert response.status_code == 401
    assert response.json()["error"] == "authentication_failed"


def test_track__tampered_secret__returns_401(client_without_key, api_key, experiment):
    prefix = api_key[1].split(".")[0]
    response = post(client_without_key, event(), HTTP_AUTHORIZATION=f"Bearer {prefix}.wrongsecret")
    assert response.status_code == 401


def test_track__anonymous__not_redirected_to_login(client_without_key):
    response = client_without_key.post(URL, data="{}", content_type="application/json")
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"


# --- 404 / 409 ------------------------------------------------------------------------------------
def test_track__unknown_experiment__returns_404(api, experiment):
    response = post(api, event(experiment="nope"))
    assert response.status_code == 404
    assert response.json()["error"] == "experiment_not_found"


@pytest.mark.parametrize("status", ["draft", "review", "readout", "shipped", "killed"])
def test_track__experiment_not_running__returns_409(api, owner, status):
    # Given an experiment that is not running
    make_experiment(owner, "paused", status=status)
    # When an event is sent for it
    response = post(api, event(experiment="paused"))
    # Then it is refused
    assert response.status_code == 409
    assert response.json()["error"] == "experiment_not_running"
    assert not Event.objects.exists()


def test_track__exposure_in_other_variant__returns_409_conflict_and_counts_it(api, experiment):
    # Given a user exposed to control
    post(api, event())
    # When the same exposure arrives with another variant (a repeat, but in the wrong variant)
    response = post(api, event(variant="treatment"))
    again = post(api, event(variant="treatment"))
    # Then the conflict wins over "duplicate", is not stored, and is counted once for the readout
    assert response.status_code == 409 and again.status_code == 409
    assert response.json()["error"] == "variant_conflict"
    assert Event.objects.count() == 1
    conflict = VariantConflict.objects.get()
    assert (conflict.assigned_variant.key, conflict.reported_variant.key, conflict.user_key) == (
        "control",
        "treatment",
        "u1",
    )


def test_track__conversion_in_other_variant__returns_409(api, experiment):
    post(api, event())
    response = post(api, event(variant="treatment", event_type="conversion"))
    assert response.status_code == 409
    assert response.json()["error"] == "variant_conflict"


def test_track__hash_assigned_user_exposed_elsewhere__returns_409(api, experiment):
    # Given a user assigned by POST /api/assign
    assigned = api.post("/api/assign", {"experiment": "checkout", "user_key": "u1"}, format="json").json()["variant"]
    other = "treatment" if assigned == "control" else "control"
    # When an exposure reports the other variant
    response = post(api, event(variant=other))
    # Then it conflicts
    assert response.status_code == 409


# --- 413 / 429 / 405 ------------------------------------------------------------------------------
def test_track__body_too_large__returns_413(api, experiment):
    body = json.dumps(event(props={"pad": "x" * 70_000}))
    response = api.post(URL, data=body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["error"] == "request_too_large"


def test_track__over_rate__returns_429_with_retry_after(api, experiment, throttle_rate):
    # Given a rate of 2 requests a minute per key
    throttle_rate("2/min")
    # When a third request arrives within the minute
    codes = [post(api, event(user_key=f"u{i}")).status_code for i in range(3)]
    # Then it is throttled and told when to retry
    last = post(api, event(user_key="u9"))
    assert codes == [201, 201, 429]
    assert last.status_code == 429
    assert 1 <= int(last["Retry-After"]) <= 60
    assert last.json()["error"] == "throttled"


def test_track__throttle__counts_per_key(api, client_without_key, experiment, throttle_rate):
    # Given one key has used its whole allowance
    from tracking.models import ServiceAPIKey

    throttle_rate("1/min")
    assert post(api, event()).status_code == 201
    _, other_key = ServiceAPIKey.objects.create_key(name="other-service")
    # When another key sends
    response = post(client_without_key, event(user_key="u2"), HTTP_AUTHORIZATION=f"Bearer {other_key}")
    # Then it has its own allowance
    assert response.status_code == 201


def test_track__get__returns_405(api):
    response = api.get(URL)
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


def test_track__form_encoded__returns_415(api, experiment):
    response = api.post(URL, data="experiment=checkout", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
