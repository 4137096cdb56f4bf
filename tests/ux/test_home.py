"""The experiment list: status, primary result, exposed users, days running, links, and New experiment for ops."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

pytestmark = pytest.mark.django_db


def test_home__running_and_draft__result_counts_days_and_links(client, ux_owner, ux_experiment, ux_events, make_user):
    from experiments import services
    from tracking.models import Assignment

    # Given a running experiment with a clear winner, and a draft
    exp = ux_experiment("winner")
    exp.hypothesis = "Treatment converts better."
    exp.save()
    services.experiment_submit_for_review(experiment=exp, actor=ux_owner)
    services.experiment_approve_and_start(experiment=exp, actor=make_user("rv", groups=("reviewer",)))
    ux_events(exp, "control", users=2000, converted=200)
    ux_events(exp, "treatment", users=2000, converted=300)
    Assignment.objects.bulk_create(
        Assignment(experiment=exp, user_key=e.user_key, variant_id=e.variant_id, source="upstream")
        for e in exp.events.filter(event_type="exposure")
    )
    ux_experiment("drafty")
    client.force_login(ux_owner)
    # When ops opens the list
    html = client.get("/").content.decode()
    # Then the running one shows its primary result, exposed users (thousands separator) and days running
    row = html.split('data-slug="winner"')[1].split("</tr>")[0]
    assert "treatment: Won (+50.0%)" in row and "4,000" in row and ">0<" in row  # the verdict (readouts.verdicts)
    assert (
        'href="/experiments/winner/readout"' in row and f'href="/admin/experiments/experiment/{exp.pk}/change/"' in row
    )
    # And the draft links to its timeline and review page but not to a readout; ops sees New experiment
    assert 'id="new-experiment"' in html and 'href="/admin/experiments/experiment/add/"' in html
    assert 'href="/experiments/drafty/history"' in html and 'href="/review/drafty/"' in html
    assert 'href="/experiments/drafty/readout"' not in html


def test_home__reviewer__no_new_experiment_button(client, make_user, ux_experiment):
    ux_experiment("x")
    client.force_login(make_user("rv", groups=("reviewer",)))
    html = client.get("/").content.decode()
    assert 'id="new-experiment"' not in html
    assert "/admin/" not in html.split('id="experiment-list"')[1]


def test_home__many_decided_experiments__constant_queries(client, ux_owner, ux_experiment, django_assert_num_queries):
    from experiments.models import Decision

    def decide(slug):
        exp = ux_experiment(slug)
        Decision.objects.create(experiment=exp, outcome="shipped", rationale="Won.", decided_by=ux_owner,
                                shipped_variant=exp.variants.get(key="treatment"))  # fmt: skip

    # Given one decided experiment, the list's query count
    decide("decided-0")
    client.force_login(ux_owner)
    client.get("/")
    with CaptureQueriesContext(connection) as one:
        assert "Shipped treatment" in client.get("/").content.decode()
    # When there are six, Then the list takes the same number of queries (no query per decision)
    for i in range(1, 6):
        decide(f"decided-{i}")
    with django_assert_num_queries(len(one.captured_queries)):
        html = client.get("/").content.decode()
    assert html.count("Shipped treatment") == 6
