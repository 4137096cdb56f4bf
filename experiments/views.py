"""Reviewer pages and the experiment timeline. Parse input, call one service or selector, render."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from experiments import selectors, services
from experiments.forms import DecisionForm, RequestChangesForm, ShipForm
from experiments.layers import assignment_plan_sentences
from experiments.models import PERM_APPROVE, PERM_KILL, PERM_REQUEST_CHANGES, PERM_SHIP, Experiment, Metric
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
    preregistration = experiment.preregistration or services.preregistration_build(experiment)
    context = {
        "experiment": experiment,
        "shares": selectors.variant_shares(experiment=experiment),
        "entries": selectors.experiment_audit_entries(experiment=experiment),
        "is_owner": experiment.owner_id == request.user.pk,
        "can_approve": is_review and request.user.has_perm(PERM_APPROVE) and experiment.owner_id != request.user.pk,
        "can_request_changes": is_review and request.user.has_perm(PERM_REQUEST_CHANGES),
        "form": form or RequestChangesForm(),
        "error": error,
        "preregistration": preregistration,
        "assignment_sentences": assignment_plan_sentences(preregistration),
        "preregistration_frozen": experiment.preregistration is not None,
        "verdicts": _verdicts(experiment),
    }
    status = 200 if error is None else (409 if error.code == "invalid_state" else 400)
    return render(request, "review/detail.html", context, status=status)


def _verdicts(experiment: Experiment) -> list:
    """The current verdicts once the experiment has started (none before: nobody is exposed)."""
    if experiment.started_at is None:
        return []
    from readouts.verdicts import experiment_verdicts_get  # readouts depends on experiments, not back

    return experiment_verdicts_get(experiment=experiment)


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


# --- the decision page: checks, scorecard and blocking problems, then ship or kill ---------------------------
def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _render_decide(
    request: HttpRequest, experiment: Experiment, *, error: WorkflowError | None = None, status: int = 200
) -> HttpResponse:
    from readouts.governance import ship_assessment_get  # readouts depends on experiments, not back

    deciding = experiment.status in (Experiment.Status.RUNNING, Experiment.Status.READOUT)
    assessment = ship_assessment_get(experiment=experiment) if deciding else None
    treatments = [v.key for v in experiment.variants.all() if not v.is_control]
    data = request.POST if request.method == "POST" else None
    action = request.POST.get("action") if data is not None else None
    context = {
        "experiment": experiment,
        "assessment": assessment,
        "blocked": error if error is not None and error.code == "ship_blocked" else None,
        "error": error,
        "can_ship": request.user.has_perm(PERM_SHIP) and experiment.status == Experiment.Status.READOUT,
        "can_kill": request.user.has_perm(PERM_KILL) and deciding,
        "ship_form": ShipForm(data if action == "ship" else None, treatments=treatments),
        "kill_form": DecisionForm(data if action == "kill" else None),
    }
    return render(request, "experiments/decide.html", context, status=status)


@require_http_methods(["GET", "POST"])
@experiment_read_required
@private_no_store
def experiment_decide(request: HttpRequest, slug: str) -> HttpResponse:
    """GET: what the person deciding sees. POST action=ship|kill with rationale (ship: variant, override_reason).

    A blocked ship answers 409 with the problem codes (JSON when asked for, else the page with the problems).
    """
    if not (request.user.has_perm(PERM_SHIP) or request.user.has_perm(PERM_KILL)):
        raise PermissionDenied("Only ops may decide experiments.")
    experiment = selectors.experiment_get_by_slug(slug=slug)
    if request.method == "GET":
        return _render_decide(request, experiment)
    action = request.POST.get("action", "")
    rationale = request.POST.get("rationale", "")
    try:
        if action == "ship":
            services.experiment_ship(
                experiment=experiment,
                actor=request.user,
                rationale=rationale,
                variant=request.POST.get("variant") or None,
                override_reason=request.POST.get("override_reason", ""),
            )
        elif action == "kill":
            services.experiment_kill(experiment=experiment, actor=request.user, rationale=rationale)
        else:
            raise WorkflowError("action must be ship or kill.", code="invalid_action")
    except WorkflowError as exc:
        status = 409 if exc.code in ("ship_blocked", "invalid_state") else 400
        if _wants_json(request):
            body = {"error": exc.code, "detail": exc.message, "problems": exc.problems, "details": exc.details}
            return JsonResponse(body, status=status)
        return _render_decide(request, experiment, error=exc, status=status)
    if _wants_json(request):
        return JsonResponse({"status": experiment.status, "outcome": experiment.status})
    messages.success(request, f"“{experiment.name}” is now {experiment.get_status_display().lower()}.")
    return redirect("experiments:experiment_history", slug=experiment.slug)


# --- the metric catalog ------------------------------------------------------------------------------
@require_GET
@experiment_read_required
def metric_list(request: HttpRequest) -> HttpResponse:
    """The catalog: filters kind, official, owner; search q (key, name, description)."""
    from experiments import catalog  # noqa: PLC0415

    kind = request.GET.get("kind", "")
    official = {"yes": True, "no": False}.get(request.GET.get("official", ""))
    owner, query = request.GET.get("owner", ""), request.GET.get("q", "").strip()
    metrics = list(catalog.metric_list(kind=kind if kind in Metric.Kind.values else "", official=official,
                                       owner=owner, search=query))  # fmt: skip
    used = catalog.metrics_used_by(metrics=metrics)
    context = {
        "rows": [(m, used.get(m.pk, [])) for m in metrics],
        "kinds": Metric.Kind.choices,
        "owners": catalog.metric_owners(),
        "filters": {"kind": kind, "official": request.GET.get("official", ""), "owner": owner, "q": query},
    }
    return render(request, "metrics/list.html", context)


@require_GET
@experiment_read_required
def metric_detail(request: HttpRequest, key: str) -> HttpResponse:
    from experiments import catalog  # noqa: PLC0415

    metric = catalog.metric_by_key(key=key)
    if metric is None:
        raise Http404(f"No metric with key '{key}'.")
    context = {
        "metric": metric,
        "sentence": catalog.metric_sentence(metric),
        "experiments": list(catalog.metric_experiments(metric=metric)),
        "changes": list(metric.changes.select_related("actor")[:20]),
    }
    return render(request, "metrics/detail.html", context)
