"""API key scopes (issue 11: "any tracking API key can read every readout"): `track` keys track and
assign, `read` keys read readouts; keys created before scopes existed are `track` keys."""

from __future__ import annotations

import io
from importlib import import_module

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from tests.experiments import conftest as workflow
from tracking.models import ServiceAPIKey

pytestmark = pytest.mark.django_db

# The workflow fixtures (users in each role, experiments driven through the services).
approver, make_experiment, ops, workflow_groups = (
    workflow.approver,
    workflow.make_experiment,
    workflow.ops,
    workflow.workflow_groups,
)


def _api(scopes: str) -> APIClient:
    _, key = ServiceAPIKey.objects.create_key(name=f"svc-{scopes}", scopes=scopes)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return api


@pytest.fixture
def running(make_experiment):
    return make_experiment("scoped", status="running")


def _track(api, experiment):
    body = {"experiment": experiment.slug, "variant": "control", "user_key": "u1", "event_type": "exposure"}
    return api.post("/api/track", body, format="json")


def test_track_key__readout_api__403_but_tracks(running):
    api = _api("track")
    assert api.get(f"/api/experiments/{running.slug}/readout").status_code == 403
    assert _track(api, running).status_code == 201


def test_read_key__readout_api__200_but_cannot_track_or_assign(running):
    api = _api("read")
    assert api.get(f"/api/experiments/{running.slug}/readout").status_code == 200
    assert _track(api, running).status_code == 403
    assert api.post("/api/track/batch", {"events": []}, format="json").status_code == 403
    assert api.post("/api/assign", {"experiment": running.slug, "user_key": "u1"}, format="json").status_code == 403


def test_track_and_read_key__both(running):
    api = _api("track,read")
    assert api.get(f"/api/experiments/{running.slug}/readout").status_code == 200
    assert _track(api, running).status_code == 201


def test_scopes__invalid_value__integrity_error():
    from django.db import IntegrityError, transaction

    api_key, _ = ServiceAPIKey.objects.create_key(name="svc")
    with pytest.raises(IntegrityError), transaction.atomic():
        ServiceAPIKey.objects.filter(pk=api_key.pk).update(scopes="admin")


def test_create_api_key__scope_options__stored():
    out = io.StringIO()
    call_command("create_api_key", "default-svc", stdout=out)
    call_command("create_api_key", "reader-svc", "--scope", "read", stdout=out)
    call_command("create_api_key", "both-svc", "--scope", "read", "--scope", "track", stdout=out)
    scopes = dict(ServiceAPIKey.objects.values_list("name", "scopes"))
    assert scopes == {"default-svc": "track", "reader-svc": "read", "both-svc": "track,read"}
    assert "scopes track,read" in out.getvalue()


def test_migration__existing_keys__track_only():
    # The field's default is what the migration gives existing rows.
    migration = import_module("tracking.migrations.0005_serviceapikey_scopes")
    (add_field,) = [op for op in migration.Migration.operations if getattr(op, "name", "") == "scopes"]
    assert add_field.field.default == "track"
