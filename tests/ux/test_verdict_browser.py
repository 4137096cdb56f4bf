"""In a real browser (Debian chromium): the readout leads with a verdict per treatment and the next step, a
decided experiment shows its decision banner, and the decide page shows the numbers before the ship button."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CASES = {
    # slug: (control users, converted), (treatment users, converted), expected verdict, words in the reason
    "winner-e2e": ((2000, 200), (2000, 300), "Won", "purchase improved"),
    "loser-e2e": ((2000, 300), (2000, 200), "Lost", "purchase got worse"),
    "flat-e2e": ((2000, 200), (2000, 205), "Inconclusive", "No clear difference"),
    "srm-e2e": ((3000, 300), (2000, 200), "Untrustworthy", "srm failed"),
}


def test_readout__winner_loser_inconclusive_srm__verdict_and_next_step(
    make_user, login, live_server, ux_experiment, ux_events
):
    # Given four experiments built to each verdict, and a reviewer
    for slug, (control, treatment, _, _) in CASES.items():
        exp = ux_experiment(slug)
        ux_events(exp, "control", users=control[0], converted=control[1])
        ux_events(exp, "treatment", users=treatment[0], converted=treatment[1])
    make_user("viewer-verdict", groups=("reviewer",))
    page = login("viewer-verdict")
    for slug, (_, _, label, words) in CASES.items():
        # When the readout is opened
        page.goto(f"{live_server.url}/experiments/{slug}/readout")
        # Then the first thing on the page is the verdict, in words (not only colour), with its reason
        verdict = page.locator("#verdict .verdict").first
        expect(verdict).to_have_attribute("data-verdict", label)
        expect(verdict.locator(".verdict-label")).to_have_text(label)
        expect(verdict).to_contain_text(words)
        expect(page.locator("#next-step")).to_be_visible()
        expect(page.locator("#scorecard tbody tr")).to_have_count(1)
        # and the verdict comes before the scorecard and the tables
        assert page.locator("#verdict").bounding_box()["y"] < page.locator("#scorecard").bounding_box()["y"]


def _run_to_readout(exp, ops, reviewer, events) -> None:
    """Submit, approve, backdate the start, add the events (two days ago), end for readout: the real workflow."""
    from datetime import timedelta

    from django.utils import timezone

    from experiments import services
    from experiments.models import Experiment

    Experiment.objects.filter(pk=exp.pk).update(owner=ops, hypothesis="The change helps")
    exp.refresh_from_db()
    services.experiment_submit_for_review(experiment=exp, actor=ops)
    services.experiment_approve_and_start(experiment=exp, actor=reviewer)
    Experiment.objects.filter(pk=exp.pk).update(started_at=timezone.now() - timedelta(days=3))
    events(timezone.now() - timedelta(days=2))
    services.experiment_end_for_readout(experiment=exp, actor=ops)


def test_readout__shipped__decision_banner_above_the_numbers(make_user, login, live_server, ux_experiment, ux_events):
    from experiments import services

    # Given an experiment that was run and shipped through the workflow services
    ops = make_user("ops-banner", groups=("ops",), is_staff=True)
    reviewer = make_user("rev-banner", groups=("reviewer",))
    exp = ux_experiment("banner-e2e")

    def events(start):
        ux_events(exp, "control", users=2000, converted=200, start=start)
        ux_events(exp, "treatment", users=2000, converted=300, start=start)

    _run_to_readout(exp, ops, reviewer, events)
    services.experiment_ship(experiment=exp, actor=ops, rationale="Purchases up 5 pp with a tight interval.")
    page = login("rev-banner")
    # When the readout is opened
    page.goto(f"{live_server.url}/experiments/{exp.slug}/readout")
    # Then the decision banner says who decided what, and why, above the verdict and the numbers
    banner = page.locator("#decision")
    expect(banner).to_contain_text("Shipped")
    expect(banner).to_contain_text("treatment")
    expect(banner).to_contain_text("ops-banner")
    expect(banner).to_contain_text("Purchases up 5 pp with a tight interval.")
    assert banner.bounding_box()["y"] < page.locator("#scorecard").bounding_box()["y"]


def test_decide__blocked_by_guardrail__readout_says_so_and_decide_page_shows_numbers_before_ship(
    make_user, login, live_server, ux_experiment, ux_events
):
    from datetime import timedelta

    # Given a finished experiment whose refund guardrail got worse
    ops = make_user("ops-decide", groups=("ops",), is_staff=True)
    reviewer = make_user("rev-decide", groups=("reviewer",))
    exp = ux_experiment(
        "guarded-e2e",
        metrics=(("purchase", "primary", "binary", "increase"), ("refund", "guardrail", "binary", "decrease")),
    )

    def events(start):
        from tracking.models import Event

        ux_events(exp, "control", users=2000, converted=200, start=start)
        ux_events(exp, "treatment", users=2000, converted=300, start=start)
        # refunds: the last 20 (control) and 90 (treatment) users, an hour after their exposure
        refunds = []
        for key, count in (("control", 20), ("treatment", 90)):
            exposures = Event.objects.filter(experiment=exp, variant__key=key, event_type="exposure")
            for e in exposures.order_by("-id")[:count]:
                refunds.append(
                    Event(
                        experiment=exp,
                        variant_id=e.variant_id,
                        user_key=e.user_key,
                        event_type="conversion",
                        metric="refund",
                        occurred_at=e.occurred_at + timedelta(hours=1),
                    )
                )
        Event.objects.bulk_create(refunds)

    _run_to_readout(exp, ops, reviewer, events)
    page = login("ops-decide")
    # When ops opens the readout
    page.goto(f"{live_server.url}/experiments/{exp.slug}/readout")
    # Then the next step says the ship is blocked, and links to the decide page
    expect(page.locator("#next-step")).to_contain_text("Shipping is blocked: guardrail refund got worse")
    page.locator("#next-step a", has_text="Ship or kill").click()
    expect(page).to_have_url(f"{live_server.url}/experiments/{exp.slug}/decide")
    # and the decide page shows the blocking problem, the checks and the scorecard with the ship form
    body = page.locator("main")
    expect(body).to_contain_text("guardrail_worse")
    expect(body).to_contain_text("refund")
    expect(body).to_contain_text("Health checks")
    expect(page.locator("textarea").first).to_be_visible()
