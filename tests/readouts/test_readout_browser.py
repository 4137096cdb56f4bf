"""The readout page in a real browser: table, warnings, charts, and the narrative fetched separately."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

XSS = "<script>alert(1)</script>"
HOSTILE_NARRATIVE = "<img src=x onerror=alert(document.domain)> The treatment looks better."


def test_readout_page__browser__table_warnings_charts_and_ai_narrative(
    make_user, login, live_server, make_experiment, add_events, fake_ai, ai_provider
):
    # Given a small experiment with a hostile name, and a provider answering with markup
    exp = make_experiment("xss-e2e", name=XSS)
    add_events(exp, "control", exposures=60, conversions=6)
    add_events(exp, "treatment", exposures=55, conversions=11)
    fake_ai.text = HOSTILE_NARRATIVE
    make_user("viewer-e2e", groups=("reviewer",))
    page = login("viewer-e2e")
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    # When the readout page is opened
    page.goto(f"{live_server.url}/experiments/xss-e2e/readout")
    # Then the table, the warnings and the charts are there at once
    expect(page.locator("#variants-table tbody tr")).to_have_count(2)
    expect(page.locator('.warning[data-code="small_sample"]')).to_be_visible()
    expect(page.locator("svg.rate-chart circle")).to_have_count(2)
    expect(page.locator("svg.cumulative-chart")).to_have_count(2)
    assert page.locator("h1").inner_text() == f"Readout: {XSS}"
    # And the AI narrative arrives from its own request, shown as text (never as markup)
    expect(page.locator('#narrative [data-field="source"]')).to_have_text(ai_provider, timeout=15_000)
    expect(page.locator('#narrative [data-field="text"]')).to_have_text(HOSTILE_NARRATIVE)
    assert page.locator("#narrative img").count() == 0
    assert dialogs == []
    assert fake_ai.total_hits == 1


def test_readout_page__fresh_fallback_narrative__not_marked_stale(
    make_user, login, live_server, make_experiment, add_events
):
    # Given an experiment with events and no AI provider (the deterministic narrative is current)
    exp = make_experiment("fresh-e2e")
    add_events(exp, "control", exposures=120, conversions=12)
    add_events(exp, "treatment", exposures=120, conversions=20)
    make_user("viewer-fresh", groups=("reviewer",))
    page = login("viewer-fresh")
    # When the readout page is opened
    page.goto(f"{live_server.url}/experiments/fresh-e2e/readout")
    # Then the narrative is shown without the stale badge or the refresh form (`hidden` must really hide)
    expect(page.locator('#narrative [data-field="text"]')).to_be_visible()
    expect(page.locator('#narrative [data-field="stale"]')).to_be_hidden()
    expect(page.locator("#narrative .narrative-refresh")).to_be_hidden()
