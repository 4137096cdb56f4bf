"""In a real browser (Debian chromium): one-day charts show marks, the incomplete draft says what is missing, and
the list, timeline, admin and review pages link to each other."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_readout__one_day_experiment__charts_have_visible_marks(
    make_user, login, live_server, ux_experiment, ux_events
):
    # Given an experiment on its first day of data
    exp = ux_experiment("first-day-e2e")
    ux_events(exp, "control", users=150, converted=15)
    ux_events(exp, "treatment", users=150, converted=24)
    make_user("viewer-ux", groups=("reviewer",))
    page = login("viewer-ux")
    # When the readout is opened
    page.goto(f"{live_server.url}/experiments/{exp.slug}/readout")
    # Then each cumulative chart shows one visible mark per variant, and the charts fill their cards
    for kind in ("exposures", "conversions"):
        marks = page.locator(f"svg.cumulative-{kind} .mark")
        expect(marks).to_have_count(2)
        for i in range(2):
            box = marks.nth(i).bounding_box()
            assert box and box["width"] >= 4 and box["height"] >= 4
    chart = page.locator("svg.cumulative-exposures").bounding_box()
    card = page.locator("svg.cumulative-exposures").locator("xpath=..").bounding_box()
    assert chart["width"] >= card["width"] * 0.85


def test_admin__incomplete_draft__submit_says_what_is_missing(make_user, login, live_server, ux_experiment):
    from experiments.models import Variant

    # Given a draft with one variant and no hypothesis, owned by ops
    ops = make_user("ops-ux", groups=("ops",), is_staff=True)
    exp = ux_experiment("incomplete-e2e", variants=(("control", True, 1),))
    exp.owner = ops
    exp.save()
    assert Variant.objects.filter(experiment=exp).count() == 1
    page = login("ops-ux")
    # When ops opens it in the admin
    page.goto(f"{live_server.url}/admin/experiments/experiment/{exp.pk}/change/")
    # Then Submit for review is visible and the page says exactly what is missing
    expect(page.locator('button[value="submit_for_review"]')).to_be_visible()
    expect(page.locator("#sd-submit-missing")).to_contain_text("a hypothesis, at least 2 variants (has 1)")
    # And pressing it explains instead of doing nothing
    page.click('button[value="submit_for_review"]')
    expect(page.locator(".messagelist .error")).to_contain_text("cannot be submitted yet; it needs a hypothesis")


def test_pages__list_timeline_admin_review__link_to_each_other(make_user, login, live_server, ux_experiment):
    # Given a draft and ops
    make_user("ops-links", groups=("ops",), is_staff=True)
    exp = ux_experiment("linked-e2e")
    page = login("ops-links")
    # From the list to the timeline
    page.goto(f"{live_server.url}/")
    page.locator(f'tr[data-slug="{exp.slug}"] a', has_text="Timeline").click()
    expect(page).to_have_url(f"{live_server.url}/experiments/{exp.slug}/history")
    # From the timeline to the admin change page
    page.locator(".page-links a", has_text="Admin").click()
    expect(page).to_have_url(f"{live_server.url}/admin/experiments/experiment/{exp.pk}/change/")
    # From the admin to the review page, and back to the timeline
    page.locator("a.sd-link", has_text="Review page").click()
    expect(page).to_have_url(f"{live_server.url}/review/{exp.slug}/")
    page.locator("a", has_text="Full timeline").click()
    expect(page).to_have_url(f"{live_server.url}/experiments/{exp.slug}/history")
