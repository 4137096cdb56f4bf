"""Ops in the Django admin: create, edit while draft, and run transitions (django-fsm-2 buttons/forms)
that execute the workflow services, so audit rows and decisions are written."""

from __future__ import annotations

import pytest

from experiments.models import AuditLog, Decision, Experiment
from tests.experiments.conftest import add_winning_events

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/experiments/experiment/add/"


def _change_url(experiment) -> str:
    return f"/admin/experiments/experiment/{experiment.pk}/change/"


def _transition_url(experiment, name) -> str:
    return f"/admin/experiments/experiment/{experiment.pk}/transition/{name}/"


def _last_audit(experiment):
    return AuditLog.objects.filter(experiment=experiment).order_by("-id").first()


@pytest.fixture
def admin_as(client, form_data):
    """admin_as(user) -> helpers to GET a page and POST its form back with overrides."""

    class _Admin:
        def __init__(self, user):
            client.force_login(user)
            self.client = client

        def submit(self, url, form_id="experiment_form", **overrides):
            page = client.get(url)
            assert page.status_code == 200, page.status_code
            data = form_data(page, form_id)
            data.update({k: v for k, v in overrides.items() if v is not None})
            return client.post(url, data)

        def transition(self, experiment, name):
            return self.submit(_change_url(experiment), _fsm_transition_to=name)

    return _Admin


def _messages(response) -> str:
    return " ".join(str(m) for m in response.wsgi_request._messages)


# --- create and edit --------------------------------------------------------------------------------------
def test_admin_add__ops_with_variants__draft_owned_by_ops_and_audited(admin_as, ops):
    # Given ops in the admin
    admin = admin_as(ops)
    # When they add an experiment with two variants
    response = admin.submit(
        ADD_URL,
        name="Checkout button",
        slug="checkout-button",
        hypothesis="Green lifts conversion",
        **{
            "variants-0-key": "control",
            "variants-0-name": "Control",
            "variants-0-is_control": "on",
            "variants-1-key": "green",
            "variants-1-name": "Green",
            "variants-1-weight": "3",
        },
    )
    # Then it is a draft owned by ops, with its variants, and its creation is audited
    assert response.status_code == 302
    experiment = Experiment.objects.get(slug="checkout-button")
    assert (experiment.status, experiment.owner) == ("draft", ops)
    assert sorted(experiment.variants.values_list("key", "is_control", "weight")) == [
        ("control", True, 1),
        ("green", False, 3),
    ]
    assert (_last_audit(experiment).transition, _last_audit(experiment).actor) == ("create", ops)


def test_admin_add__two_controls__form_error_nothing_saved(admin_as, ops):
    # Given ops in the admin
    admin = admin_as(ops)
    # When they add an experiment with two controls
    response = admin.submit(
        ADD_URL,
        name="X",
        slug="x",
        **{
            "variants-0-key": "a",
            "variants-0-name": "A",
            "variants-0-is_control": "on",
            "variants-1-key": "b",
            "variants-1-name": "B",
            "variants-1-is_control": "on",
        },
    )
    # Then the form is shown again with the error, and nothing was saved
    assert response.status_code == 200
    assert "Only one variant can be the control." in response.content.decode()
    assert not Experiment.objects.filter(slug="x").exists()


def test_admin_change__draft__plan_edit_saved(admin_as, ops, make_experiment):
    # Given a draft
    experiment = make_experiment()
    # When ops edits the hypothesis
    response = admin_as(ops).submit(_change_url(experiment), hypothesis="Sharper")
    # Then it is saved
    experiment.refresh_from_db()
    assert response.status_code == 302
    assert experiment.hypothesis == "Sharper"


@pytest.mark.parametrize("status", ["review", "running", "readout", "shipped"])
def test_admin_change__after_draft__plan_read_only_and_post_ignored(status, admin_as, ops, client, make_experiment):
    # Given an experiment that left draft
    experiment = make_experiment(status=status)
    admin = admin_as(ops)
    # When ops opens it, and posts edits to the plan and the variants anyway
    html = client.get(_change_url(experiment)).content.decode()
    response = admin.submit(
        _change_url(experiment),
        hypothesis="Changed after the fact",
        **{"variants-0-weight": "99", "variants-TOTAL_FORMS": "3", "variants-2-key": "sneaky", "variants-2-name": "S"},
    )
    # Then the plan fields are not editable, and nothing changed
    experiment.refresh_from_db()
    assert 'name="hypothesis"' not in html and 'name="variants-0-weight"' not in html
    assert 'name="_save"' not in html and 'name="_continue"' not in html
    assert response.status_code in (200, 302)
    assert experiment.hypothesis == "A green button lifts conversion."
    assert sorted(experiment.variants.values_list("key", "weight")) == [("control", 1), ("green", 1)]


# --- transitions with buttons --------------------------------------------------------------------------------
def test_admin_submit__complete_draft__review_and_audited(admin_as, ops, make_experiment):
    # Given a complete draft
    experiment = make_experiment()
    # When ops clicks "Submit for review" on the change page
    response = admin_as(ops).transition(experiment, "submit_for_review")
    # Then it is in review, audited, with a success message
    experiment.refresh_from_db()
    entry = _last_audit(experiment)
    assert response.status_code == 302
    assert experiment.status == "review"
    assert (entry.transition, entry.from_state, entry.to_state, entry.actor) == (
        "submit_for_review",
        "draft",
        "review",
        ops,
    )
    assert "is now in review" in _messages(response)


def test_admin_submit__incomplete_draft__error_lists_missing_and_unchanged(admin_as, ops, make_experiment):
    # Given a draft with no hypothesis and no variants
    experiment = make_experiment(complete=False)
    # When ops clicks "Submit for review"
    response = admin_as(ops).transition(experiment, "submit_for_review")
    # Then the error names what is missing, and it stays a draft with no submit audited
    experiment.refresh_from_db()
    assert "a hypothesis" in _messages(response) and "at least 2 variants" in _messages(response)
    assert experiment.status == "draft"
    assert _last_audit(experiment).transition == "create"


def test_admin_change_page__ops__only_their_available_transitions_shown(admin_as, client, ops, make_experiment):
    # Given experiments in review and running
    in_review = make_experiment("in-review", status="review")
    running = make_experiment("running", status="running")
    admin_as(ops)
    # When ops opens their change pages
    review_html = client.get(_change_url(in_review)).content.decode()
    running_html = client.get(_change_url(running)).content.decode()
    # Then ops cannot approve or request changes, but can end or kill a running one
    assert 'value="approve_and_start"' not in review_html and 'value="request_changes"' not in review_html
    assert 'value="end_for_readout"' in running_html and 'value="kill"' in running_html
    assert 'value="ship"' not in running_html


def test_admin_approve__superuser_not_owner__running_and_audited(admin_as, superuser, make_experiment):
    # Given an experiment in review owned by ops
    experiment = make_experiment(status="review")
    # When the superuser approves it in the admin
    admin_as(superuser).transition(experiment, "approve_and_start")
    # Then it runs and the approval is audited
    experiment.refresh_from_db()
    assert experiment.status == "running" and experiment.started_at is not None
    assert (_last_audit(experiment).transition, _last_audit(experiment).actor) == ("approve_and_start", superuser)


def test_admin_approve__owner__no_button_and_forged_post_403(admin_as, client, superuser, make_experiment):
    # Given an experiment in review owned by the superuser
    experiment = make_experiment(status="review", owner=superuser)
    admin = admin_as(superuser)
    # When they open it, and post the approve transition anyway
    html = client.get(_change_url(experiment)).content.decode()
    response = admin.transition(experiment, "approve_and_start")
    # Then there is no approve button and the post is forbidden
    experiment.refresh_from_db()
    assert 'value="approve_and_start"' not in html
    assert response.status_code == 403
    assert experiment.status == "review"


def test_admin_approve__ops_forged_post__403(admin_as, ops, make_experiment, make_user):
    # Given an experiment in review owned by someone else
    experiment = make_experiment(status="review", owner=make_user("ops2", groups=("ops",), is_staff=True))
    # When ops posts the approve transition
    response = admin_as(ops).transition(experiment, "approve_and_start")
    # Then it is forbidden
    experiment.refresh_from_db()
    assert response.status_code == 403
    assert experiment.status == "review"


def test_admin_end_for_readout__running__readout_and_audited(admin_as, ops, make_experiment):
    # Given a running experiment
    experiment = make_experiment(status="running")
    # When ops clicks "End for readout"
    admin_as(ops).transition(experiment, "end_for_readout")
    # Then it is in readout, audited
    experiment.refresh_from_db()
    assert experiment.status == "readout" and experiment.ended_at is not None
    assert (_last_audit(experiment).transition, _last_audit(experiment).actor) == ("end_for_readout", ops)


def test_admin_transition__wrong_state__error_message_and_unchanged(admin_as, ops, make_experiment):
    # Given a draft
    experiment = make_experiment()
    # When ops posts "End for readout" for it
    response = admin_as(ops).transition(experiment, "end_for_readout")
    # Then an error is shown and nothing changed
    experiment.refresh_from_db()
    assert "Cannot end for readout" in _messages(response)
    assert experiment.status == "draft"
    assert _last_audit(experiment).transition == "create"


@pytest.mark.parametrize("name", ["save", "delete", "plan_problems", "__class__"])
def test_admin_transition__not_a_transition__404(name, admin_as, client, ops, make_experiment):
    # Given a draft, When ops posts a name that is not a workflow transition
    experiment = make_experiment()
    response = admin_as(ops).transition(experiment, name)
    form_response = client.get(_transition_url(experiment, name))
    # Then it is not found, and nothing changed
    experiment.refresh_from_db()
    assert response.status_code == 404 and form_response.status_code == 404
    assert experiment.status == "draft"


# --- transitions with forms (comment / rationale) ---------------------------------------------------------------
def test_admin_ship__button__opens_rationale_form(admin_as, ops, make_experiment):
    # Given an experiment in readout, When ops clicks "Ship"
    experiment = make_experiment(status="readout")
    response = admin_as(ops).transition(experiment, "ship")
    # Then they are taken to the rationale form, and nothing has changed yet
    experiment.refresh_from_db()
    assert response.status_code == 302 and response["Location"] == _transition_url(experiment, "ship")
    assert experiment.status == "readout"


def test_admin_ship__with_rationale__shipped_decision_and_audit(admin_as, client, ops, make_experiment):
    # Given an experiment in readout whose treatment clearly wins
    experiment = make_experiment(status="readout")
    add_winning_events(experiment)
    admin = admin_as(ops)
    # When ops fills in the rationale form and applies it
    page = client.get(_transition_url(experiment, "ship")).content.decode()
    response = admin.submit(_transition_url(experiment, "ship"), form_id=None, rationale="Significant lift.")
    # Then it is shipped with a decision and an audit row, and ops is back on the change page
    experiment.refresh_from_db()
    decision = Decision.objects.get(experiment=experiment)
    assert 'name="rationale"' in page
    assert response.status_code == 302 and response["Location"] == _change_url(experiment)
    assert experiment.status == "shipped"
    assert (decision.outcome, decision.rationale, decision.decided_by) == ("shipped", "Significant lift.", ops)
    assert (_last_audit(experiment).transition, _last_audit(experiment).comment) == ("ship", "Significant lift.")


@pytest.mark.parametrize(("name", "status"), [("ship", "readout"), ("kill", "readout"), ("kill", "running")])
def test_admin_decide__blank_rationale__form_error_and_unchanged(name, status, admin_as, ops, make_experiment):
    # Given an experiment that can be decided
    experiment = make_experiment(status=status)
    # When ops applies the form without a rationale
    response = admin_as(ops).submit(_transition_url(experiment, name), form_id=None, rationale="   ")
    # Then the form is shown again with the error, and nothing was decided
    experiment.refresh_from_db()
    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert experiment.status == status
    assert not Decision.objects.filter(experiment=experiment).exists()


def test_admin_kill__running_with_rationale__killed_decision_and_audit(admin_as, ops, make_experiment):
    # Given a running experiment
    experiment = make_experiment(status="running")
    # When ops kills it with a rationale (emergency stop)
    admin_as(ops).submit(_transition_url(experiment, "kill"), form_id=None, rationale="Errors spiked.")
    # Then it is killed with a decision and an audit row
    experiment.refresh_from_db()
    assert experiment.status == "killed"
    assert Decision.objects.get(experiment=experiment).outcome == "killed"
    assert (_last_audit(experiment).from_state, _last_audit(experiment).to_state) == ("running", "killed")


def test_admin_ship__wrong_state__error_and_unchanged(admin_as, ops, make_experiment):
    # Given a running experiment (ship needs readout)
    experiment = make_experiment(status="running")
    # When ops posts the ship form
    response = admin_as(ops).submit(_transition_url(experiment, "ship"), form_id=None, rationale="Early win")
    # Then an error is shown and nothing was decided
    experiment.refresh_from_db()
    assert "Cannot ship" in _messages(response)
    assert experiment.status == "running"
    assert not Decision.objects.exists()


def test_admin_request_changes__superuser_with_comment__draft_and_audited(admin_as, superuser, make_experiment):
    # Given an experiment in review
    experiment = make_experiment(status="review")
    # When the superuser requests changes with a comment in the admin
    admin_as(superuser).submit(_transition_url(experiment, "request_changes"), form_id=None, comment="Add a guardrail")
    # Then it is back in draft, with the comment audited
    experiment.refresh_from_db()
    assert experiment.status == "draft"
    assert (_last_audit(experiment).transition, _last_audit(experiment).comment) == (
        "request_changes",
        "Add a guardrail",
    )


def test_admin_request_changes__blank_comment__form_error(admin_as, superuser, make_experiment):
    experiment = make_experiment(status="review")
    response = admin_as(superuser).submit(_transition_url(experiment, "request_changes"), form_id=None, comment="")
    experiment.refresh_from_db()
    assert response.status_code == 200 and "This field is required." in response.content.decode()
    assert experiment.status == "review"


@pytest.mark.parametrize(("name", "method"), [("request_changes", "get"), ("request_changes", "post")])
def test_admin_transition_form__ops_without_permission__403(name, method, client, ops, make_experiment):
    # Given an experiment in review and ops (who may not request changes)
    experiment = make_experiment(status="review")
    client.force_login(ops)
    # When ops opens or posts the request-changes form
    response = getattr(client, method)(_transition_url(experiment, name), {"comment": "x"} if method == "post" else {})
    # Then it is forbidden and nothing changed
    experiment.refresh_from_db()
    assert response.status_code == 403
    assert experiment.status == "review"


# --- lists, history and the read-only record -------------------------------------------------------------------------
def test_admin_changelist__filter_and_search__badges_shown(admin_as, client, ops, make_experiment):
    # Given experiments in different states
    make_experiment("alpha", status="review")
    make_experiment("beta")
    admin_as(ops)
    # When ops filters by status and searches
    filtered = client.get("/admin/experiments/experiment/?status__exact=review").content.decode()
    searched = client.get("/admin/experiments/experiment/?q=beta").content.decode()
    # Then the list shows status badges and only matching rows
    assert 'class="sd-badge sd-status-review"' in filtered
    assert "Alpha" in filtered and "Beta" not in filtered
    assert "Beta" in searched and "Alpha" not in searched


def test_admin_change_page__audit_history_shown_read_only(admin_as, client, ops, make_experiment):
    # Given a shipped experiment
    experiment = make_experiment(status="shipped")
    admin_as(ops)
    # When ops opens it
    html = client.get(_change_url(experiment)).content.decode()
    # Then the audit history and the decision are on the page, newest first
    assert html.index("Shipped</td>") < html.index("Created</td>")
    assert "Clear win." in html and "Readout at decision time" in html


def test_admin_auditlog__ops__view_only(client, ops, make_experiment):
    # Given an audit row, and ops in the admin
    entry = _last_audit(make_experiment())
    client.force_login(ops)
    base = "/admin/experiments/auditlog/"
    # When ops lists, opens, tries to add, change or delete audit rows
    listing = client.get(base)
    add = client.get(f"{base}add/")
    change_post = client.post(f"{base}{entry.pk}/change/", {"comment": "rewritten"})
    delete = client.post(f"{base}{entry.pk}/delete/", {"post": "yes"})
    # Then they can read but not write
    assert listing.status_code == 200
    assert add.status_code == 403 and change_post.status_code == 403 and delete.status_code == 403
    assert AuditLog.objects.get(pk=entry.pk).comment == ""


def test_admin_experiment__delete__refused(client, superuser, make_experiment):
    experiment = make_experiment()
    client.force_login(superuser)
    response = client.post(f"/admin/experiments/experiment/{experiment.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    assert Experiment.objects.filter(pk=experiment.pk).exists()


def test_admin__reviewer_not_staff__sent_to_admin_login(client, reviewer):
    client.force_login(reviewer)
    response = client.get("/admin/experiments/experiment/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
