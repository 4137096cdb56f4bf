"""Layer ranges never overlap among running experiments: approval refuses an overlap (`layer_overlap`), also
when two approvals race (PostgreSQL, separate connections), and the review page shows the refusal."""

from __future__ import annotations

import pytest

from experiments import services
from experiments.models import Experiment, Layer
from experiments.services import WorkflowError
from tests.experiments.test_concurrency import _race


def in_layer(make_experiment, ops, slug: str, layer: Layer, start: float, end: float, *, status="review"):
    """An experiment with a layer range, driven to `status` (review or running) through the services."""
    experiment = make_experiment(slug)
    experiment.layer, experiment.layer_start, experiment.layer_end = layer, start, end
    services.experiment_save_plan(experiment=experiment, actor=ops)
    services.experiment_submit_for_review(experiment=experiment, actor=ops)
    return experiment


@pytest.fixture
def layer(db):
    return Layer.objects.create(key="checkout", name="Checkout")


@pytest.mark.django_db
def test_approve__range_overlaps_running__refused_layer_overlap_with_names(make_experiment, ops, approver, layer):
    # Given a running experiment on [0, 0.5) of a layer
    first = in_layer(make_experiment, ops, "one-page", layer, 0, 0.5)
    services.experiment_approve_and_start(experiment=first, actor=approver)
    # And another in review on [0.4, 0.8)
    second = in_layer(make_experiment, ops, "express-pay", layer, 0.4, 0.8)
    # When it is approved
    with pytest.raises(WorkflowError) as exc:
        services.experiment_approve_and_start(experiment=second, actor=approver)
    # Then it is refused with the conflicting experiment's name, and stays in review
    assert exc.value.code == "layer_overlap"
    assert exc.value.problems == ["one-page"]
    assert "One Page" in exc.value.message and "0–0.5" in exc.value.message
    second.refresh_from_db()
    assert second.status == "review"


@pytest.mark.django_db
def test_approve__adjacent_ranges__both_run(make_experiment, ops, approver, layer):
    first = in_layer(make_experiment, ops, "left", layer, 0, 0.5)
    second = in_layer(make_experiment, ops, "right", layer, 0.5, 1)
    services.experiment_approve_and_start(experiment=first, actor=approver)
    services.experiment_approve_and_start(experiment=second, actor=approver)
    assert set(Experiment.objects.filter(layer=layer).values_list("status", flat=True)) == {"running"}


@pytest.mark.django_db
def test_approve__overlap_with_ended_experiment__allowed(make_experiment, ops, approver, layer):
    first = in_layer(make_experiment, ops, "old", layer, 0, 1)
    services.experiment_approve_and_start(experiment=first, actor=approver)
    services.experiment_end_for_readout(experiment=first, actor=ops)
    second = in_layer(make_experiment, ops, "new", layer, 0, 1)
    services.experiment_approve_and_start(experiment=second, actor=approver)
    assert Experiment.objects.get(slug="new").status == "running"


@pytest.mark.django_db
def test_review_page__approve_overlap__shows_layer_overlap(client, make_experiment, ops, approver, layer):
    first = in_layer(make_experiment, ops, "one-page", layer, 0, 0.5)
    services.experiment_approve_and_start(experiment=first, actor=approver)
    in_layer(make_experiment, ops, "express-pay", layer, 0.25, 0.75)
    client.force_login(approver)
    response = client.post("/review/express-pay/approve")
    assert response.status_code in (400, 409)
    assert "overlaps running experiment One Page (one-page, 0–0.5)" in response.content.decode()


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_approve__two_overlapping_approvals_race__one_wins_other_layer_overlap(make_experiment, ops, make_user):
    # Given two experiments in review with overlapping ranges of one layer, and two reviewers
    from tests.experiments.conftest import ensure_workflow_groups

    ensure_workflow_groups()
    layer = Layer.objects.create(key="race", name="Race")
    a = in_layer(make_experiment, ops, "race-a", layer, 0, 0.6)
    b = in_layer(make_experiment, ops, "race-b", layer, 0.4, 1)
    first, second = make_user("r1", groups=("reviewer",)), make_user("r2", groups=("reviewer",))
    targets = {first.pk: a.pk, second.pk: b.pk}

    def approve(_experiment, actor):
        services.experiment_approve_and_start(experiment=Experiment.objects.get(pk=targets[actor.pk]), actor=actor)

    # When both are approved at the same moment, from separate connections
    outcomes = _race(a.pk, [first, second], action=approve)
    # Then one runs and the other is refused with layer_overlap
    assert outcomes == ["ok", "refused:layer_overlap"]
    assert sorted(Experiment.objects.filter(layer=layer).values_list("status", flat=True)) == ["review", "running"]


@pytest.mark.django_db
def test_admin_layer_page__svg_of_ranges_with_experiments(client, superuser, make_experiment, ops, approver, layer):
    # Given a running experiment on [0, 0.5) and one in review on [0.5, 1)
    left = in_layer(make_experiment, ops, "left", layer, 0, 0.5)
    services.experiment_approve_and_start(experiment=left, actor=approver)
    in_layer(make_experiment, ops, "right", layer, 0.5, 1)
    client.force_login(superuser)
    # When the layer's admin page is opened
    page = client.get(f"/admin/experiments/layer/{layer.pk}/change/").content.decode()
    # Then it draws one bar per experiment at its range, server-side
    assert '<svg class="layer-ranges"' in page
    assert 'data-experiment="left" data-status="running"' in page
    assert '<rect x="0.0" y="24" width="320.0"' in page
    assert 'data-experiment="right" data-status="review"' in page
    assert '<rect x="320.0" y="50" width="320.0"' in page
    # And the list shows the picture too
    assert '<svg class="layer-ranges"' in client.get("/admin/experiments/layer/").content.decode()


@pytest.mark.django_db
def test_admin_experiment_form__bad_targeting_and_range__field_errors(client, superuser, make_experiment, layer):
    experiment = make_experiment("form-check")
    client.force_login(superuser)
    url = f"/admin/experiments/experiment/{experiment.pk}/change/"
    form = client.get(url).context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None and not isinstance(v, list | dict)}
    data.update(
        {
            "targeting": '{"country": {"$in": "DE"}}',
            "layer": layer.pk,
            "layer_start": "0.7",
            "layer_end": "0.2",
            "coverage": "1",
            "dimensions": "[]",
            "metrics-TOTAL_FORMS": "0",
            "metrics-INITIAL_FORMS": "0",
            "variants-TOTAL_FORMS": "0",
            "variants-INITIAL_FORMS": "0",
        }
    )
    response = client.post(url, data)
    errors = response.context["adminform"].form.errors
    assert "country.$in: must be a list" in errors["targeting"][0]
    assert "0 ≤ start < end ≤ 1" in errors["layer_end"][0]


@pytest.mark.django_db
def test_review_page__assignment_plan_in_words(client, make_experiment, ops, approver, layer):
    holdout = make_experiment("holdout-q1", status="running")
    experiment = make_experiment("worded")
    experiment.coverage, experiment.targeting = 0.1, {"country": {"$in": ["DE"]}}
    experiment.layer, experiment.layer_start, experiment.layer_end = layer, 0.25, 0.5
    experiment.holdout = holdout
    services.experiment_save_plan(experiment=experiment, actor=ops)
    services.experiment_submit_for_review(experiment=experiment, actor=ops)
    client.force_login(approver)
    page = client.get("/review/worded/").content.decode()
    assert "Coverage: 10% of eligible users are enrolled" in page
    assert "Layer: claims 25% to 50% of layer &#x27;checkout&#x27; (25% of its users)" in page
    assert "Holdout: users held out by &#x27;holdout-q1&#x27; (its control group) are never enrolled." in page
    assert "Targeting: only users whose attributes match" in page


@pytest.mark.django_db
def test_admin_approve__overlap__refusal_with_names_shown_on_the_change_page(
    client, form_data, superuser, make_experiment, ops, approver, layer
):
    # Given two running experiments on [0, 0.3) and [0.3, 0.6) of a layer, and one in review on [0.2, 0.5)
    for slug, start, end in (("one-page", 0, 0.3), ("wallet-first", 0.3, 0.6)):
        services.experiment_approve_and_start(
            experiment=in_layer(make_experiment, ops, slug, layer, start, end), actor=approver
        )
    third = in_layer(make_experiment, ops, "express-pay", layer, 0.2, 0.5)
    client.force_login(superuser)
    url = f"/admin/experiments/experiment/{third.pk}/change/"
    # When a superuser presses "approve and start" on its admin page (the form as a browser posts it)
    data = {**form_data(client.get(url), "experiment_form"), "_fsm_transition_to": "approve_and_start"}
    page = client.post(url, data, follow=True)
    # Then the page it lands on shows the refusal as an error message naming both conflicting experiments
    html = page.content.decode()
    assert page.status_code == 200
    message = (
        "Cannot approve &#x27;express-pay&#x27;: its range 0.2–0.5 of layer &#x27;checkout&#x27; overlaps running "
        "experiments One Page (one-page, 0–0.3), Wallet First (wallet-first, 0.3–0.6)."
    )
    assert '<ul class="messagelist">' in html and f'<li class="error">{message}</li>' in html
    # And nothing changed
    third.refresh_from_db()
    assert third.status == "review"


@pytest.mark.django_db
def test_review_page__approve_overlap__refusal_inside_the_review_page(client, make_experiment, ops, approver, layer):
    # Given a running experiment on [0, 0.5) and one in review on [0.25, 0.75)
    services.experiment_approve_and_start(
        experiment=in_layer(make_experiment, ops, "one-page", layer, 0, 0.5), actor=approver
    )
    in_layer(make_experiment, ops, "express-pay", layer, 0.25, 0.75)
    client.force_login(approver)
    # When the reviewer approves it on its review page
    response = client.post("/review/express-pay/approve")
    # Then the review page itself comes back (its plan in words and buttons) with the refusal and the name
    html = response.content.decode()
    assert response.status_code in (400, 409)
    assert "<html" in html and "/review/express-pay/approve" in html
    assert "overlaps running experiment One Page (one-page, 0–0.5)" in html
    assert Experiment.objects.get(slug="express-pay").status == "review"
