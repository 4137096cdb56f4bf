"""API keys: the create_api_key command and the bearer authentication."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from tests.tracking.conftest import event
from tracking.auth import APIKeyAuthentication, ServicePrincipal
from tracking.models import ServiceAPIKey

pytestmark = pytest.mark.django_db


def test_create_api_key__name__prints_key_once_on_last_line_and_stores_only_hash(experiment):
    # When a key is created
    out = io.StringIO()
    call_command("create_api_key", "checkout-service", stdout=out)
    key = out.getvalue().strip().splitlines()[-1]
    # Then the last line is the key, only its hash is stored, and the key works
    stored = ServiceAPIKey.objects.get(name="checkout-service")
    assert key.startswith(stored.prefix + ".")
    assert key not in stored.hashed_key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    response = client.post("/api/track", data=json.dumps(event()), content_type="application/json")
    assert response.status_code == 201


@pytest.mark.parametrize("name", ["", "x" * 51])
def test_create_api_key__bad_name__fails(name):
    with pytest.raises(CommandError):
        call_command("create_api_key", name, stdout=io.StringIO())
    assert not ServiceAPIKey.objects.exists()


def test_api_key_authentication__valid_key__principal_without_permissions(api_key):
    # Given a request carrying a valid key
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    request = Request(APIRequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {api_key[1]}"))
    # When it is authenticated
    user, auth = APIKeyAuthentication().authenticate(request)
    # Then the user is the service, authenticated but with no permissions, and its name is on the request
    assert isinstance(user, ServicePrincipal)
    assert (user.is_authenticated, user.is_staff, user.has_perm("experiments.view_experiment")) == (True, False, False)
    assert auth == api_key[0]
    assert request._request.api_key_name == "checkout-service"


def test_api_key_authentication__expired_key__returns_401(experiment):
    from django.utils import timezone

    _, key = ServiceAPIKey.objects.create_key(name="old", expiry_date=timezone.now() - timezone.timedelta(days=1))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    response = client.post("/api/track", data=json.dumps(event()), content_type="application/json")
    assert response.status_code == 401
