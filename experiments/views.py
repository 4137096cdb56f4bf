"""Reviewer pages and the experiment timeline. Parse input, call one service or selector, render."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from experiments import selectors, services
from experiments.forms import RequestChangesForm
from experiments.models import PERM_APPROVE, PERM_REQUEST_CHANGES
from experiments.services import WorkflowError
from signaldash.permissions import experiment_read_required, private_no_store

VIEW_PERM = "experiments.view_experiment"


@require_GET
@permission_required(VIEW_PERM, raise_exception=True)
def review_queue(request: HttpRequest) -> HttpResponse:
    rows = selectors.review_queue()
    return render(
        request,
        "review/queue.html",
        {"rows": rows, "sla_days": selectors.REVIEW_SLA_WORKING_DAYS},
    )


def _render_review_detail(
    request: HttpRequest,
    slug: str,
    *,
    form: RequestChangesForm | None = None,
    error: WorkflowError | None = None,
) -> HttpResponse:
    experiment = selectors.experiment_get_by_slug(slug=slug)
    is_review = experiment.status == experiment.Status.REVIEW
    context = {
        "experiment": experiment,
        "shares": selectors.variant_shares(experiment=experiment),
        "entries": selectors.experiment_audit_entries(experiment=experiment),
        "is_owner": experiment.owner_id == request.user.pk,
        "can_approve": is_review and request.user.has_perm(PERM_APPROVE) and experiment.owner_id != request.user.pk,
        "can_request_changes": is_review and request.user.has_perm(PERM_REQUEST_CHANGES),
        "form": form or RequestChangesForm(),
        "error": error,
    }
    status = 200 if error is None else (409 if error.code == "invalid_state" else 400)
    return render(request, "review/detail.html", context, status=status)


@require_GET
@permission_required(VIEW_PERM, raise_exception=True)
def review_detail(request: HttpRequest, slug: str) -> HttpResponse:
    return _render_review_detail(request, slug)


@require_POST
@permission_required(VIEW_PERM, raise_exception=True)
def review_approve(request: HttpRequest, slug: str) -> HttpResponse:
    experiment = selectors.experiment_get_by_slug(slug=slug)
    try:
        services.experiment_approve_and_start(experiment=experiment, actor=request.user)
    except WorkflowError as exc:
        return _render_review_detail(request, slug, error=exc)
    messages.success(request, f"Approved and started “{experiment.name}”.")
    return redirect("experiments:review_queue")


@require_POST
@permission_required(VIEW_PERM, raise_exception=True)
def review_request_changes(request: HttpRequest, slug: str) -> HttpResponse:
    experiment = selectors.experiment_get_by_slug(slug=slug)
    form = RequestChangesForm(request.POST)
    try:
        services.experiment_request_changes(
            experiment=experiment, actor=request.user, comment=request.POST.get("comment", "")
        )
    except WorkflowError as exc:
        form.is_valid()  # show the field error next to the textarea
        return _render_review_detail(request, slug, form=form, error=exc)
    messages.success(request, f"Sent “{experiment.name}” back to draft with your comment.")
    return redirect("experiments:review_queue")


@require_GET
@experiment_read_required
def experiment_history(request: HttpRequest, slug: str) -> HttpResponse:
    experiment = selectors.experiment_get_by_slug(slug=slug)
    return render(
        request,
        "experiments/history.html",
        {
            "experiment": experiment,
            "entries": selectors.experiment_audit_entries(experiment=experiment),
            "decision": selectors.experiment_decision(experiment=experiment),
        },
    )


@require_GET
@experiment_read_required
@private_no_store
def decision_bundle(request: HttpRequest, slug: str) -> HttpResponse:
    """The readout bundle recorded with the decision: the evidence exactly as it was when decided."""
    experiment = selectors.experiment_get_by_slug(slug=slug)
    decision = selectors.experiment_decision(experiment=experiment)
    if decision is None or not decision.readout_bundle:
        raise Http404("No decision with a readout bundle has been recorded for this experiment.")
    response = HttpResponse(bytes(decision.readout_bundle), content_type="application/zip")
    filename = f"{experiment.slug}-decision-{decision.decided_at:%Y%m%d}.zip"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
