"""Reviewer views and the timeline, through the real URLs with the Django test client."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.test import Client

from experiments.models import AuditLog, Experiment

pytestmark = pytest.mark.django_db


@pytest.fixture
def as_user(client):
    def _as(user):
        client.force_login(user)
        return client

    return _as


# --- login and permissions on the pages -------------------------------------------------------------------
@pytest.mark.parametrize("url", ["/review/", "/review/checkout-button/", "/experiments/checkout-button/history"])
def test_pages__anonymous__redirected_to_login(url, client, make_experiment):
    # Given an experiment, and nobody logged in
    make_experiment(status="review")
    # When an anonymous visitor opens the page
    response = client.get(url)
    # Then they are sent to the login page
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("url", ["/review/", "/review/checkout-button/"])
def test_review_pages__user_without_role__403(url, as_user, outsider, make_experiment):
    # Given a logged-in user with no role
    make_experiment(status="review")
    # When they open a review page
    response = as_user(outsider).get(url)
    # Then it is forbidden
    assert response.status_code == 403


@pytest.mark.parametrize("action", ["approve", "request-changes"])
def test_review_actions__anonymous_post__redirected_and_unchanged(action, client, make_experiment):
    # Given an experiment in review
    experiment = make_experiment(status="review")
    # When an anonymous visitor posts the action
    response = client.post(f"/review/{experiment.slug}/{action}", {"comment": "x"})
    # Then they are sent to login and nothing happened
    experiment.refresh_from_db()
    assert response.status_code == 302
    assert experiment.status == "review"


def test_review_approve__get__405(as_user, reviewer, make_experiment):
    # Given an experiment in review
    experiment = make_experiment(status="review")
    # When a reviewer GETs the approve URL
    response = as_user(reviewer).get(f"/review/{experiment.slug}/approve")
    # Then it is not allowed (state changes need POST) and nothing changed
    experiment.refresh_from_db()
    assert response.status_code == 405
    assert experiment.status == "review"


def test_review_approve__no_csrf_token__403(reviewer, make_experiment):
    # Given a browser-like client that enforces CSRF, logged in as a reviewer
    experiment = make_experiment(status="review")
    client = Client(enforce_csrf_checks=True)
    client.force_login(reviewer)
    # When it posts approve without the CSRF token
    response = client.post(f"/review/{experiment.slug}/approve")
    # Then it is refused and nothing changed
    experiment.refresh_from_db()
    assert response.status_code == 403
    assert experiment.status == "review"


def test_review_detail__reviewer__forms_carry_csrf_token(reviewer, make_experiment, form_data):
    # Given an experiment in review and a CSRF-enforcing client
    experiment = make_experiment(status="review")
    client = Client(enforce_csrf_checks=True)
    client.force_login(reviewer)
    # When the reviewer opens the page and posts the request-changes form as a browser would
    page = client.get(f"/review/{experiment.slug}/")
    data = form_data(page)
    assert "csrfmiddlewaretoken" in data
    response = client.post(f"/review/{experiment.slug}/approve", data)
    # Then the post is accepted
    assert response.status_code == 302


# --- approve -------------------------------------------------------------------------------------------------
def test_review_approve__reviewer__running_audited_and_redirected(as_user, reviewer, make_experiment):
    # Given an experiment in review owned by ops
    experiment = make_experiment(status="review")
    # When a reviewer approves it in /review/
    response = as_user(reviewer).post(f"/review/{experiment.slug}/approve", follow=True)
    # Then it runs, the approval is audited, and the reviewer is back on the queue with a message
    experiment.refresh_from_db()
    entry = AuditLog.objects.filter(experiment=experiment).order_by("-id").first()
    assert experiment.status == "running"
    assert (entry.transition, entry.from_state, entry.to_state, entry.actor) == (
        "approve_and_start",
        "review",
        "running",
        reviewer,
    )
    assert response.redirect_chain[-1][0] == "/review/"
    assert "Approved and started" in response.content.decode()


@pytest.mark.parametrize("status", ["draft", "running", "readout", "shipped", "killed"])
def test_review_approve__wrong_state__409_and_unchanged(status, as_user, reviewer, make_experiment):
    # Given an experiment that is not in review
    experiment = make_experiment(status=status)
    count = AuditLog.objects.count()
    # When a reviewer posts approve
    response = as_user(reviewer).post(f"/review/{experiment.slug}/approve")
    # Then it is a conflict, shown to the user, and nothing changed
    experiment.refresh_from_db()
    assert response.status_code == 409
    assert "Cannot approve and start" in response.content.decode()
    assert experiment.status == status
    assert AuditLog.objects.count() == count


@pytest.mark.parametrize("who", ["ops", "outsider"])
def test_review_approve__missing_permission__403(who, as_user, make_experiment, request, make_user):
    # Given an experiment in review owned by someone else, and a user who may not approve
    experiment = make_experiment(status="review", owner=make_user("other-owner", groups=("ops",)))
    # When they post approve
    response = as_user(request.getfixturevalue(who)).post(f"/review/{experiment.slug}/approve")
    # Then it is forbidden and nothing changed
    experiment.refresh_from_db()
    assert response.status_code == 403
    assert experiment.status == "review"


def test_review_approve__owner_approves_own__403_and_button_hidden(as_user, make_user, make_experiment):
    # Given a reviewer who owns an experiment in review
    owner = make_user("reviewer-owner", groups=("reviewer",))
    experiment = make_experiment(status="review", owner=owner)
    client = as_user(owner)
    # When they open it, and then post approve anyway
    page = client.get(f"/review/{experiment.slug}/").content.decode()
    response = client.post(f"/review/{experiment.slug}/approve")
    # Then the page has no approve button, and the post is forbidden (separation of duties)
    experiment.refresh_from_db()
    assert "approve-form" not in page
    assert "separation of duties" in page
    assert response.status_code == 403
    assert experiment.status == "review"


# --- request changes -------------------------------------------------------------------------------------------
def test_review_request_changes__with_comment__draft_and_audited(as_user, reviewer, make_experiment):
    # Given an experiment in review
    experiment = make_experiment(status="review")
    # When a reviewer requests changes with a comment
    response = as_user(reviewer).post(
        f"/review/{experiment.slug}/request-changes", {"comment": "Define the guardrail metric."}
    )
    # Then it is back in draft and the comment is audited
    experiment.refresh_from_db()
    entry = AuditLog.objects.filter(experiment=experiment).order_by("-id").first()
    assert response.status_code == 302
    assert experiment.status == "draft"
    assert (entry.transition, entry.comment, entry.actor) == (
        "request_changes",
        "Define the guardrail metric.",
        reviewer,
    )


@pytest.mark.parametrize("data", [{}, {"comment": ""}, {"comment": "   "}])
def test_review_request_changes__missing_comment__400_with_error(data, as_user, reviewer, make_experiment):
    # Given an experiment in review
    experiment = make_experiment(status="review")
    # When a reviewer requests changes without a comment
    response = as_user(reviewer).post(f"/review/{experiment.slug}/request-changes", data)
    # Then the page is shown again with the error, and nothing changed
    experiment.refresh_from_db()
    assert response.status_code == 400
    assert "A comment is required." in response.content.decode()
    assert experiment.status == "review"


@pytest.mark.parametrize("status", ["draft", "running", "readout", "shipped", "killed"])
def test_review_request_changes__wrong_state__409(status, as_user, reviewer, make_experiment):
    # Given an experiment not in review
    experiment = make_experiment(status=status)
    # When a reviewer requests changes
    response = as_user(reviewer).post(f"/review/{experiment.slug}/request-changes", {"comment": "c"})
    # Then it is a conflict and nothing changed
    experiment.refresh_from_db()
    assert response.status_code == 409
    assert experiment.status == status


@pytest.mark.parametrize("who", ["ops", "outsider"])
def test_review_request_changes__missing_permission__403(who, as_user, make_experiment, request):
    # Given an experiment in review
    experiment = make_experiment(status="review")
    # When a user without the permission requests changes
    response = as_user(request.getfixturevalue(who)).post(
        f"/review/{experiment.slug}/request-changes", {"comment": "c"}
    )
    # Then it is forbidden and nothing changed
    experiment.refresh_from_db()
    assert response.status_code == 403
    assert experiment.status == "review"


# --- queue: age and SLA ------------------------------------------------------------------------------------------
def _submit_at(freeze, make_experiment, slug, at):
    freeze(at)
    return make_experiment(slug, status="review")


def test_review_queue__waiting_over_two_working_days__highlighted(as_user, reviewer, freeze, make_experiment):
    # Given three experiments submitted at fixed times:
    #   Fri 10:00 -> now Tue 09:00 is 14h + 24h + 9h = 47h of weekday time: within SLA (weekend skipped)
    #   Thu 09:00 -> 15h + 24h (Fri) + 24h (Mon) + 9h = 72h: over SLA
    #   Tue 08:00 -> 1h: fresh
    _submit_at(freeze, make_experiment, "fri-submit", datetime(2025, 3, 7, 10, 0, tzinfo=UTC))
    _submit_at(freeze, make_experiment, "thu-submit", datetime(2025, 3, 6, 9, 0, tzinfo=UTC))
    _submit_at(freeze, make_experiment, "tue-submit", datetime(2025, 3, 11, 8, 0, tzinfo=UTC))
    freeze(datetime(2025, 3, 11, 9, 0, tzinfo=UTC))
    # When the reviewer opens the queue
    html = as_user(reviewer).get("/review/").content.decode()
    # Then the rows are oldest first, only the Thursday one is highlighted, with calendar ages shown
    rows = [line for line in html.splitlines() if 'class="queue-row' in line]
    assert [r.split('data-slug="')[1].split('"')[0] for r in rows] == ["thu-submit", "fri-submit", "tue-submit"]
    assert ["overdue" in r for r in rows] == [True, False, False]
    assert "5d 0h" in html  # Thu 09:00 -> Tue 09:00
    assert "3.0 working days" in html
    assert "1.96 working days" not in html and "2.0 working days" in html  # Fri: 47h = 1.96 -> "2.0"


def test_review_queue__resubmitted__age_counts_from_last_submission(as_user, reviewer, freeze, make_experiment):
    # Given an experiment submitted long ago, sent back, and resubmitted this morning
    freeze(datetime(2025, 3, 3, 9, 0, tzinfo=UTC))
    experiment = make_experiment(status="review")
    from experiments import services

    services.experiment_request_changes(experiment=experiment, actor=reviewer, comment="More detail")
    freeze(datetime(2025, 3, 11, 8, 0, tzinfo=UTC))
    services.experiment_submit_for_review(experiment=experiment, actor=experiment.owner)
    freeze(datetime(2025, 3, 11, 9, 0, tzinfo=UTC))
    # When the queue is shown
    html = as_user(reviewer).get("/review/").content.decode()
    # Then its age is one hour and it is not highlighted
    assert "1h 0m" in html
    assert "overdue" not in html.split("<tbody>")[1]


def test_review_queue__many_experiments__constant_queries(
    as_user, reviewer, make_experiment, django_assert_num_queries
):
    # Given several experiments in review (and some not)
    for i in range(5):
        make_experiment(f"exp-{i}", status="review")
    make_experiment("a-draft")
    client = as_user(reviewer)
    # When the queue is rendered, Then it takes a fixed number of queries (session, user, user + group perms, queue)
    with django_assert_num_queries(5):
        response = client.get("/review/")
    assert response.content.decode().count('class="queue-row') == 5


# --- detail and timeline ------------------------------------------------------------------------------------------
def test_review_detail__plan__shows_hypothesis_variants_weights_owner_history(as_user, reviewer, make_experiment):
    # Given an experiment in review
    experiment = make_experiment(status="review")
    # When the reviewer opens it
    html = as_user(reviewer).get(f"/review/{experiment.slug}/").content.decode()
    # Then the plan and its history are on the page with both forms
    for text in ("A green button lifts conversion.", "control", "green", "50.0%", "ops", "conversion"):
        assert text in html
    assert "Submitted for review" in html
    assert 'name="comment"' in html and "approve-form" in html


def test_pages__html_in_user_content__escaped(as_user, reviewer, ops, make_experiment):
    # Given an experiment whose name and hypothesis contain markup, and a comment with markup
    from experiments import services

    experiment = make_experiment(status="review")
    Experiment.objects.filter(pk=experiment.pk).update(name="<b>bold</b>", hypothesis="<script>alert(1)</script>")
    services.experiment_request_changes(experiment=experiment, actor=reviewer, comment="<img src=x onerror=alert(1)>")
    services.experiment_submit_for_review(experiment=experiment, actor=ops)
    client = as_user(reviewer)
    # When the pages are rendered
    pages = [
        client.get(u).content.decode()
        for u in ("/review/", f"/review/{experiment.slug}/", f"/experiments/{experiment.slug}/history")
    ]
    # Then the markup is shown as text, never interpreted
    for html in pages:
        assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    for html in pages[1:]:
        assert "<script>alert(1)</script>" not in html
        assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_history__shipped__every_step_and_decision_with_actor_and_time(as_user, reviewer, make_experiment):
    # Given an experiment taken all the way to shipped
    experiment = make_experiment(status="shipped")
    # When a user who may read experiments opens its timeline
    response = as_user(reviewer).get(f"/experiments/{experiment.slug}/history")
    html = response.content.decode()
    # Then every step is listed in order with its actor, and the decision with its rationale
    assert response.status_code == 200
    steps = ["Created", "Submitted for review", "Approved and started", "Ended for readout", "Shipped"]
    positions = [html.index(f"<td>{s}</td>") for s in steps]
    assert positions == sorted(positions)
    assert "approver" in html and "Clear win." in html
    assert "Decision:" in html and "Readout at decision time" in html


def test_history__unknown_slug__404(as_user, reviewer):
    assert as_user(reviewer).get("/experiments/nope/history").status_code == 404
