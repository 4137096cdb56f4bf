"""Health checks: each made ok, warn and fail (where it has them) from events sent through the tracking API."""

from __future__ import annotations

import pytest

from readouts.governance import CHECK_CODES
from readouts.models import ReadoutView
from tests.governance.conftest import arm, conversion, exposure, send, soon

pytestmark = pytest.mark.django_db

URL = "/api/experiments/{slug}/readout"


def _checks(client, experiment) -> dict[str, dict]:
    response = client.get(URL.format(slug=experiment.slug))
    assert response.status_code == 200, response.content
    body = response.json()
    assert [c["code"] for c in body["checks"]] == list(CHECK_CODES)  # always all, in order
    return {c["code"]: c for c in body["checks"]}


@pytest.fixture
def reader(api):
    """Reads the readout with the API key: not a person, so it is never counted as peeking."""
    return api


# --- srm ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("control", "green", "status"), [(200, 200, "ok"), (300, 200, "fail")])
def test_srm__exposures_against_weights__ok_or_fail(running, api, reader, control, green, status):
    # Given 50/50 weights and exposures sent through the API
    experiment = running()
    send(api, arm(experiment, "control", control) + arm(experiment, "green", green))
    # When the readout is read
    check = _checks(reader, experiment)["srm"]
    # Then a chi-square p below 0.001 fails (300 vs 200: p ~ 8e-6)
    assert check["status"] == status
    assert check["threshold"] == {"fail": 0.001}
    assert (check["value"] < 0.001) is (status == "fail")


# --- conversions without exposure ---------------------------------------------------------------------------
@pytest.mark.parametrize(("unexposed", "late", "status"), [(0, 0, "ok"), (1, 1, "warn"), (4, 4, "fail")])
def test_conversions_without_exposure__share_of_uncounted__ok_warn_fail(running, api, reader, unexposed, late, status):
    # Given 100 counted conversions, plus conversions from users never exposed and users converting before exposure
    experiment = running()
    events = arm(experiment, "control", 100, converted=50) + arm(experiment, "green", 100, converted=50)
    events += [conversion(experiment, "control", f"ghost-{i}", "conversion") for i in range(unexposed)]
    for i in range(late):
        events += [
            conversion(experiment, "green", f"late-{i}", "conversion"),
            exposure(experiment, "green", f"late-{i}", occurred_at=soon()),
        ]
    send(api, events)
    # When the readout is read
    check = _checks(reader, experiment)["conversions_without_exposure"]
    # Then the share of uncounted conversion events decides: 2/102 = 2% warns (> 1%), 8/108 = 7% fails (> 5%)
    uncounted = unexposed + late
    assert check["status"] == status
    assert check["value"] == pytest.approx(uncounted / (100 + uncounted))
    assert check["threshold"] == {"warn": 0.01, "fail": 0.05}


# --- variant conflicts --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("conflicting", "status"), [(0, "ok"), (3, "warn"), (11, "fail")])
def test_variant_conflicts__above_thresholds__warn_then_fail(running, api, reader, conflicting, status):
    # Given 200 exposed users and `conflicting` of them reported in the other variant
    experiment = running()
    send(api, arm(experiment, "control", 100) + arm(experiment, "green", 100))
    again = [exposure(experiment, "green", f"control-{i}") for i in range(conflicting)]
    again += [conversion(experiment, "green", f"control-{i}", "conversion") for i in range(conflicting)]  # same users
    rejected = send(api, again)
    assert [r["error"] for r in rejected] == ["variant_conflict"] * (2 * conflicting)
    # When the readout is read
    checks = _checks(reader, experiment)
    check = checks["variant_conflicts"]
    # Then distinct users count (one user, two conflicts: once) over the exposed users left in the readout (users
    # exposed to both variants are left out): 3/197 = 1.5% warns (> 1%), 11/189 = 5.8% fails
    assert (check["status"], check["threshold"]) == (status, {"warn": 0.01, "fail": 0.05})
    assert check["value"] == pytest.approx(conflicting / (200 - conflicting))
    # and they are the multiple_exposures check's users (3/197 warns, 11/189 is above 5%: fails)
    assert (checks["multiple_exposures"]["status"], checks["multiple_exposures"]["value"]) == (status, conflicting)


# --- covariate imbalance ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("shift", "status"), [(0.0, "ok"), (5.0, "warn")])
def test_covariate_imbalance__pre_exposure_means__ok_or_warn(running, api, reader, shift, status):
    # Given exposures with a pre-exposure covariate, the green arm's shifted by `shift`
    experiment = running()
    events = [
        exposure(experiment, key, f"{key}-{i}", covariates={"conversion": (i % 10) + (shift if key == "green" else 0)})
        for key in ("control", "green")
        for i in range(100)
    ]
    send(api, events)
    # When the readout is read
    check = _checks(reader, experiment)["covariate_imbalance"]
    # Then a Welch p below 0.001 between the arms' pre-exposure means warns (randomisation or logging broke)
    assert check["status"] == status
    assert check["threshold"] == {"warn": 0.001}
    assert (check["value"] < 0.001) is (status == "warn")


def test_covariate_imbalance__no_covariates__ok_and_says_why(running, api, reader):
    experiment = running()
    send(api, arm(experiment, "control", 10) + arm(experiment, "green", 10))
    check = _checks(reader, experiment)["covariate_imbalance"]
    assert (check["status"], check["value"]) == ("ok", None) and "no covariates" in check["message"]


# --- sample progress ---------------------------------------------------------------------------------------------
PLAN = {"mde": 0.5, "baseline_rate": 0.5, "power": 0.8, "alpha": 0.05}  # about 58 users per arm


@pytest.mark.parametrize(("users", "status"), [(30, "warn"), (80, "ok")])
def test_sample_progress__fixed_analysis__warns_below_planned_users(running, api, reader, users, status):
    # Given a fixed-horizon plan needing ~58 users per arm
    experiment = running(**PLAN)
    send(api, arm(experiment, "control", users) + arm(experiment, "green", users))
    # When the readout is read
    check = _checks(reader, experiment)["sample_progress"]
    planned = reader.get(URL.format(slug=experiment.slug)).json()["plan"]["users_per_arm"]
    # Then the smallest arm's share of its planned users decides
    assert check["status"] == status
    assert check["value"] == pytest.approx(users / planned)


def test_sample_progress__sequential__ok_with_reason(running, api, reader):
    experiment = running(analysis="sequential", **PLAN)
    send(api, arm(experiment, "control", 10) + arm(experiment, "green", 10))
    check = _checks(reader, experiment)["sample_progress"]
    assert check["status"] == "ok" and "sequential" in check["message"].lower()


# --- peeking -------------------------------------------------------------------------------------------------
def test_peeking__fixed__session_views_while_running_warn(running, api, reader, client, ops):
    # Given a running fixed-horizon experiment, read once with an API key (a service: not counted)
    experiment = running()
    send(api, arm(experiment, "control", 10) + arm(experiment, "green", 10))
    assert _checks(reader, experiment)["peeking"]["status"] == "ok"
    # When a person opens the readout page and the API with their session
    client.force_login(ops)
    assert client.get(f"/experiments/{experiment.slug}/readout").status_code == 200
    check = _checks(client, experiment)["peeking"]
    # Then each view was recorded, and the check warns with the count (the page view and this API view)
    assert ReadoutView.objects.filter(experiment=experiment, status_at_view="running").count() == 2
    assert (check["status"], check["value"], check["threshold"]) == ("warn", 2, {"warn": 0})


def test_peeking__sequential__ok_even_when_looked_at(running, api, client, ops):
    experiment = running(analysis="sequential")
    client.force_login(ops)
    check = _checks(client, experiment)["peeking"]
    assert (check["status"], check["value"]) == ("ok", 1)


def test_peeking__views_after_the_end__not_peeks(running, api, reader, client, ops):
    from tests.governance.conftest import end

    experiment = end(running(), ops)
    client.force_login(ops)
    check = _checks(client, experiment)["peeking"]
    assert (check["status"], check["value"]) == ("ok", 0)
