"""The readout bundle recorded with a decision is downloadable and frozen at decision time."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.utils import timezone

from experiments import services
from tracking.models import Event

pytestmark = pytest.mark.django_db


def _exposures(experiment, variant_key: str, n: int, *, offset: int = 0) -> None:
    variant = experiment.variants.get(key=variant_key)
    Event.objects.bulk_create(
        Event(
            experiment=experiment,
            variant=variant,
            user_key=f"{variant_key}-{offset + i}",
            event_type="exposure",
            metric="",
            occurred_at=timezone.now(),
            props={},
        )
        for i in range(n)
    )


def test_decision_bundle__after_late_events__still_shows_numbers_at_decision_time(client, make_experiment, ops):
    # Given an experiment in readout with 30 + 20 exposed users, shipped by ops
    experiment = make_experiment("bundle-exp", status="readout")
    _exposures(experiment, "control", 30)
    _exposures(experiment, "green", 20)
    services.experiment_ship(
        experiment=experiment, actor=ops, rationale="Evidence attached.", override_reason="No conversions logged yet."
    )
    # And late events arriving after the decision
    _exposures(experiment, "control", 7, offset=1000)
    client.force_login(ops)
    # When the decision's bundle is downloaded from the timeline
    history = client.get("/experiments/bundle-exp/history").content.decode()
    assert "/experiments/bundle-exp/decision-bundle.zip" in history
    response = client.get("/experiments/bundle-exp/decision-bundle.zip")
    # Then it is a zip whose readout still has the numbers the decision was based on
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert 'filename="bundle-exp-decision-' in response["Content-Disposition"]
    bundle = zipfile.ZipFile(io.BytesIO(response.content))
    readout = json.loads(bundle.read("readout.json"))
    exposures = {v["key"]: v["exposures"] for v in readout["variants"]}
    assert exposures == {"control": 30, "green": 20}
    assert "query.sql" in bundle.namelist()
    # And it records the override with the problem it overrode
    assert readout["decision"]["override"] == {
        "reason": "No conversions logged yet.",
        "problems": ["primary_not_better"],
    }
    assert "OVERRIDE" in bundle.read("summary.md").decode()


def test_decision_bundle__no_decision__404(client, make_experiment, ops):
    make_experiment("undecided", status="readout")
    client.force_login(ops)
    assert client.get("/experiments/undecided/decision-bundle.zip").status_code == 404


def test_decision_bundle__anonymous__redirected_to_login(client, make_experiment):
    make_experiment("private-exp", status="shipped")
    response = client.get("/experiments/private-exp/decision-bundle.zip")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
