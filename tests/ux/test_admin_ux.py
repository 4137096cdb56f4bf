"""The admin explains: what blocks Submit, plain-word constraint errors, one API-key screen, readable decisions."""

from __future__ import annotations

import pytest
from django.contrib import admin

from experiments import services
from experiments.models import Experiment, Variant

pytestmark = pytest.mark.django_db


@pytest.fixture
def ops_client(client, ux_owner):
    client.force_login(ux_owner)
    return client


def _draft(owner, slug="nav", hypothesis=""):
    exp = Experiment.objects.create(name=slug.title(), slug=slug, owner=owner, hypothesis=hypothesis)
    Variant.objects.create(experiment=exp, key="control", name="Control", is_control=True, weight=1)
    return exp


def test_admin_change_page__incomplete_draft__submit_visible_and_says_what_is_missing(ops_client, ux_owner):
    # Given a draft without a hypothesis and with one variant
    exp = _draft(ux_owner)
    # When ops opens it
    html = ops_client.get(f"/admin/experiments/experiment/{exp.pk}/change/").content.decode()
    # Then Submit for review is there, with exactly what is missing
    assert 'value="submit_for_review"' in html
    assert "Not ready to submit: the plan needs a hypothesis, at least 2 variants (has 1)" in html
    # And pressing it explains again, changing nothing
    response = ops_client.post(
        f"/admin/experiments/experiment/{exp.pk}/change/",
        {
            "_fsm_transition_to": "submit_for_review",
            **_management_forms(exp),
            **_plan_fields(exp),
        },
        follow=True,
    )
    assert "cannot be submitted yet; it needs a hypothesis" in response.content.decode()
    exp.refresh_from_db()
    assert exp.status == "draft"


def _plan_fields(exp):
    return {
        "name": exp.name,
        "slug": exp.slug,
        "owner": exp.owner_id,
        "hypothesis": exp.hypothesis,
        "primary_metric": exp.primary_metric,
        "analysis": "fixed",
        "alpha": "0.05",
        "power": "0.8",
        "dimensions": "[]",
        "coverage": "1",
        "targeting": "{}",
    }


def _management_forms(exp, variants=None):
    rows = (
        variants
        if variants is not None
        else [(v.pk, v.key, v.name, v.is_control, v.weight) for v in exp.variants.all()]
    )
    data = {
        "metrics-TOTAL_FORMS": "0",
        "metrics-INITIAL_FORMS": "0",
        "variants-TOTAL_FORMS": str(len(rows)),
        "variants-INITIAL_FORMS": str(sum(1 for r in rows if r[0])),
    }
    for i, (pk, key, name, is_control, weight) in enumerate(rows):
        data.update(
            {
                f"variants-{i}-id": pk or "",
                f"variants-{i}-experiment": exp.pk,
                f"variants-{i}-key": key,
                f"variants-{i}-name": name,
                f"variants-{i}-weight": str(weight),
            }
        )
        if is_control:
            data[f"variants-{i}-is_control"] = "on"
    return data


def test_admin_variant__weight_zero__plain_words_field_error(ops_client, ux_owner):
    # Given a draft, when ops adds a variant with weight 0
    exp = _draft(ux_owner, hypothesis="Something")
    control = exp.variants.get()
    rows = [(control.pk, "control", "Control", True, 1), (None, "green", "Green", False, 0)]
    response = ops_client.post(
        f"/admin/experiments/experiment/{exp.pk}/change/",
        {**_plan_fields(exp), **_management_forms(exp, rows), "_continue": "1"},
    )
    html = response.content.decode()
    # Then the form says why in plain words, next to the field, and nothing is saved
    assert response.status_code == 200
    assert "The weight must be 1 or more" in html
    assert "Constraint" not in html
    assert not exp.variants.filter(key="green").exists()


def test_admin_site__branding_and_one_api_key_screen(ops_client):
    from rest_framework_api_key.models import APIKey

    from tracking.models import ServiceAPIKey

    # Then the site is branded and only the service keys have an admin screen
    assert admin.site.site_header == "Signal Dash"
    assert not admin.site.is_registered(APIKey)
    assert admin.site.is_registered(ServiceAPIKey)
    assert "Signal Dash" in ops_client.get("/admin/").content.decode()


def test_admin_draft__changes_requested__banner_for_the_owner(ops_client, ux_owner, make_user):
    # Given a plan a reviewer sent back with a comment
    exp = _draft(ux_owner, hypothesis="Green converts better.")
    Variant.objects.create(experiment=exp, key="green", name="Green", weight=1)
    reviewer = make_user("rev", groups=("reviewer",))
    services.experiment_submit_for_review(experiment=exp, actor=ux_owner)
    services.experiment_request_changes(
        experiment=exp, actor=reviewer, comment="Add a guardrail on refunds <b>please</b>."
    )
    # When the owner opens the draft in the admin
    html = ops_client.get(f"/admin/experiments/experiment/{exp.pk}/change/").content.decode()
    # Then the comment is a banner at the top (escaped), with links to the timeline and the review page
    assert "sd-changes-requested" in html
    assert "Add a guardrail on refunds &lt;b&gt;please&lt;/b&gt;." in html
    assert f'href="/experiments/{exp.slug}/history"' in html and f'href="/review/{exp.slug}/"' in html


def test_admin_primary_metric__with_plan__chosen_from_planned_metrics(ops_client, ux_experiment):
    # Given a draft with a metric plan
    exp = ux_experiment(
        "planned",
        metrics=[("purchase", "primary", "binary", "increase"), ("refund", "guardrail", "binary", "decrease")],
    )
    # When ops opens it
    html = ops_client.get(f"/admin/experiments/experiment/{exp.pk}/change/").content.decode()
    # Then the primary metric is a choice among the planned metrics, not free text
    assert '<select name="primary_metric"' in html
    assert '<option value="refund">refund (guardrail)</option>' in html


def test_decision_snapshot__admin_and_timeline__tables_not_json(ops_client, ux_experiment, ux_events, make_user):
    # Given a killed experiment (the decision freezes the readout)
    exp = ux_experiment("decided")
    ux_events(exp, "control", users=300, converted=30)
    ux_events(exp, "treatment", users=300, converted=20)
    Experiment.objects.filter(pk=exp.pk)  # status moves only through services
    exp.hypothesis = "Treatment converts better."
    exp.save()
    reviewer = make_user("rev2", groups=("reviewer",))
    services.experiment_submit_for_review(experiment=exp, actor=exp.owner)
    services.experiment_approve_and_start(experiment=exp, actor=reviewer)
    services.experiment_kill(experiment=exp, actor=exp.owner, rationale="Worse: 6.67% vs 10.00%.")
    # When the decision is shown in the admin and on the timeline
    pages = [
        ops_client.get(f"/admin/experiments/experiment/{exp.pk}/change/").content.decode(),
        ops_client.get(f"/admin/experiments/decision/{exp.decision.pk}/change/").content.decode(),
        ops_client.get(f"/experiments/{exp.slug}/history").content.decode(),
    ]
    # Then it is a readout table with people's numbers, not JSON
    for html in pages:
        assert 'class="grid sd-snapshot"' in html
        assert "6.67%" in html and "10.00%" in html and "\u22123.33 pp" in html
        assert '"comparisons"' not in html
