"""Issue 17, part 6 in a real browser (Debian chromium) on the demo data: the learnings page lists the demo's decided
experiments, draws a lift histogram per primary metric with an accessible title, keeps filters in the URL, and
shows no number in scientific notation."""

from __future__ import annotations

import os
import re

import pytest
from playwright.sync_api import expect

from tests.experiments.conftest import ensure_workflow_groups

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SCIENTIFIC = re.compile(r"(?<![\w.])\d+(?:\.\d+)?[eE][-+]?\d+\b")


@pytest.fixture
def demo_ops(make_user):
    from experiments.demo_data import demo_seed

    ensure_workflow_groups()  # a previous transactional test flushed the groups the migrations made
    demo_seed()
    make_user("ops-e2e", groups=("ops",), is_staff=True)
    return "ops-e2e"


def test_learnings__demo_in_the_browser__rows_histogram_no_scientific_notation(login, live_server, demo_ops):
    from experiments.models import Decision

    decided = sorted(Decision.objects.values_list("experiment__slug", flat=True))
    assert len(decided) >= 3  # the demo has decided experiments, so the page shows something in `make demo`
    page = login(demo_ops)
    # The nav leads to the page
    page.goto(f"{live_server.url}/")
    page.get_by_role("link", name="Learnings").click()
    expect(page.locator("h1")).to_have_text("Learnings")
    # Every decided experiment is a row, with its decision and a verdict per treatment
    slugs = sorted(page.locator("#learnings tbody tr[data-slug]").evaluate_all("rows => rows.map(r => r.dataset.slug)"))
    assert slugs == decided
    expect(page.locator('#learnings tr[data-slug="free-shipping-threshold"]')).to_contain_text("Shipped")
    expect(page.locator('#learnings tr[data-slug="pricing-anchor"]')).to_contain_text("Killed")
    # A histogram is drawn (bars with a visible size) and is announced by its title
    chart = page.locator("#lift-histograms svg.lift-histogram").first
    expect(chart).to_be_visible()
    assert chart.get_attribute("role") == "img" and "Observed relative lift" in chart.get_attribute("aria-label")
    bars = chart.locator("g.bin[data-count]:not([data-count='0']) rect")
    assert bars.count() >= 1 and bars.first.bounding_box()["height"] > 1
    expect(page.locator("#win-rates")).to_contain_text("Win rate")
    if os.environ.get("SCREENSHOT_DIR"):
        page.screenshot(path=os.path.join(os.environ["SCREENSHOT_DIR"], "learnings.png"), full_page=True)
    text = page.locator("body").inner_text()
    assert not SCIENTIFIC.findall(text), SCIENTIFIC.findall(text)
    # A filter is kept in the URL, and the CSV link exports the filtered rows
    page.locator("#learnings-filters select[name=outcome]").select_option("killed")
    page.locator("#learnings-filters button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"outcome=killed"))
    expect(page.locator("#learnings tbody tr[data-slug]")).to_have_count(
        Decision.objects.filter(outcome="killed").count()
    )
    assert "outcome=killed" in page.locator("#learnings-csv").get_attribute("href")
