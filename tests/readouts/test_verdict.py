"""The readout's headline per treatment (Won / Lost / Inconclusive / Untrustworthy) and the next step."""

from __future__ import annotations

from datetime import timedelta

import pytest

from readouts.selectors import readout_get
from readouts.verdicts import readout_next_step
from readouts.verdicts import verdicts_get as readout_verdicts


@pytest.mark.parametrize(
    ("control", "treatment", "label"),
    [
        ((2000, 200), (2000, 300), "Won"),  # 10% → 15%
        ((2000, 300), (2000, 200), "Lost"),
        ((2000, 200), (2000, 210), "Inconclusive"),
        ((3000, 300), (2000, 300), "Untrustworthy"),  # 3000 vs 2000 at 50/50: sample-ratio mismatch
    ],
)
def test_readout_verdicts__primary_outcome__headline(make_experiment, add_events, control, treatment, label):
    # Given
    exp = make_experiment()
    add_events(exp, "control", exposures=control[0], conversions=control[1])
    add_events(exp, "treatment", exposures=treatment[0], conversions=treatment[1])
    # When
    [verdict] = readout_verdicts(readout_get(experiment=exp))
    # Then
    assert verdict.variant == "treatment" and verdict.title == label and verdict.label == label.lower()
    assert "purchase" in verdict.reason and "alpha 0.05" in verdict.reason


def test_readout_verdicts__decrease_metric__lower_is_a_win(make_experiment, add_events):
    from experiments.models import ExperimentMetric

    # Given a metric where lower is better (e.g. refunds)
    exp = make_experiment(metric="refund")
    ExperimentMetric.objects.create(experiment=exp, key="refund", role="primary", kind="binary", direction="decrease")
    add_events(exp, "control", exposures=2000, conversions=300)
    add_events(exp, "treatment", exposures=2000, conversions=200)
    # When
    [verdict] = readout_verdicts(readout_get(experiment=exp))
    # Then
    assert verdict.label == "won" and verdict.title == "Won"


def test_readout_next_step__readout_status_and_ops__ship_or_kill_link(make_experiment, add_events, make_user):
    from experiments.models import Experiment

    # Given an experiment waiting for a decision, seen by ops
    exp = make_experiment()
    add_events(exp, "control", exposures=500, conversions=50)
    add_events(exp, "treatment", exposures=500, conversions=80)
    Experiment.objects.filter(pk=exp.pk).update(started_at="2026-11-01T00:00:00Z", ended_at="2026-11-10T00:00:00Z")
    exp.refresh_from_db()
    exp.__dict__["status"] = "readout"
    readout = readout_get(experiment=exp)
    ops, reviewer = make_user("opsy", groups=("ops",)), make_user("rev", groups=("reviewer",))
    # When
    for_ops = readout_next_step(readout, user=ops, verdicts=readout_verdicts(readout))
    for_reviewer = readout_next_step(readout, user=reviewer, verdicts=readout_verdicts(readout))
    # Then
    assert "ship or kill" in for_ops.text and for_ops.url == f"/experiments/{exp.slug}/decide"
    assert for_reviewer.url == "" and "Waiting for ops" in for_reviewer.text


# --- issue 17: one verdict, computed once (readouts/verdicts.py) ------------------------------------------
def _guarded(make_experiment, add_events, *, refunds=(20, 90), mde=None, analysis="fixed"):
    """purchase 10% → 15% (a win); refunds among the first users of each arm (control, treatment)."""
    from experiments.models import Experiment, ExperimentMetric

    exp = make_experiment("guarded")
    ExperimentMetric.objects.create(experiment=exp, key="purchase", role="primary", kind="binary", direction="increase")
    ExperimentMetric.objects.create(experiment=exp, key="refund", role="guardrail", kind="binary", direction="decrease")
    from tracking.models import Event

    Experiment.objects.filter(pk=exp.pk).update(mde=mde, baseline_rate=0.1 if mde else None, analysis=analysis)
    exp.refresh_from_db()
    exp.__dict__["status"] = "readout"  # as the workflow leaves it (status changes only through transitions)
    add_events(exp, "control", exposures=2000, conversions=200)
    add_events(exp, "treatment", exposures=2000, conversions=300)
    refund_events = []
    for key, n in zip(("control", "treatment"), refunds, strict=True):
        exposures = Event.objects.filter(experiment=exp, variant__key=key, event_type="exposure").order_by("-id")[:n]
        refund_events += [
            Event(
                experiment=exp,
                variant_id=e.variant_id,
                user_key=e.user_key,
                event_type="conversion",
                metric="refund",
                occurred_at=e.occurred_at + timedelta(hours=1),
            )
            for e in exposures
        ]
    Event.objects.bulk_create(refund_events)
    return exp


def test_verdicts__winner_with_worse_guardrail__won_ship_blocked_by_guardrail(make_experiment, add_events):
    from readouts.verdicts import verdicts_get

    # Given a win on purchase whose refund guardrail got worse (1% → 4.5%)
    exp = _guarded(make_experiment, add_events)
    # When
    [v] = verdicts_get(readout_get(experiment=exp))
    # Then the label stays "won" and the headline says exactly what blocks the ship
    assert (v.label, v.blocked_by) == ("won", ("guardrail_worse",))
    assert v.headline == "Won — ship blocked by guardrail refund"
    assert "guardrail refund got worse" in v.reason
    assert v.as_json() == {
        "variant": "treatment",
        "label": "won",
        "reason": v.reason,
        "blocked_by": ["guardrail_worse"],
    }


def test_verdicts__winner_below_planned_sample__blocked_until_it_is_reached(make_experiment, add_events):
    from readouts.verdicts import verdicts_get

    # Given a fixed-horizon win with no refund problem, but a plan (MDE +5% relative) far beyond 2,000 per arm
    exp = _guarded(make_experiment, add_events, refunds=(20, 20), mde=0.05)
    # When
    [v] = verdicts_get(readout_get(experiment=exp))
    # Then the ship block reads as a sentence, not "blocked by the planned sample not yet reached"
    assert v.blocked_by == ("sample_not_reached",)
    assert v.headline == "Won — ship blocked until the planned sample is reached"


def test_verdicts__guardrail_and_sample__both_named_in_one_headline(make_experiment, add_events):
    from readouts.verdicts import verdicts_get

    exp = _guarded(make_experiment, add_events, mde=0.05)
    [v] = verdicts_get(readout_get(experiment=exp))
    assert v.blocked_by == ("guardrail_worse", "sample_not_reached")
    assert v.headline == "Won — ship blocked by guardrail refund, and until the planned sample is reached"


def test_verdicts__srm__untrustworthy_whatever_the_outcome_and_outcome_kept(make_experiment, add_events):
    from readouts.verdicts import verdicts_get

    # Given a 3000 vs 2000 split at 50/50 weights, with the treatment clearly "better"
    exp = make_experiment()
    add_events(exp, "control", exposures=3000, conversions=300)
    add_events(exp, "treatment", exposures=2000, conversions=400)
    readout = readout_get(experiment=exp)
    # When
    [v] = verdicts_get(readout)
    # Then the verdict is untrustworthy, the srm block holds, and the computed outcome is untouched
    assert v.label == "untrustworthy" and v.headline == "Untrustworthy" and "srm" in v.blocked_by
    assert readout.comparisons[0].outcome == "better"


def test_readout_api__verdicts__one_per_treatment_and_outcome_kept(client, make_user, make_experiment, add_events):
    # Given an SRM experiment with two treatments, read through the API
    exp = make_experiment(variants=(("control", True, 1), ("a", False, 1), ("b", False, 1)))
    add_events(exp, "control", exposures=3000, conversions=300)
    add_events(exp, "a", exposures=2000, conversions=400)
    add_events(exp, "b", exposures=2000, conversions=200)
    client.force_login(make_user("api-reader", groups=("reviewer",)))
    # When
    body = client.get(f"/api/experiments/{exp.slug}/readout").json()
    # Then
    assert [(v["variant"], v["label"]) for v in body["verdicts"]] == [("a", "untrustworthy"), ("b", "untrustworthy")]
    assert set(body["verdicts"][0]) == {"variant", "label", "reason", "blocked_by"}
    assert body["comparisons"][0]["outcome"] == "better"  # the JSON keeps the computed outcome
    assert "e-" not in body["verdicts"][0]["reason"]


@pytest.mark.parametrize(
    ("treatment", "mde", "expected"),
    [
        # a clear result at the always-valid interval: ready to decide, at any sample size
        (600, 0.05, "Ready to decide (a clear result at the always-valid interval)"),
        # inconclusive below the planned sample: keep collecting
        (205, 0.05, "Keep collecting: no difference yet; the plan's sample is not reached"),
        # inconclusive at or past the planned sample (MDE +100% needs ~200 a arm): no effect of the planned size
        (205, 1.0, "Ready to decide (no detectable effect of the planned size)"),
    ],
)
def test_readout_next_step__sequential_running__by_result_and_plan(
    make_experiment, add_events, make_user, treatment, mde, expected
):
    from experiments.models import Experiment
    from readouts.verdicts import verdicts_get

    # Given a running sequential experiment with a power plan
    exp = make_experiment()
    Experiment.objects.filter(pk=exp.pk).update(analysis="sequential", mde=mde, baseline_rate=0.1)
    exp.refresh_from_db()
    exp.__dict__["status"] = "running"
    add_events(exp, "control", exposures=2000, conversions=200)
    add_events(exp, "treatment", exposures=2000, conversions=treatment)
    readout = readout_get(experiment=exp)
    # When
    step = readout_next_step(readout, user=make_user("seq-ops", groups=("ops",)), verdicts=verdicts_get(readout))
    # Then
    assert step.text.startswith(expected), step.text


def test_check_value__p_value_share_and_count__in_words():
    from readouts import formatting

    assert formatting.check_value("srm", 6.07e-10) == "< 0.001"
    assert formatting.check_value("covariate_imbalance", 0.0042) == "0.004"
    assert formatting.check_value("variant_conflicts", 0.0123) == "1.23%"
    assert formatting.check_value("peeking", 1234) == "1,234"
    assert formatting.check_value("srm", None) == "—"
    assert formatting.p_equals(6.07e-10) == "< 0.001" and formatting.p_equals(0.25) == "= 0.250"
