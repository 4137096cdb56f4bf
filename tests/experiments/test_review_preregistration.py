"""The review page shows the pre-registration, power plan included, before approving; approval freezes it."""

from __future__ import annotations

import pytest

from experiments import services
from experiments.models import Experiment, ExperimentMetric

pytestmark = pytest.mark.django_db


def test_review_page__before_approval__power_plan_metrics_and_commitment_shown(client, ops, reviewer):
    # Given a complete plan with a power plan and two planned metrics, in review
    exp = services.experiment_save_plan(
        experiment=Experiment(
            name="Plan",
            slug="plan",
            owner=ops,
            hypothesis="Green lifts purchases",
            mde=0.10,
            baseline_rate=0.10,
            expected_daily_users=2000,
        ),
        actor=ops,
    )
    from experiments.models import Variant

    services.variant_save(variant=Variant(experiment=exp, key="control", name="C", is_control=True), actor=ops)
    services.variant_save(variant=Variant(experiment=exp, key="green", name="G"), actor=ops)
    for key, role, direction in (("purchase", "primary", "increase"), ("refund", "guardrail", "decrease")):
        services.experiment_metric_save(
            metric=ExperimentMetric(experiment=exp, key=key, role=role, direction=direction), actor=ops
        )
    services.experiment_submit_for_review(experiment=exp, actor=ops)
    # When the reviewer opens the review page
    client.force_login(reviewer)
    html = client.get("/review/plan/").content.decode()
    # Then the concrete commitment is on the page: users per arm, days, metrics with roles and directions
    import math

    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    per_arm = math.ceil(NormalIndPower().solve_power(proportion_effectsize(0.11, 0.10), alpha=0.05, power=0.8, ratio=1))
    assert f"Needs {per_arm:,} users per arm" in html
    assert f"about {math.ceil(2 * per_arm / 2000):,} days" in html
    assert "what approving commits to" in html
    assert "refund" in html and "guardrail" in html and "decrease" in html
    # And approval freezes exactly that plan
    services.experiment_approve_and_start(experiment=exp, actor=reviewer)
    exp.refresh_from_db()
    assert exp.preregistration["power_plan"]["users_per_arm"] == per_arm
    assert [m["key"] for m in exp.preregistration["metrics"]] == ["purchase", "refund"]
    assert "frozen at approval" in client.get("/review/plan/").content.decode()
