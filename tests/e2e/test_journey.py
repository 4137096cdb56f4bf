"""The whole journey in a real browser (issue 11, item 9), against the live server over real HTTP:

ops creates an experiment in the admin (two variants, a planned primary metric, a power plan) and submits it;
the reviewer requests changes with a comment; ops sees the comment, fixes the plan and resubmits; the reviewer
approves; a service posts events through `POST /api/track/batch` with a `track` key; ops ends the experiment;
the readout shows the numbers computed here and its charts; ops ships the winner through the guarded ship
form; the timeline shows every step, actor and comment. Every page is checked for CSP violations (`page`).
"""

from __future__ import annotations

import time

import httpx
import pytest
from playwright.sync_api import expect

from tests.experiments.conftest import ensure_workflow_groups
from tracking.models import ServiceAPIKey

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SLUG = "one-page-checkout"
NAME = "One-page checkout"
# The service's data: users per arm and converted users (clearly winning, equal arms, past the power plan).
USERS = 300
CONVERTED = {"control": 30, "onepage": 75}  # 10.0% vs 25.0%
PLANNED_USERS_PER_ARM = 195  # alpha 0.05, power 0.8, MDE +100% relative on a 10% baseline
COMMENT = "Say how big a lift you expect, and add a power plan (MDE and baseline) so we know when to stop."
RATIONALE = "One-page checkout won: 25.0% vs 10.0% purchase rate (+15.0 pp), past the planned sample, no warnings."


@pytest.fixture
def people(make_user):
    ensure_workflow_groups()  # transactional tests flush the groups the migrations made
    return {
        "ops": make_user("ops", groups=("ops",), is_staff=True),
        "reviewer": make_user("reviewer", groups=("reviewer",)),
    }


def _as(page, login, username):
    page.context.clear_cookies()
    return login(username)


def _transition(page, name):
    page.click(f"button[name=_fsm_transition_to][value={name}]")
    page.wait_for_load_state()


def _events() -> list[dict]:
    events = []
    for variant, converted in CONVERTED.items():
        for i in range(USERS):
            user = f"{variant}-{i}"
            events.append({"experiment": SLUG, "variant": variant, "user_key": user, "event_type": "exposure"})
            if i < converted:
                events.append({"experiment": SLUG, "variant": variant, "user_key": user, "event_type": "conversion"})
    return events


def _ops_creates_and_submits(page, base):
    page.goto(f"{base}/admin/experiments/experiment/add/")
    page.fill("#id_name", NAME)
    page.fill("#id_hypothesis", "A one-page checkout lifts purchases.")
    assert page.input_value("#id_slug") == SLUG  # prepopulated from the name (on leaving the field)
    page.fill("#id_primary_metric", "purchase")
    page.fill("#id_variants-0-key", "control")
    page.fill("#id_variants-0-name", "Three steps (current)")
    page.check("#id_variants-0-is_control")
    page.fill("#id_variants-1-key", "onepage")
    page.fill("#id_variants-1-name", "One page")
    page.fill("#id_metrics-0-key", "purchase")
    page.select_option("#id_metrics-0-role", "primary")
    page.select_option("#id_metrics-0-kind", "binary")
    page.select_option("#id_metrics-0-direction", "increase")
    page.click("input[name=_continue]")
    page.wait_for_load_state()
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")
    _transition(page, "submit_for_review")
    expect(page.locator(".messagelist")).to_contain_text("is now in review")
    return page.url


def _reviewer_requests_changes(page, base):
    page.goto(f"{base}/review/")
    page.locator("tr.queue-row", has_text=NAME).get_by_role("link", name="Review").click()
    page.wait_for_load_state()
    expect(page.locator(".plan")).to_contain_text("A one-page checkout lifts purchases.")
    page.fill(".request-changes-form textarea[name=comment]", COMMENT)
    page.get_by_role("button", name="Request changes").click()
    page.wait_for_load_state()
    expect(page.locator(".messages")).to_contain_text("back to draft")


def _ops_fixes_and_resubmits(page, change_url):
    page.goto(change_url)
    expect(page.locator(".sd-changes-requested")).to_contain_text(COMMENT)  # the reviewer's words, on top
    page.fill("#id_hypothesis", "A one-page checkout lifts purchases from 10% to 20% or more (+100% relative).")
    page.fill("#id_mde", "1.0")
    page.fill("#id_baseline_rate", "0.1")
    page.click("input[name=_continue]")
    page.wait_for_load_state()
    expect(page.locator(".messagelist")).to_contain_text("was changed successfully")
    _transition(page, "submit_for_review")
    expect(page.locator(".messagelist")).to_contain_text("is now in review")


def _reviewer_approves(page, base):
    page.goto(f"{base}/review/{SLUG}/")
    expect(page.locator(".preregistration")).to_contain_text(f"{PLANNED_USERS_PER_ARM}")
    page.get_by_role("button", name="Approve and start").click()
    page.wait_for_load_state()
    expect(page.locator(".messages")).to_contain_text("Approved and started")


def _service_posts_events(base) -> None:
    """A separate service: a `track` key and one real HTTP batch to the live server."""
    _, key = ServiceAPIKey.objects.create_key(name="checkout-service", scopes="track")
    events = _events()
    response = httpx.post(
        f"{base}/api/track/batch", json={"events": events}, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": len(events), "duplicates": 0, "rejected": []}


def _readout_shows_the_numbers(page, base):
    page.goto(f"{base}/experiments/{SLUG}/readout")
    control = page.locator('#variants-table tr[data-variant="control"]')
    onepage = page.locator('#variants-table tr[data-variant="onepage"]')
    cells = [c.locator("td").all_inner_texts() for c in (control, onepage)]
    # Exposed users, converted users and the rate, as computed from the events sent
    assert cells[0][3:6] == ["300", "30", "10.00%"], cells[0]
    assert cells[1][3:6] == ["300", "75", "25.00%"], cells[1]
    expect(page.locator("#comparisons-table")).to_contain_text("+15.00 pp")
    expect(page.locator("#comparisons-table")).to_contain_text("+150.00%")
    expect(page.locator('#verdict .verdict[data-variant="onepage"]')).to_have_attribute("data-verdict", "Won")
    # Charts: server-side SVG, with marks
    expect(page.locator("svg.rate-chart circle")).to_have_count(2)
    expect(page.locator("svg.cumulative-chart")).to_have_count(2)
    assert page.locator(".readout-charts svg").count() >= 3


def _ops_ships(page, change_url):
    page.goto(change_url)
    _transition(page, "ship")
    assert page.url.endswith("/transition/ship/")
    expect(page.locator("#ship-form")).to_be_visible()
    if page.locator("#ship-form select[name=variant]").count():
        page.select_option("#ship-form select[name=variant]", "onepage")
    page.fill("#ship-form textarea[name=rationale]", RATIONALE)  # no override reason: the ship is clean
    page.click("#ship-form input[type=submit]")
    page.wait_for_load_state()
    expect(page.locator(".messagelist")).to_contain_text("is now shipped")


def _timeline_shows_every_step(page, base):
    page.goto(f"{base}/experiments/{SLUG}/history")
    entries = page.locator("tr.timeline-entry")
    rows = [entries.nth(i).locator("td").all_inner_texts() for i in range(entries.count())]
    assert [(r[1], r[3]) for r in rows] == [
        ("Created", "ops"),
        ("Submitted for review", "ops"),
        ("Changes requested", "reviewer"),
        ("Submitted for review", "ops"),
        ("Approved and started", "reviewer"),
        ("Ended for readout", "ops"),
        ("Shipped", "ops"),
    ]
    assert COMMENT in rows[2][4]
    assert "onepage" in rows[6][4] and RATIONALE in rows[6][4] and "OVERRIDE" not in rows[6][4]


def test_journey__create_review_changes_approve_track_readout_ship__timeline_shows_all(
    people, login, page, live_server
):
    started = time.monotonic()
    base = live_server.url
    # Given ops in the admin: create with a metric plan and submit
    login("ops")
    one_login = time.monotonic() - started  # this machine's pace in this run (the journey is ~20 such steps)
    change_url = _ops_creates_and_submits(page, base)
    # When the reviewer sends it back with a comment, ops fixes it and resubmits, and the reviewer approves
    _as(page, login, "reviewer")
    _reviewer_requests_changes(page, base)
    _as(page, login, "ops")
    _ops_fixes_and_resubmits(page, change_url)
    _as(page, login, "reviewer")
    _reviewer_approves(page, base)
    # And a service posts its events through the batch API, then ops ends the experiment
    _service_posts_events(base)
    _as(page, login, "ops")
    page.goto(change_url)
    _transition(page, "end_for_readout")
    expect(page.locator(".messagelist")).to_contain_text("is now readout")
    # Then the readout shows the numbers and charts; ops ships the winner; the timeline has every step
    _readout_shows_the_numbers(page, base)
    _ops_ships(page, change_url)
    _timeline_shows_every_step(page, base)
    # And nothing waited for a timeout along the way: the bound follows this run's pace (a busy machine slows
    # every step alike), never below 60 s; a stalled step fails at once on Playwright's 15 s action timeout
    assert time.monotonic() - started < max(60.0, 40 * one_login)
