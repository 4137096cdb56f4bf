"""Readout page, API, exports and the narrative endpoints. Thin: parse, call a selector, render."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from experiments.models import Experiment
from readouts import charts, rollups, summaries
from readouts.dimensions import BAD_DIMENSION, dimension_key_is_valid
from readouts.docs import metrics_doc_html
from readouts.exports import readout_as_json, readout_bundle, readout_csv
from readouts.governance import readout_governance_for_view
from readouts.narrative import narrative_fallback_text, narrative_for_page, narrative_generate
from readouts.selectors import (
    Readout,
    metric_key_is_valid,
    readout_daily_series,
    readout_get,
    readout_timeseries,
)
from readouts.serializers import (
    DatabaseUnavailableSerializer,
    ReadoutBadRequestSerializer,
    ReadoutErrorSerializer,
    ReadoutSerializer,
    TimeseriesSerializer,
)
from readouts.verdicts import readout_page_get
from signaldash.permissions import CanReadExperiments, experiment_read_required, private_no_store
from signaldash.ratelimit.throttles import ReadoutRateThrottle, readout_throttled
from tracking.auth import APIKeyAuthentication
from tracking.selectors import assignment_evaluations_get

REGENERATE_PERMISSION = "readouts.regenerate_narrative"


def _readout(request: HttpRequest, slug: str, *, by_day: bool = False, summarise: bool = False) -> Readout | None:
    """The readout for ?metric= (primary metric by default); None when the metric key is malformed.

    ``summarise``: also store the experiment's verdict summary for the experiment list when it is stale
    (``readouts.summaries``): the rollups are caught up first, then the experiment is read with the summary's
    inputs, then the readout's numbers (so the summary is stored under the fingerprint of its own inputs).
    """
    metric = request.GET.get("metric") or None
    if summarise:  # catch up first, so the inputs read with the experiment are those of the readout's numbers
        pk = Experiment.objects.filter(slug=slug).values_list("pk", flat=True).first()
        if pk is None:
            raise Http404("No such experiment.")
        rollups.catch_up(experiment_id=pk)
        experiment = summaries.with_inputs(Experiment.objects.filter(pk=pk)).get()
    else:
        experiment = get_object_or_404(Experiment, slug=slug)
    if metric is not None and not metric_key_is_valid(metric):
        return None
    readout = readout_get(experiment=experiment, metric=metric, by_day=by_day)
    if summarise:
        summaries.summary_after_readout(experiment=experiment, readout=readout)
    return readout


BAD_METRIC = "metric must be a metric key (letters, digits, '-' and '_', at most 100 characters)"


@require_GET
@experiment_read_required
@readout_throttled
@private_no_store
def readout_page(request: HttpRequest, slug: str) -> HttpResponse:
    readout = _readout(request, slug, by_day=True, summarise=True)
    if readout is None:
        return HttpResponseBadRequest(BAD_METRIC)
    dimension = request.GET.get("dimension") or None
    if dimension is not None and not dimension_key_is_valid(dimension):
        return HttpResponseBadRequest(BAD_DIMENSION)
    governance, breakdown = readout_governance_for_view(
        readout=readout, user=request.user, source="page", dimension=dimension
    )
    series = readout_daily_series(readout=readout)
    page = readout_page_get(readout=readout, user=request.user, governance=governance)
    context = {
        "readout": readout,
        "governance": governance,  # templates/readouts/_governance.html
        "dimension": breakdown,
        "dimension_key": dimension or "",
        **page,
        "narrative": narrative_for_page(readout=readout, verdicts=page["verdicts"]),
        "rate_chart": charts.rate_chart_svg(readout),
        "exposure_chart": charts.cumulative_chart_svg(readout, series, kind="exposures"),
        "conversion_chart": charts.cumulative_chart_svg(readout, series, kind="conversions"),
        "effect_chart": charts.effect_chart_svg(readout, untrustworthy=page["untrustworthy"]),
        "lift_chart": charts.lift_timeseries_svg(page["timeseries"]),
        "can_regenerate": settings.SIGNALDASH_AI_PROVIDER != "none" and request.user.has_perm(REGENERATE_PERMISSION),
        "timeout_s": _timeout_s(),
        "assignment_evaluations": assignment_evaluations_get(experiment_id=readout.experiment_id),
    }
    return render(request, "readouts/readout.html", context)


@require_GET
def metrics_doc(request: HttpRequest) -> HttpResponse:
    """docs/metrics.md as a page, so readouts link to definitions instead of printing a repository path."""
    return render(request, "readouts/metrics_doc.html", {"body": metrics_doc_html()})


def _timeout_s() -> float:
    return float(settings.SIGNALDASH_AI_TIMEOUT_S)


# The readout API's answers besides 200: DRF's `{"detail": ...}` bodies, and 503 from the middleware.
READOUT_ERROR_RESPONSES = {
    400: OpenApiResponse(ReadoutBadRequestSerializer, description="Malformed `metric` or `dimension` key."),
    401: OpenApiResponse(ReadoutErrorSerializer, description="No session and no valid API key."),
    403: OpenApiResponse(
        ReadoutErrorSerializer, description="No `view_experiment` permission, or an API key without the `read` scope."
    ),
    404: OpenApiResponse(ReadoutErrorSerializer, description="Unknown experiment."),
    429: OpenApiResponse(ReadoutErrorSerializer, description="Throttled; see the `Retry-After` header."),
    503: OpenApiResponse(DatabaseUnavailableSerializer, description="Database unavailable; see `Retry-After`."),
}


class ReadoutApi(APIView):
    """GET /api/experiments/<slug>/readout[?metric=<key>] — session or `Authorization: Bearer <key>`."""

    authentication_classes = [APIKeyAuthentication, SessionAuthentication]
    permission_classes = [CanReadExperiments]
    throttle_classes = [ReadoutRateThrottle]

    @extend_schema(
        operation_id="experiment_readout",
        parameters=[
            OpenApiParameter("metric", str, description="Metric key (default: the primary metric)."),
            OpenApiParameter(
                "dimension", str, description="Exposure props key to break the metric down by (adds `dimension`)."
            ),
        ],
        responses={200: ReadoutSerializer, **READOUT_ERROR_RESPONSES},
    )
    def get(self, request, slug: str) -> Response:
        readout = _readout(request, slug, summarise=True)
        if readout is None:
            raise ValidationError({"metric": BAD_METRIC})
        dimension = request.GET.get("dimension") or None
        if dimension is not None and not dimension_key_is_valid(dimension):
            raise ValidationError({"dimension": BAD_DIMENSION})
        governance, breakdown = readout_governance_for_view(
            readout=readout, user=request.user, source="api", dimension=dimension
        )
        return Response(readout_as_json(readout, governance=governance, dimension=breakdown))


readout_api = login_not_required(private_no_store(ReadoutApi.as_view()))


class ReadoutTimeseriesApi(ReadoutApi):
    """GET /api/experiments/<slug>/readout/timeseries[?metric=<key>]: cumulative lift and intervals per UTC day."""

    @extend_schema(
        operation_id="experiment_readout_timeseries",
        parameters=[OpenApiParameter("metric", str, description="Metric key (default: the primary metric).")],
        responses={200: TimeseriesSerializer, **READOUT_ERROR_RESPONSES},
    )
    def get(self, request, slug: str) -> Response:
        readout = _readout(request, slug)
        if readout is None:
            raise ValidationError({"metric": BAD_METRIC})
        return Response(readout_timeseries(readout=readout))


readout_timeseries_api = login_not_required(private_no_store(ReadoutTimeseriesApi.as_view()))


@require_GET
@experiment_read_required
@readout_throttled
@private_no_store
def readout_csv_export(request: HttpRequest, slug: str) -> HttpResponse:
    readout = _readout(request, slug)
    if readout is None:
        return HttpResponseBadRequest(BAD_METRIC)
    response = HttpResponse(readout_csv(readout), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{readout.experiment_slug}-{readout.metric}-readout.csv"'
    return response


@require_GET
@experiment_read_required
@readout_throttled
@private_no_store
def readout_bundle_download(request: HttpRequest, slug: str) -> HttpResponse:
    readout = _readout(request, slug)
    if readout is None:
        return HttpResponseBadRequest(BAD_METRIC)
    response = HttpResponse(
        readout_bundle(readout, narrative_text=narrative_fallback_text(readout)), content_type="application/zip"
    )
    response["Content-Disposition"] = (
        f'attachment; filename="{readout.experiment_slug}-{readout.metric}-readout-bundle.zip"'
    )
    return response


def _narrative_response(request: HttpRequest, readout: Readout, view) -> HttpResponse:
    if "application/json" in request.headers.get("Accept", ""):
        return JsonResponse(view.as_json())
    url = reverse("readouts:page", args=[readout.experiment_slug])
    return redirect(f"{url}?metric={readout.metric}", permanent=False)


@require_http_methods(["GET", "POST"])
@experiment_read_required
@readout_throttled
@private_no_store
def readout_narrative(request: HttpRequest, slug: str) -> HttpResponse:
    """GET: the cached narrative or the fallback. POST: generate it (one provider call at most, cached)."""
    readout = _readout(request, slug)
    if readout is None:
        return HttpResponseBadRequest(BAD_METRIC)
    if request.method == "GET":
        return JsonResponse(narrative_for_page(readout=readout).as_json())
    return _narrative_response(request, readout, narrative_generate(readout=readout))


@require_POST
@experiment_read_required
@readout_throttled
@private_no_store
def readout_narrative_regenerate(request: HttpRequest, slug: str) -> HttpResponse:
    """Ops only: ask the provider again for the current numbers, even if a narrative is cached."""
    if not request.user.has_perm(REGENERATE_PERMISSION):
        return JsonResponse({"detail": "You do not have permission to regenerate narratives."}, status=403)
    readout = _readout(request, slug)
    if readout is None:
        return HttpResponseBadRequest(BAD_METRIC)
    return _narrative_response(request, readout, narrative_generate(readout=readout, force=True))


REFRESH_PERMISSION = "readouts.refresh_readout"


@require_POST
@experiment_read_required
def readout_refresh(request: HttpRequest, slug: str) -> HttpResponse:
    """ "Refresh results" (ops): queue the warehouse refresh as a background task; never runs it here."""
    from django.contrib import messages

    from readouts.sources.refresh import snapshot_request

    experiment = get_object_or_404(Experiment, slug=slug)
    if not request.user.has_perm(REFRESH_PERMISSION):
        return HttpResponse("Refreshing results needs the readouts.refresh_readout permission (ops).", status=403)
    if experiment.data_source_id is None:
        return HttpResponseBadRequest("This experiment reads Signal Dash's own events; there is nothing to refresh.")
    _, created = snapshot_request(experiment=experiment, triggered_by=request.user.get_username())
    messages.info(request, "Refresh queued." if created else "A refresh is already running; this request joined it.")
    return redirect(reverse("readouts:page", args=[slug]))


@require_GET
@experiment_read_required
@private_no_store
def learnings_page(request: HttpRequest) -> HttpResponse:
    """Every decided experiment: ?q= ?metric= ?outcome= ?verdict= ?owner= ?quarter=2026Q3 ?page=N, ?format=csv."""
    from readouts.learnings import OUTCOMES, WIN_RATE_DEFINITION, LearningsParams, learnings_csv, learnings_get
    from readouts.verdicts import LABELS, TITLES

    learnings = learnings_get(params=LearningsParams.of(request.GET))
    if request.GET.get("format") == "csv":
        response = HttpResponse(learnings_csv(learnings.rows), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="learnings.csv"'
        return response
    context = {
        "learnings": learnings,
        "rows": learnings.page.object_list,
        "outcomes": [(o, o.title()) for o in OUTCOMES],
        "verdicts": [(label, TITLES[label]) for label in LABELS],
        "win_rate_definition": WIN_RATE_DEFINITION,
    }
    return render(request, "readouts/learnings.html", context)
