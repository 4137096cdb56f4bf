"""Issue 17, part 6: the learnings page — decided experiments with the numbers frozen at decision time, search and
filters, win rate per quarter, lift histograms per primary metric, CSV, and a fixed query count."""

from __future__ import annotations

import csv
import io
import random
import re
from datetime import UTC, datetime, timedelta
from unittest import mock

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

pytestmark = pytest.mark.django_db

WIN, LOSS, FLAT, SRM = (400, 40, 400, 90), (400, 90, 400, 40), (400, 40, 400, 42), (600, 60, 400, 80)
Q3, Q4 = datetime(2026, 8, 14, 12, 0, tzinfo=UTC), datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SCIENTIFIC = re.compile(r"(?<![\w.])\d+(?:\.\d+)?[eE][-+]?\d+\b")


@pytest.fixture
def make_decided(ux_owner, ux_events):
    """make_decided(slug, split=(control users, conv, treatment users, conv), outcome=..., at=...): an experiment
    in readout with those users, then shipped or killed through the services at ``at`` (the snapshot is real)."""
    from experiments import services
    from experiments.models import Experiment, Variant
    from tests.ux.conftest import T0

    def _make(
        slug, *, split, outcome="shipped", owner=None, metric="purchase", hypothesis="", at=Q4, rationale=None,
        before_decision=None,
    ):  # fmt: skip
        exp = Experiment.objects.create(
            name=slug.replace("-", " ").title(),
            slug=slug,
            owner=owner or ux_owner,
            primary_metric=metric,
            hypothesis=hypothesis,
            status="readout",
            started_at=T0 - timedelta(days=20),
            ended_at=T0 + timedelta(days=1),
        )
        for key, is_control in (("control", True), ("treatment", False)):
            Variant.objects.create(experiment=exp, key=key, name=key.title(), is_control=is_control, weight=1)
        ux_events(exp, "control", users=split[0], converted=split[1], metric=metric)
        ux_events(exp, "treatment", users=split[2], converted=split[3], metric=metric)
        if before_decision is not None:
            before_decision(exp)
        rationale = rationale or f"Decided {slug}."
        with mock.patch("django.utils.timezone.now", return_value=at):
            if outcome == "shipped":
                services.experiment_ship(
                    experiment=exp, actor=ux_owner, rationale=rationale, override_reason="Test: ship whatever it says."
                )
            else:
                services.experiment_kill(experiment=exp, actor=ux_owner, rationale=rationale)
        return exp

    return _make


@pytest.fixture
def library(make_decided, make_user):
    """Five decisions: two quarters, two owners, two metrics, every verdict, both outcomes."""
    other = make_user("other-owner", groups=("ops",))
    make_decided("alpha-win", split=WIN, hypothesis="Bigger buttons sell more.", at=Q3)
    make_decided("bravo-loss", split=LOSS, outcome="killed", owner=other, at=Q3, rationale="Refunds went up.")
    make_decided("charlie-flat", split=FLAT, metric="signup", at=Q4)
    make_decided("delta-srm", split=SRM, owner=other, at=Q4)
    make_decided("echo-win-killed", split=WIN, outcome="killed", at=Q4, rationale="Too costly to maintain.")
    return other


def _slugs(html: str) -> list[str]:
    table = html.split('id="learnings"', 1)[1]
    return [part.split('"', 1)[0] for part in table.split('data-slug="')[1:]]


def _snapshot_lift(slug: str) -> tuple[float, str]:
    """The treatment's relative lift and verdict label, read straight from the stored decision snapshot."""
    from experiments.models import Decision

    snap = Decision.objects.get(experiment__slug=slug).readout_snapshot
    [c] = [c for c in snap["comparisons"] if c["variant"] == "treatment"]
    [v] = [v for v in snap["verdicts"] if v["variant"] == "treatment"]
    return c["rel_lift"], v["label"]


# --- search and filters -----------------------------------------------------------------------------------
def test_learnings__filters_and_search__only_matching_rows(client, ux_owner, library):
    client.force_login(ux_owner)
    get = lambda query: sorted(_slugs(client.get(f"/learnings/?{query}").content.decode()))  # noqa: E731
    everything = ["alpha-win", "bravo-loss", "charlie-flat", "delta-srm", "echo-win-killed"]
    assert get("") == everything
    assert get("q=buttons") == ["alpha-win"]  # the hypothesis
    assert get("q=REFUNDS") == ["bravo-loss"]  # the rationale, case-insensitive
    assert get("q=charlie") == ["charlie-flat"]  # the name
    assert get("q=delta-s") == ["delta-srm"]  # the slug
    assert get("metric=signup") == ["charlie-flat"]
    assert get("outcome=killed") == ["bravo-loss", "echo-win-killed"]
    assert get("outcome=shipped") == ["alpha-win", "charlie-flat", "delta-srm"]
    assert get("verdict=won") == ["alpha-win", "echo-win-killed"]
    assert get("verdict=lost") == ["bravo-loss"]
    assert get("verdict=inconclusive") == ["charlie-flat"]
    assert get("verdict=untrustworthy") == ["delta-srm"]
    assert get("owner=other-owner") == ["bravo-loss", "delta-srm"]
    assert get("quarter=2026Q3") == ["alpha-win", "bravo-loss"]
    assert get("quarter=2026q4") == ["charlie-flat", "delta-srm", "echo-win-killed"]
    assert get("quarter=2026Q1") == []
    assert get("owner=other-owner&quarter=2026Q4&outcome=shipped") == ["delta-srm"]
    assert get("outcome=bogus&verdict=nope&quarter=26Q9") == everything  # unknown choices are ignored


def test_learnings__row__hypothesis_decision_lift_interval_verdict_rationale(client, ux_owner, library):
    client.force_login(ux_owner)
    html = client.get("/learnings/").content.decode()
    row = html.split('data-slug="alpha-win"')[1].split("</tr>")[0]
    # The numbers are those of the decision: 90/400 against 40/400 is a relative lift of +125%
    assert "Bigger buttons sell more." in row and "Decided alpha-win." in row
    assert "Shipped treatment" in row and "2026-08-14 · 2026Q3" in row
    assert 'data-label="won"' in row and "Won" in row
    assert "treatment: +125.0% (" in row and "95% confidence interval" in row
    killed = html.split('data-slug="bravo-loss"')[1].split("</tr>")[0]
    assert "Killed" in killed and "\u221255.6%" in killed and "Lost" in killed  # 40/90 − 1, a true minus
    assert 'href="/learnings/"' in html  # the nav
    assert not SCIENTIFIC.search(html)


def test_learnings__late_events__numbers_stay_those_of_the_decision(client, ux_owner, library):
    from experiments.models import Experiment
    from readouts.selectors import readout_get
    from tests.ux.conftest import T0
    from tracking.models import Event

    # Given the treatment of a shipped winner later gets 2,000 more users who never convert
    exp = Experiment.objects.get(slug="alpha-win")
    treatment = exp.variants.get(key="treatment")
    Event.objects.bulk_create(
        Event(experiment=exp, variant=treatment, user_key=f"late-{i}", event_type="exposure",
              occurred_at=T0 + timedelta(days=3, seconds=i))
        for i in range(2000)
    )  # fmt: skip
    fresh = readout_get(experiment=exp).selected.comparisons[0].rel.rel_lift
    client.force_login(ux_owner)
    # When the learnings are read
    rows = list(csv.DictReader(io.StringIO(client.get("/learnings/?format=csv&q=alpha").content.decode())))
    # Then they still carry the decision's numbers, not the fresh readout's
    assert float(rows[0]["rel_lift"]) == pytest.approx(90 / 40 - 1)
    assert fresh == pytest.approx((90 / 2400) / (40 / 400) - 1)
    assert rows[0]["verdict"] == "won"


def test_learnings__guardrail_blocked_winner_shipped_over_it__reads_as_everywhere(client, ux_owner, make_decided):
    from experiments.models import Experiment, ExperimentMetric
    from tests.ux.conftest import T0
    from tracking.models import Event

    # Given a winner on purchase whose refunds guardrail got worse (20 → 80 of 400), shipped with an override
    def refunds(exp):
        ExperimentMetric.objects.create(experiment=exp, key="purchase", role="primary")
        ExperimentMetric.objects.create(experiment=exp, key="refund", role="guardrail", direction="decrease")
        for key, n in (("control", 20), ("treatment", 80)):
            variant = exp.variants.get(key=key)
            Event.objects.bulk_create(
                Event(experiment=exp, variant=variant, user_key=f"{key}-u{i}", event_type="conversion",
                      metric="refund", occurred_at=T0 + timedelta(minutes=i + 2))
                for i in range(n)
            )  # fmt: skip

    make_decided("golf-guarded", split=WIN, before_decision=refunds)
    assert Experiment.objects.get(slug="golf-guarded").decision.override_reason  # the ship was blocked
    client.force_login(ux_owner)
    # When
    row = client.get("/learnings/").content.decode().split('data-slug="golf-guarded"')[1].split("</tr>")[0]
    # Then the verdict's own headline, and the override
    assert "Won — ship blocked by guardrail refund" in row
    assert "Shipped over a blocking problem: Test: ship whatever it says." in row


def test_learnings__decision_without_a_snapshot__row_without_numbers_not_a_win(client, ux_owner, library):
    from experiments.models import Decision, Experiment, Variant

    # Given a decision recorded without a readout snapshot (before snapshots carried verdicts)
    exp = Experiment.objects.create(name="Old One", slug="old-one", owner=ux_owner, status="shipped",
                                    started_at=Q3, ended_at=Q3)  # fmt: skip
    Variant.objects.create(experiment=exp, key="control", name="Control", is_control=True)
    shipped = Variant.objects.create(experiment=exp, key="treatment", name="Treatment")
    old = Decision.objects.create(experiment=exp, outcome="shipped", rationale="Long ago.", decided_by=ux_owner,
                                  shipped_variant=shipped)  # fmt: skip
    Decision.objects.filter(pk=old.pk).update(decided_at=Q3)
    client.force_login(ux_owner)
    # When
    html = client.get("/learnings/").content.decode()
    # Then it is listed without numbers, counts as decided and not as a win, and is in no histogram
    row = html.split('data-slug="old-one"')[1].split("</tr>")[0]
    assert "No result was recorded with this decision." in row and "Long ago." in row
    assert _page_win_rates(html)["2026Q3"] == (3, 1)  # alpha-win (won, shipped), bravo-loss (killed), old-one
    assert "4 treatments of 4 decided experiments" in html  # purchase: unchanged by the old row


# --- CSV --------------------------------------------------------------------------------------------------
def test_learnings__csv__exactly_the_filtered_rows(client, ux_owner, library):
    client.force_login(ux_owner)
    for query in ("", "quarter=2026Q4", "owner=other-owner", "verdict=won", "q=refunds", "outcome=killed"):
        response = client.get(f"/learnings/?{query}&format=csv")
        assert response["Content-Type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(response.content.decode())))
        assert [r["slug"] for r in rows] == _slugs(client.get(f"/learnings/?{query}").content.decode()), query
    rows = {r["slug"]: r for r in csv.DictReader(io.StringIO(client.get("/learnings/?format=csv").content.decode()))}
    loss = rows["bravo-loss"]
    lift, label = _snapshot_lift("bravo-loss")
    assert float(loss["rel_lift"]) == lift == pytest.approx(40 / 90 - 1) and loss["verdict"] == label == "lost"
    assert float(loss["rel_lift_ci_low"]) < lift < float(loss["rel_lift_ci_high"])
    assert loss["outcome"] == "killed" and loss["shipped_variant"] == "" and loss["won_and_shipped"] == "0"
    assert (
        loss["quarter"] == "2026Q3" and loss["decided_at"].startswith("2026-08-14") and loss["owner"] == "other-owner"
    )
    assert loss["rationale"] == "Refunds went up." and loss["interval"] == "confidence"
    assert rows["alpha-win"]["won_and_shipped"] == "1" and rows["alpha-win"]["shipped_variant"] == "treatment"


# --- win rate ---------------------------------------------------------------------------------------------
def _independent_win_rates(decisions) -> dict[str, tuple[int, int]]:
    """quarter → (decided, won and shipped), from the stored rows, without the module's code."""
    out: dict[str, list[int]] = {}
    for d in decisions:
        quarter = f"{d.decided_at.year}Q{(d.decided_at.month + 2) // 3}"
        shipped = d.shipped_variant.key if d.shipped_variant_id else None
        labels = {v["variant"]: v["label"] for v in d.readout_snapshot.get("verdicts", [])}
        cell = out.setdefault(quarter, [0, 0])
        cell[0] += 1
        cell[1] += d.outcome == "shipped" and labels.get(shipped) == "won"
    return {q: (n, w) for q, (n, w) in out.items()}


def _page_win_rates(html: str) -> dict[str, tuple[int, int]]:
    found = re.findall(r'data-quarter="(\d{4}Q\d)" data-decided="(\d+)" data-wins="(\d+)"', html)
    return {q: (int(n), int(w)) for q, n, w in found}


def test_learnings__win_rate__equals_an_independent_count(client, ux_owner, library, make_decided):
    from experiments.models import Decision

    # Given a sixth decision: a winner shipped in Q3 (Q3: 2 wins of 3)
    make_decided("foxtrot-win", split=WIN, at=Q3 + timedelta(days=3))
    client.force_login(ux_owner)
    # When
    html = client.get("/learnings/").content.decode()
    # Then the page's counts are those counted independently from the stored decisions
    expected = _independent_win_rates(Decision.objects.select_related("shipped_variant"))
    assert _page_win_rates(html) == expected == {"2026Q3": (3, 2), "2026Q4": (3, 0)}
    table = html.split('id="win-rates"')[1].split("</section>")[0]
    assert "67%" in table and "0%" in table
    assert (
        "the share that were shipped and whose shipped variant" in table
        and "recorded with the decision, was Won" in table
    )
    # And over a filter, the win rate is that of the filtered rows
    owner_only = client.get("/learnings/?owner=ux-owner").content.decode()
    mine = Decision.objects.select_related("shipped_variant").filter(experiment__owner__username="ux-owner")
    assert _page_win_rates(owner_only) == _independent_win_rates(mine) == {"2026Q3": (2, 2), "2026Q4": (2, 0)}


# --- histograms -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "lifts",
    [
        [0.05, 0.1, -0.02, 0.1, 0.3],
        [-0.4, -0.25, -0.1],  # all below zero
        [0.0, 0.0],  # all on zero
        [0.02, 0.04, 0.06, 0.08, 0.1],  # values on bin edges
        [1.25, -0.556, 0.05],
        [-(0.1 + 0.2), 0.1 * 3, 0.7],  # floating-point values a hair off the bin edges
    ],
)
def test_lift_bins__against_numpy__same_counts_every_value_counted(lifts):
    from readouts.learnings import lift_bins

    bins = lift_bins(lifts)
    edges = [bins[0].low, *(b.high for b in bins)]
    counts, _ = np.histogram(lifts, bins=edges)
    assert [b.count for b in bins] == counts.tolist()
    assert sum(b.count for b in bins) == len(lifts)
    assert edges[0] <= min(*lifts, 0) and max(lifts) < edges[-1]  # covers zero, the maximum strictly inside
    assert any(abs(e) < 1e-12 for e in edges) and len(bins) <= 12  # zero is an edge; a readable number of bins
    widths = {round(b.high - b.low, 12) for b in bins}
    assert len(widths) == 1


def test_lift_bins__random_lifts__against_numpy():
    from readouts.learnings import lift_bins

    rng = random.Random(17)
    for _ in range(200):
        lifts = [rng.gauss(rng.uniform(-0.2, 0.2), rng.uniform(0.01, 0.5)) for _ in range(rng.randint(1, 60))]
        bins = lift_bins(lifts)
        counts, _ = np.histogram(lifts, bins=[bins[0].low, *(b.high for b in bins)])
        assert [b.count for b in bins] == counts.tolist()
    assert lift_bins([]) == []


def test_learnings__histograms__bin_counts_against_numpy_per_metric(client, ux_owner, library):
    from experiments.models import Decision, Metric

    Metric.objects.create(key="signup", name="Signed up", kind="binary", event="signup")
    client.force_login(ux_owner)
    html = client.get("/learnings/").content.decode()
    section = html.split('id="lift-histograms"')[1].split("</section>")[0]
    figures = {m: body for m, body in re.findall(r'<figure class="histogram" data-metric="([^"]+)">(.*?)</figure>',
                                                  section, re.S)}  # fmt: skip
    assert sorted(figures) == ["purchase", "signup"]
    assert "Signed up" in figures["signup"]  # the catalog name
    for metric, body in figures.items():
        bins = [(float(lo), float(hi), int(n)) for lo, hi, n in
                re.findall(r'data-low="([^"]+)" data-high="([^"]+)" data-count="(\d+)"', body)]  # fmt: skip
        lifts = [
            c["rel_lift"]
            for d in Decision.objects.filter(experiment__primary_metric=metric)
            for c in d.readout_snapshot["comparisons"]
        ]
        counts, _ = np.histogram(lifts, bins=[bins[0][0], *(hi for _, hi, _ in bins)])
        assert [n for _, _, n in bins] == counts.tolist() and sum(counts) == len(lifts), metric
        assert "<title>" in body and "<desc>" in body and 'role="img"' in body
    assert "4 treatments of 4 decided experiments" in figures["purchase"]
    assert not SCIENTIFIC.search(section)


# --- pagination, empty state, query count -----------------------------------------------------------------
def test_learnings__pagination__50_a_page_filters_kept_in_links(client, ux_owner, make_listed_decided):
    make_listed_decided(53, outcome="killed")
    client.force_login(ux_owner)
    first = client.get("/learnings/?outcome=killed").content.decode()
    second = client.get("/learnings/?outcome=killed&page=2").content.decode()
    assert len(_slugs(first)) == 50 and len(_slugs(second)) == 3
    assert set(_slugs(first)).isdisjoint(_slugs(second))
    assert 'href="?outcome=killed&amp;page=2"' in first and 'href="?outcome=killed&amp;page=1"' in second
    assert "53 decided experiments match these filters (of 53)" in first


def test_learnings__nothing_decided__says_so(client, ux_owner):
    client.force_login(ux_owner)
    html = client.get("/learnings/").content.decode()
    assert "No experiment has been decided yet" in html and 'id="lift-histograms"' not in html


@pytest.fixture
def make_listed_decided(make_decided, ux_owner):
    """make_listed_decided(n): one real decision (services), then n − 1 more decided experiments whose decision
    rows carry a copy of its snapshot with their own lift (cheap: no readout per row)."""
    from experiments.models import Decision, Experiment, Variant

    def _make(n, *, outcome="shipped"):
        first = make_decided("listed-00", split=WIN, outcome=outcome)
        snapshot = Decision.objects.get(experiment=first).readout_snapshot
        for i in range(1, n):
            exp = Experiment.objects.create(
                name=f"Listed {i:02d}",
                slug=f"listed-{i:02d}",
                owner=ux_owner,
                primary_metric=("purchase", "signup")[i % 2],
                status=outcome,
                started_at=first.started_at,
                ended_at=first.ended_at,
            )
            Variant.objects.create(experiment=exp, key="control", name="Control", is_control=True, weight=1)
            treatment = Variant.objects.create(experiment=exp, key="treatment", name="Treatment", weight=1)
            copy = {**snapshot, "comparisons": [{**c, "rel_lift": 0.01 * i} for c in snapshot["comparisons"]]}
            Decision.objects.create(experiment=exp, outcome=outcome, rationale=f"Row {i}.", decided_by=ux_owner,
                                    readout_snapshot=copy,
                                    shipped_variant=treatment if outcome == "shipped" else None)  # fmt: skip

    return _make


@pytest.mark.parametrize("count", [5, 40])
def test_learnings__query_count__fixed_for_5_and_40_decisions(client, ux_owner, make_listed_decided, count):
    from experiments.models import Metric

    # Given `count` decided experiments on two primary metrics, one of them in the catalog
    make_listed_decided(count)
    Metric.objects.create(key="signup", name="Signed up", kind="binary", event="signup")
    client.force_login(ux_owner)
    client.get("/learnings/")  # warm: the session
    # When / Then: the same number of queries whatever the number of decisions (pinned)
    with CaptureQueriesContext(connection) as ctx:
        html = client.get("/learnings/").content.decode()
    assert len(_slugs(html)) == count and html.count('<figure class="histogram"') == 2
    assert len(ctx.captured_queries) == LEARNINGS_QUERIES, "\n".join(q["sql"][:90] for q in ctx.captured_queries)
    with CaptureQueriesContext(connection) as ctx:
        client.get("/learnings/?format=csv&q=listed&quarter=2026Q4")
    assert len(ctx.captured_queries) == LEARNINGS_QUERIES


# session, user, the user's and groups' permissions (view_experiment); the decisions (+ experiment, owner,
# shipped variant, four snapshot keys); the catalog names of the metrics shown; the filter choices.
LEARNINGS_QUERIES = 2 + 2 + 1 + 1 + 1
