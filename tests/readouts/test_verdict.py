"""The readout's headline per treatment (Won / Lost / Inconclusive / Untrustworthy) and the next step."""

from __future__ import annotations

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
