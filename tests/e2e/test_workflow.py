"""The SOP walk-through in a real browser (docs/sop.md): ops creates and submits in the admin, a
reviewer approves in /review/, ops ends and ships with a rationale, the timeline shows it all."""

from __future__ import annotations

import re
from importlib import import_module

import pytest

from experiments.models import Experiment
from tests.experiments.conftest import add_winning_events

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def people(make_user):
    # Transactional tests flush auth tables between tests: recreate the groups exactly as migration 0003 does.
    from django.apps import apps

    import_module("experiments.migrations.0003_workflow_groups").create_groups(apps, None)
    return {
        "ops": make_user("ops", groups=("ops",), is_staff=True),
        "reviewer": make_user("reviewer", groups=("reviewer",)),
    }


def _switch_user(page, login, username):
    page.context.clear_cookies()
    return login(username)


def _click_transition(page, name):
    page.click(f"button[name=_fsm_transition_to][value={name}]")
    page.wait_for_load_state()


def test_workflow__ops_creates_reviewer_approves_ops_ships__timeline_shows_all(people, login, page, live_server):
    base = live_server.url
    # Given ops logged in to the admin
    login("ops")
    # When ops creates an experiment with two variants
    page.goto(f"{base}/admin/experiments/experiment/add/")
    page.fill("#id_name", "Checkout button colour")
    page.fill("#id_hypothesis", "A green checkout button lifts conversion by 2%.")
    assert page.input_value("#id_slug") == "checkout-button-colour"  # prepopulated from the name
    page.fill("#id_variants-0-key", "control")
    page.fill("#id_variants-0-name", "Blue (current)")
    page.check("#id_variants-0-is_control")
    page.fill("#id_variants-1-key", "green")
    page.fill("#id_variants-1-name", "Green")
    page.click("input[name=_continue]")
    page.wait_for_load_state()
    assert "was added successfully" in page.locator(".messagelist").inner_text()
    # ... and submits it for review from the change page
    _click_transition(page, "submit_for_review")
    assert "is now in review" in page.locator(".messagelist").inner_text()
    change_url = page.url

    # When the reviewer opens the queue, the plan, and approves
    _switch_user(page, login, "reviewer")
    page.goto(f"{base}/review/")
    row = page.locator("tr.queue-row", has_text="Checkout button colour")
    assert row.count() == 1
    row.get_by_role("link", name="Review").click()
    page.wait_for_load_state()
    assert "A green checkout button lifts conversion by 2%." in page.locator(".plan").inner_text()
    page.get_by_role("button", name="Approve and start").click()
    page.wait_for_load_state()
    assert page.url == f"{base}/review/"
    assert "Approved and started" in page.locator(".messages").inner_text()

    # When ops ends it for readout and ships it with a rationale
    _switch_user(page, login, "ops")
    page.goto(change_url)
    _click_transition(page, "end_for_readout")
    assert "is now readout" in page.locator(".messagelist").inner_text()
    add_winning_events(Experiment.objects.get(slug="checkout-button-colour"))  # clean evidence: ship is not blocked
    _click_transition(page, "ship")
    assert re.search(r"/transition/ship/$", page.url)
    page.fill("textarea[name=rationale]", "Green won: +2.1% conversion, p < 0.01; no guardrail regressions.")
    page.click("input[type=submit][value=Apply]")
    page.wait_for_load_state()
    assert "is now shipped" in page.locator(".messagelist").inner_text()

    # Then the timeline shows every step with its actor, and the decision with its rationale
    page.goto(f"{base}/experiments/checkout-button-colour/history")
    entries = page.locator("tr.timeline-entry")
    steps = [entries.nth(i).locator("td").nth(1).inner_text() for i in range(entries.count())]
    actors = [entries.nth(i).locator("td").nth(3).inner_text() for i in range(entries.count())]
    assert steps == ["Created", "Submitted for review", "Approved and started", "Ended for readout", "Shipped"]
    assert actors == ["ops", "ops", "reviewer", "ops", "ops"]
    decision = page.locator(".decision").inner_text()
    assert "Shipped" in decision and "Green won: +2.1% conversion" in decision and "by ops" in decision
