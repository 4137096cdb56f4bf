"""Ship guardrails through the real views and the admin: each blocking problem on its own refuses the ship (409),
an override ships it and is visible in the audit log, the decision, the timeline and the bundle; kill is never
blocked; a clean experiment ships without override."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from experiments import services
from experiments.models import AuditLog, Decision
from experiments.services import WorkflowError
from tests.governance.conftest import arm, end, send

pytestmark = pytest.mark.django_db

GUARDRAIL = [("conversion", "primary", "binary", "increase"), ("refund", "guardrail", "binary", "decrease")]


def _srm(running, api):
    # 300 vs 200 exposed on 50/50 weights (p ~ 8e-6); green converts 40% vs 10%: better
    e = running("srm-exp")
    send(api, arm(e, "control", 300, converted=30) + arm(e, "green", 200, converted=80))
    return e


def _guardrail(running, api):
    # Equal arms; primary better (10% -> 40%); refunds (decrease is good) 5% -> 30%: worse
    e = running("guardrail-exp", metrics=GUARDRAIL)
    events = arm(e, "control", 200, converted=20) + arm(e, "green", 200, converted=80)
    events += [ev for ev in arm(e, "control", 10, metric="refund", converted=10) if ev["event_type"] == "conversion"]
    events += [ev for ev in arm(e, "green", 60, metric="refund", converted=60) if ev["event_type"] == "conversion"]
    send(api, events)
    return e


def _primary(running, api):
    # Equal arms and equal rates: the primary metric is inconclusive
    e = running("primary-exp")
    send(api, arm(e, "control", 200, converted=20) + arm(e, "green", 200, converted=20))
    return e


def _sample(running, api):
    # Fixed-horizon plan needing ~14,700 users per arm (10% baseline, +10% MDE); 300 per arm, clearly better
    e = running("sample-exp", mde=0.1, baseline_rate=0.1)
    send(api, arm(e, "control", 300, converted=30) + arm(e, "green", 300, converted=120))
    return e


def _clean(running, api):
    e = running("clean-exp")
    send(api, arm(e, "control", 200, converted=20) + arm(e, "green", 200, converted=80))
    return e


SCENARIOS = {"srm": _srm, "guardrail_worse": _guardrail, "primary_not_better": _primary, "sample_not_reached": _sample}


def _decide(client, experiment, **data):
    return client.post(f"/experiments/{experiment.slug}/decide", data, HTTP_ACCEPT="application/json")


@pytest.mark.parametrize("problem", list(SCENARIOS))
def test_ship__single_blocking_problem__409_then_override_recorded_everywhere(problem, running, api, client, ops):
    # Given a read-out experiment with exactly one blocking problem, and ops logged in
    experiment = end(SCENARIOS[problem](running, api), ops)
    client.force_login(ops)
    # When ops ships it without an override on the decide endpoint
    refused = _decide(client, experiment, action="ship", rationale="Looks good.")
    # Then it is refused with 409 and exactly that problem, and nothing changed
    experiment.refresh_from_db()
    assert refused.status_code == 409
    assert (refused.json()["error"], refused.json()["problems"]) == ("ship_blocked", [problem])
    assert experiment.status == "readout" and not Decision.objects.filter(experiment=experiment).exists()
    # When ops ships it with an override reason
    shipped = client.post(
        f"/experiments/{experiment.slug}/decide",
        {"action": "ship", "rationale": "Ship it.", "variant": "green", "override_reason": "Leadership accepts it."},
    )
    # Then it ships and the override is in the audit row, the decision, the timeline and the decision bundle
    experiment.refresh_from_db()
    decision = Decision.objects.get(experiment=experiment)
    entry = AuditLog.objects.filter(experiment=experiment, transition="ship").get()
    override = {"reason": "Leadership accepts it.", "problems": [problem]}
    assert shipped.status_code == 302 and experiment.status == "shipped"
    assert entry.extra["override"] == override and entry.extra["variant"] == "green"
    assert (decision.override_reason, decision.shipped_variant.key) == ("Leadership accepts it.", "green")
    assert decision.readout_snapshot["decision"]["override"] == override
    history = client.get(f"/experiments/{experiment.slug}/history").content.decode()
    assert "OVERRIDE" in history and "Leadership accepts it." in history and problem in history
    bundle = zipfile.ZipFile(io.BytesIO(client.get(f"/experiments/{experiment.slug}/decision-bundle.zip").content))
    assert json.loads(bundle.read("readout.json"))["decision"]["override"] == override
    summary = bundle.read("summary.md").decode()
    assert "OVERRIDE" in summary and "Leadership accepts it." in summary and "## Deviations" in summary


@pytest.mark.parametrize("problem", list(SCENARIOS))
def test_ship__service_without_override__ship_blocked_with_that_code(problem, running, api, ops):
    experiment = end(SCENARIOS[problem](running, api), ops)
    with pytest.raises(WorkflowError) as err:
        services.experiment_ship(experiment=experiment, actor=ops, rationale="r")
    assert (err.value.code, err.value.problems) == ("ship_blocked", [problem])
    assert [d["code"] for d in err.value.details] == [problem]


def test_admin_ship__blocked__409_form_shows_problems_and_override_field(running, api, client, ops):
    # Given an experiment blocked by a worse guardrail
    experiment = end(_guardrail(running, api), ops)
    client.force_login(ops)
    url = f"/admin/experiments/experiment/{experiment.pk}/transition/ship/"
    # When ops opens the admin ship form
    page = client.get(url).content.decode()
    # Then it lists the blocking problem and offers an override-reason field
    assert 'data-code="guardrail_worse"' in page and 'name="override_reason"' in page
    # When ops applies it without an override: 409, the problems shown, nothing shipped
    blocked = client.post(url, {"variant": "green", "rationale": "Ship."})
    experiment.refresh_from_db()
    assert blocked.status_code == 409 and 'data-problems="guardrail_worse"' in blocked.content.decode()
    assert experiment.status == "readout"
    # When ops applies it with an override: shipped, and the decision admin shows the override
    done = client.post(url, {"variant": "green", "rationale": "Ship.", "override_reason": "Refunds are a known blip."})
    experiment.refresh_from_db()
    decision = Decision.objects.get(experiment=experiment)
    assert done.status_code == 302 and experiment.status == "shipped"
    admin_page = client.get(f"/admin/experiments/decision/{decision.pk}/change/").content.decode()
    assert "OVERRIDE" in admin_page and "Refunds are a known blip." in admin_page


@pytest.mark.parametrize("status", ["running", "readout"])
def test_kill__blocking_problems__never_blocked(status, running, api, client, ops):
    # Given an experiment with a sample-ratio mismatch (running, or read out)
    experiment = _srm(running, api)
    if status == "readout":
        experiment = end(experiment, ops)
    client.force_login(ops)
    # When ops kills it
    response = _decide(client, experiment, action="kill", rationale="Broken split.")
    # Then it is killed, with no override
    experiment.refresh_from_db()
    decision = Decision.objects.get(experiment=experiment)
    assert response.status_code == 200 and experiment.status == "killed"
    assert (decision.outcome, decision.override_reason, decision.shipped_variant) == ("killed", "", None)


def test_ship__clean_experiment__ships_without_override(running, api, client, ops):
    # Given a clean winner
    experiment = end(_clean(running, api), ops)
    client.force_login(ops)
    # When ops opens the decide page, then ships (one treatment: the variant may be left out)
    page = client.get(f"/experiments/{experiment.slug}/decide").content.decode()
    response = _decide(client, experiment, action="ship", rationale="Clear win.")
    # Then nothing blocked it and nothing was overridden
    experiment.refresh_from_db()
    decision = Decision.objects.get(experiment=experiment)
    entry = AuditLog.objects.get(experiment=experiment, transition="ship")
    assert "No blocking problem" in page
    assert response.status_code == 200 and experiment.status == "shipped"
    assert (decision.override_reason, decision.shipped_variant.key) == ("", "green")
    assert "override" not in entry.extra and decision.readout_snapshot["decision"]["override"] is None


def test_ship__several_treatments__variant_required_and_checked(running, api, ops):
    experiment = end(running("multi", variants=(("control", 1), ("green", 1), ("blue", 1))), ops)
    with pytest.raises(WorkflowError) as missing:
        services.experiment_ship(experiment=experiment, actor=ops, rationale="r")
    with pytest.raises(WorkflowError) as invalid:
        services.experiment_ship(experiment=experiment, actor=ops, rationale="r", variant="control")
    assert (missing.value.code, invalid.value.code) == ("missing_variant", "invalid_variant")


def test_decide__reviewer__403(running, api, client, make_user):
    experiment = running("forbidden")
    client.force_login(make_user("rev", groups=("reviewer",)))
    assert client.get(f"/experiments/{experiment.slug}/decide").status_code == 403


def test_approve__freezes_preregistration_with_power_plan(running):
    # Given an experiment approved with a fixed-horizon plan
    experiment = running("prereg", mde=0.1, baseline_rate=0.1, expected_daily_users=1000, dimensions=["country"])
    entry = AuditLog.objects.get(experiment=experiment, transition="approve_and_start")
    # Then the pre-registration holds the plan and its power plan, in the experiment and the audit row
    prereg = experiment.preregistration
    assert prereg["dimensions"] == ["country"] and prereg["analysis"] == "fixed" and prereg["mde"] == 0.1
    assert prereg["power_plan"]["users_per_arm"] > 10_000 and prereg["power_plan"]["expected_days"] > 20
    assert entry.extra == prereg
