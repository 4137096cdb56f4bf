"""Fixtures for the tracking API: a running experiment, an API key, an authenticated client."""

from __future__ import annotations

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from experiments.models import Experiment, Variant
from tracking.models import ServiceAPIKey


def set_status(experiment, status: str) -> None:
    """Put an experiment in any status directly, bypassing the workflow (the status field is protected
    from assignment and from QuerySet.update); sets the timestamps the status constraints require."""
    now = timezone.now()
    started = now if status not in ("draft", "review") else None
    ended = now if status in ("readout", "shipped", "killed") else None
    Experiment.objects.filter(pk=experiment.pk).update(started_at=started, ended_at=ended)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {connection.ops.quote_name(Experiment._meta.db_table)} SET status = %s WHERE id = %s",
            [status, experiment.pk],
        )


def make_experiment(
    owner, slug: str = "checkout", *, status: str = "running", weights=(("control", 1), ("treatment", 1))
):
    experiment = Experiment.objects.create(name=slug.title(), slug=slug, owner=owner, primary_metric="purchase")
    for index, (key, weight) in enumerate(weights):
        Variant.objects.create(experiment=experiment, key=key, name=key.title(), weight=weight, is_control=index == 0)
    set_status(experiment, status)
    experiment.refresh_from_db()
    return experiment


@pytest.fixture
def owner(make_user):
    return make_user("owner")


@pytest.fixture
def experiment(owner):
    return make_experiment(owner)


@pytest.fixture
def api_key():
    """(ServiceAPIKey, plaintext key)."""
    return ServiceAPIKey.objects.create_key(name="checkout-service")


@pytest.fixture
def client_without_key():
    return APIClient()


@pytest.fixture
def api(api_key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key[1]}")
    return client


@pytest.fixture
def throttle_rate(settings):
    """Set the per-key throttle rate for one test: throttle_rate("2/min")."""

    def _set(rate: str) -> None:
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api_key": rate}}

    return _set


def event(**over):
    body = {"experiment": "checkout", "variant": "control", "user_key": "u1", "event_type": "exposure"}
    body.update(over)
    return {k: v for k, v in body.items() if v is not ...}
