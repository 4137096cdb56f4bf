"""Issue 17 in a real browser (Debian chromium) on the demo data: the SRM experiment reads "Untrustworthy" on the
list, the scorecard, the comparisons table, the decide page and the narrative, and nowhere "Better"; the
guardrail-blocked winner reads "Won — ship blocked…"; search-ranking-v2's next step says to keep collecting; and
no page of any demo experiment shows a number in scientific notation."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.experiments.conftest import ensure_workflow_groups

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SCIENTIFIC = re.compile(r"(?<![\w.])\d+(?:\.\d+)?[eE][-+]?\d+\b")


@pytest.fixture
def demo_ops(make_user):
    from experiments.demo_data import demo_seed
    from experiments.management.commands.seed_demo import analyze_event_tables

    ensure_workflow_groups()  # a previous transactional test flushed the groups the migrations made
    demo_seed()
    analyze_event_tables()
    make_user("ops-e2e", groups=("ops",), is_staff=True)
    return "ops-e2e"


def _text(locator) -> str:
    return " ".join(locator.inner_text().split())


def test_demo__verdicts_in_the_browser__untrustworthy_blocked_and_keep_collecting(login, live_server, demo_ops):
    page = login(demo_ops)
    base = live_server.url
    # The list
    page.goto(f"{base}/")
    srm_row = page.locator('tr[data-slug="recs-carousel"]')
    expect(srm_row).to_contain_text("Untrustworthy")
    assert "Better" not in _text(srm_row)
    expect(page.locator('tr[data-slug="express-pay-button"]')).to_contain_text("Won — ship blocked by guardrail refund")
    # The readout: verdict, scorecard, comparisons table, narrative; "Better" nowhere on the page
    page.goto(f"{base}/experiments/recs-carousel/readout")
    expect(page.locator("#verdict .verdict").first).to_have_attribute("data-label", "untrustworthy")
    for cell in page.locator("#scorecard tbody tr td:last-child").all():
        assert _text(cell).endswith("untrustworthy"), _text(cell)
    expect(page.locator("#comparisons-table td.reading").first).to_contain_text("Untrustworthy")
    expect(page.locator("#narrative .narrative-text")).to_contain_text("Untrustworthy")
    assert "Better" not in page.locator("body").inner_text()
    # The decide page
    page.goto(f"{base}/experiments/recs-carousel/decide")
    expect(page.locator("#decide-verdicts")).to_contain_text("Untrustworthy")
    assert "Better" not in page.locator("body").inner_text()
    # The guardrail-blocked winner
    page.goto(f"{base}/experiments/express-pay-button/readout")
    expect(page.locator("#verdict .verdict").first).to_contain_text("Won — ship blocked by guardrail refund")
    page.goto(f"{base}/experiments/express-pay-button/decide")
    expect(page.locator("#decide-verdicts")).to_contain_text("Won — ship blocked by guardrail refund")
    # The sequential, inconclusive experiment below its planned sample
    page.goto(f"{base}/experiments/search-ranking-v2/readout")
    expect(page.locator("#next-step")).to_contain_text("Keep collecting")
    assert "Ready to decide" not in _text(page.locator("#next-step"))


def test_demo__crawl_every_page_of_every_experiment__no_scientific_notation(login, live_server, demo_ops):
    from experiments.models import Experiment
    from readouts.selectors import readout_get

    page = login(demo_ops)
    base = live_server.url
    urls = ["/", "/review/", "/learnings/"]
    for e in Experiment.objects.order_by("slug"):
        urls += [
            f"/experiments/{e.slug}/history",
            f"/review/{e.slug}/",
            f"/admin/experiments/experiment/{e.pk}/change/",
        ]
        if e.started_at is not None:
            urls += [f"/experiments/{e.slug}/decide", f"/experiments/{e.slug}/readout"]
            urls += [f"/experiments/{e.slug}/readout?metric={m}" for m in readout_get(experiment=e).metrics]
    for url in urls:
        response = page.goto(f"{base}{url}")
        assert response.status == 200, url
        text = page.locator("body").inner_text()
        assert not SCIENTIFIC.findall(text), (url, SCIENTIFIC.findall(text))
    assert len(urls) > 40
