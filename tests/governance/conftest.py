"""Governance fixtures: experiments driven through the workflow services, events sent through the tracking API."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from experiments import services
from experiments.models import Experiment, ExperimentMetric, Variant
from tracking.models import ServiceAPIKey

BATCH_URL = "/api/track/batch"


@pytest.fixture
def ops(make_user):
    return make_user("ops", groups=("ops",), is_staff=True)


@pytest.fixture
def approver(make_user):
    return make_user("approver", groups=("reviewer",))


@pytest.fixture
def api():
    """A tracking API client authenticated with a fresh service key."""
    _, key = ServiceAPIKey.objects.create_key(name="governance-tests", scopes="track,read")  # read: the readout API
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def running(ops, approver):
    """running(slug, variants=(("control", 1), ("green", 1)), metrics=[(key, role, kind, direction)], **plan)."""

    def _make(slug="gov", *, variants=(("control", 1), ("green", 1)), metrics=(), **plan) -> Experiment:
        experiment = services.experiment_save_plan(
            experiment=Experiment(name=slug.title(), slug=slug, hypothesis="Green wins.", owner=ops, **plan), actor=ops
        )
        for i, (key, weight) in enumerate(variants):
            variant = Variant(experiment=experiment, key=key, name=key.title(), is_control=i == 0, weight=weight)
            services.variant_save(variant=variant, actor=ops)
        for key, role, kind, direction in metrics:
            metric = ExperimentMetric(experiment=experiment, key=key, role=role, kind=kind, direction=direction)
            services.experiment_metric_save(metric=metric, actor=ops)
        services.experiment_submit_for_review(experiment=experiment, actor=ops)
        services.experiment_approve_and_start(experiment=experiment, actor=approver)
        experiment.refresh_from_db()
        return experiment

    return _make


def send(api, events: list[dict]) -> list[dict]:
    """POST events in batches of 1000; returns the rejected items (error codes), e.g. variant conflicts."""
    rejected = []
    for i in range(0, len(events), 1000):
        body = json.dumps({"events": events[i : i + 1000]})
        response = api.post(BATCH_URL, data=body, content_type="application/json")
        assert response.status_code == 200, response.content
        rejected += response.json()["rejected"]
    return rejected


def exposure(experiment, variant, user, **extra) -> dict:
    return {"experiment": experiment.slug, "variant": variant, "user_key": user, "event_type": "exposure", **extra}


def conversion(experiment, variant, user, metric, **extra) -> dict:
    body = {"experiment": experiment.slug, "variant": variant, "user_key": user, "event_type": "conversion"}
    return {**body, "metric": metric, **extra}


def arm(experiment, variant, users: int, *, metric: str = "conversion", converted: int = 0, prefix: str = "") -> list:
    """`users` exposures in `variant`, the first `converted` of them converting on `metric`."""
    events = []
    for i in range(users):
        user = f"{prefix or variant}-{i}"
        events.append(exposure(experiment, variant, user))
        if i < converted:
            events.append(conversion(experiment, variant, user, metric))
    return events


def soon(minutes: int = 1) -> str:
    """A time just ahead of now (within the API's future tolerance), for exposures after a conversion."""
    return (timezone.now() + timedelta(minutes=minutes)).isoformat()


def end(experiment, ops) -> Experiment:
    services.experiment_end_for_readout(experiment=experiment, actor=ops)
    experiment.refresh_from_db()
    return experiment
