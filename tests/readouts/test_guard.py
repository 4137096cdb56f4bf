"""The narrative guard holds each stated number to its quantity, its arm and its sign."""

from __future__ import annotations

import pytest

from readouts.guard import narrative_guard
from readouts.narrative import narrative_fallback_text, readout_numbers
from readouts.selectors import readout_get

pytestmark = pytest.mark.django_db


@pytest.fixture
def readout(make_experiment, add_events):
    # control 100/1000 = 10.00%, treatment 130/1000 = 13.00%: difference +3.00 pp, lift +30.00%
    exp = make_experiment("checkout", name="Checkout")
    add_events(exp, "control", exposures=1000, conversions=100)
    add_events(exp, "treatment", exposures=1000, conversions=130)
    return readout_get(experiment=exp)


def _numbers(readout) -> dict:
    return {**readout_numbers(readout), "experiment_name": readout.experiment_name}


def test_guard__faithful_sentences__pass(readout):
    n = _numbers(readout)
    comp = n["comparisons"][0]
    text = (
        f"Treatment converted 130 of 1,000 exposed users (13.00%) against 10.00% for control. "
        f"The difference is {comp['difference']}, a lift of +30.00%, with z = {comp['z']} and p = {comp['p_value']}. "
        f"Conversion rose by 3.00 pp."
    )
    assert narrative_guard(text, n) == []


@pytest.mark.parametrize(
    "claim",
    [
        "Treatment lowered conversion by -3.00 pp, a lift of -30.00%.",  # sign-flipped (explicit)
        "Treatment lowered conversion by 3.00 percentage points.",  # sign-flipped (by the verb)
        "Control converted at 13.00% and treatment at 10.00%.",  # swapped arms
        "Control: 130 of 1,000 users converted.",  # a count of the other arm
        "The test gives p = {z}.",  # z quoted as p
        "The relative lift is 13.00%.",  # a rate quoted as a lift
        "The difference was +30.00 pp.",  # a lift quoted as a difference
    ],
)
def test_guard__misattributed_number__flagged(readout, claim):
    n = _numbers(readout)
    text = claim.format(z=n["comparisons"][0]["z"])
    assert narrative_guard(text, n) != []


def test_guard__fallback_text_for_mean_metric__passes(make_experiment):
    from datetime import timedelta

    from experiments.models import ExperimentMetric
    from tests.readouts.conftest import T0
    from tracking.models import Event

    # Given a revenue (mean) metric
    exp = make_experiment("rev", metric="revenue")
    ExperimentMetric.objects.create(experiment=exp, key="revenue", role="primary", kind="mean")
    events = []
    for variant in exp.variants.all():
        for i in range(50):
            user = f"{variant.key}-{i}"
            at = T0 + timedelta(minutes=i)
            events.append(Event(experiment=exp, variant=variant, user_key=user, event_type="exposure", occurred_at=at))
            events.append(
                Event(
                    experiment=exp,
                    variant=variant,
                    user_key=user,
                    event_type="conversion",
                    metric="revenue",
                    value=float(i % 7) * (1.3 if variant.is_control else 1.6),
                    occurred_at=at + timedelta(minutes=5),
                )
            )
    Event.objects.bulk_create(events)
    readout = readout_get(experiment=exp)
    # Then the deterministic text passes the guard, and a sign-flipped difference does not
    n = _numbers(readout)
    assert narrative_guard(narrative_fallback_text(readout), n) == []
    flipped = n["comparisons"][0]["difference"].replace("+", "-")
    assert narrative_guard(f"Revenue per user changed by {flipped}.", n) != []
