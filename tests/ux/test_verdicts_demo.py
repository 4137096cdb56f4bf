"""Issue 17: on the demo, one verdict everywhere (list, scorecard, comparisons, decide, review, narrative, CSV,
bundle, API), the sequential next step, and no scientific notation in any page's text."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from html.parser import HTMLParser

import pytest

pytestmark = pytest.mark.django_db

SRM, GUARDED, SEQUENTIAL = "recs-carousel", "express-pay-button", "search-ranking-v2"
SCIENTIFIC = re.compile(r"(?<![\w.])\d+(?:\.\d+)?[eE][-+]?\d+\b")


class _Text(HTMLParser):
    """The text a person reads: no tags, attributes, scripts or styles."""

    def __init__(self):
        super().__init__()
        self.parts, self._skip = [], 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style") and self._skip > 0

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def page_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return " ".join(" ".join(parser.parts).split())


def _between(html: str, start: str, end: str) -> str:
    return html.split(start, 1)[1].split(end, 1)[0]


@pytest.fixture
def demo(make_user):
    from experiments.demo_data import demo_seed
    from experiments.management.commands.seed_demo import analyze_event_tables

    demo_seed()
    analyze_event_tables()
    return make_user("ops-demo", groups=("ops",), is_staff=True)


def test_demo__srm_experiment__untrustworthy_everywhere_and_never_better(client, demo):
    client.force_login(demo)
    # The list
    row = _between(client.get("/").content.decode(), f'data-slug="{SRM}"', "</tr>")
    assert "carousel: Untrustworthy" in page_text(row) and "Better" not in row
    # The readout: verdict, scorecard outcome cells, comparisons "Reading", the effect chart
    html = client.get(f"/experiments/{SRM}/readout").content.decode()
    assert 'data-label="untrustworthy"' in _between(html, 'id="verdict"', "</section>")
    scorecard = _between(html, 'id="scorecard"', "</table>")
    assert scorecard.count(">untrustworthy</span>") == scorecard.count("<tr data-metric") > 0
    assert "▲" not in scorecard and 'class="outcome outcome-better"' not in scorecard
    reading = page_text(_between(html, 'id="comparisons-table"', "</table>"))
    assert "Untrustworthy: srm failed" in reading
    assert "Better" not in page_text(html)
    # The decide page, the review page and the narrative
    decide = client.get(f"/experiments/{SRM}/decide").content.decode()
    assert 'data-label="untrustworthy"' in decide and "Better" not in page_text(decide)
    assert ">untrustworthy</td>" in _between(decide, 'class="grid scorecard"', "</table>")
    review = client.get(f"/review/{SRM}/").content.decode()
    assert "Untrustworthy" in page_text(review) and "Better" not in page_text(review)
    narrative = client.get(f"/experiments/{SRM}/readout/narrative").json()["text"]
    assert "Verdict for carousel: Untrustworthy" in narrative
    assert "suggests a real difference" not in narrative and "better" not in narrative.lower()
    # The machines: the API keeps the computed outcome, CSV and bundle carry the label
    api = client.get(f"/api/experiments/{SRM}/readout").json()
    assert [v["label"] for v in api["verdicts"]] == ["untrustworthy"] and "srm" in api["verdicts"][0]["blocked_by"]
    assert api["comparisons"][0]["outcome"] == "better"
    rows = list(csv.DictReader(io.StringIO(client.get(f"/experiments/{SRM}/readout.csv").content.decode())))
    assert {r["variant"]: r["verdict"] for r in rows if r["metric"] == api["metric"]} == {
        "control": "",
        "carousel": "untrustworthy",
    }
    bundle = zipfile.ZipFile(io.BytesIO(client.get(f"/experiments/{SRM}/readout-bundle.zip").content))
    summary = bundle.read("summary.md").decode()
    assert "**carousel: Untrustworthy.**" in summary and "| better |" not in summary
    assert '"label": "untrustworthy"' in bundle.read("readout.json").decode()


def test_demo__guardrail_blocked_winner__won_ship_blocked_by_guardrail_refund(client, demo):
    client.force_login(demo)
    headline = "Won — ship blocked by guardrail refund"
    row = _between(client.get("/").content.decode(), f'data-slug="{GUARDED}"', "</tr>")
    assert f"express: {headline}" in page_text(row)
    readout = page_text(client.get(f"/experiments/{GUARDED}/readout").content.decode())
    assert headline in readout
    assert headline in page_text(client.get(f"/experiments/{GUARDED}/decide").content.decode())
    assert f"Verdict for express: {headline}." in client.get(f"/experiments/{GUARDED}/readout/narrative").json()["text"]
    api = client.get(f"/api/experiments/{GUARDED}/readout").json()
    assert api["verdicts"] == [
        {
            "variant": "express",
            "label": "won",
            "reason": api["verdicts"][0]["reason"],
            "blocked_by": ["guardrail_worse"],
        }
    ]


def test_demo__sequential_inconclusive_below_plan__keep_collecting(client, demo):
    client.force_login(demo)
    html = client.get(f"/experiments/{SEQUENTIAL}/readout").content.decode()
    step = page_text(_between(html, 'id="next-step"', "</p>"))
    assert "Next step: Keep collecting: no difference yet; the plan's sample is not reached" in step
    assert "Ready to decide" not in step


def test_demo__every_page_of_every_experiment__no_scientific_notation(client, demo):
    from experiments.models import Experiment

    client.force_login(demo)
    urls = ["/", "/review/", "/learnings/"]
    for e in Experiment.objects.order_by("slug"):
        urls += [
            f"/experiments/{e.slug}/history",
            f"/review/{e.slug}/",
            f"/admin/experiments/experiment/{e.pk}/change/",
        ]
        if e.started_at is not None:
            urls += [f"/experiments/{e.slug}/decide"]
            metrics = client.get(f"/api/experiments/{e.slug}/readout").json()["metrics"]
            urls += [f"/experiments/{e.slug}/readout?metric={m}" for m in metrics]
            urls += [f"/experiments/{e.slug}/readout"]
    pages = 0
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        text = page_text(response.content.decode())
        assert not SCIENTIFIC.findall(text), (url, SCIENTIFIC.findall(text))
        pages += 1
    assert pages > 40
