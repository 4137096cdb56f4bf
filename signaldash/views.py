from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.db.utils import DatabaseError
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from experiments.models import Experiment
from signaldash.permissions import experiment_read_required


@experiment_read_required
def home(request):
    """The experiment list: ?q= ?status= ?owner= ?verdict= ?metric= ?failing=1 ?sort= ?page=N, ?format=csv."""
    from readouts.program import ListParams, experiment_list_csv, experiment_list_get, verdict_titles

    listing = experiment_list_get(params=ListParams.of(request.GET))
    if request.GET.get("format") == "csv":
        response = HttpResponse(experiment_list_csv(listing.rows), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="experiments.csv"'
        return response
    can_create = request.user.has_perm("experiments.add_experiment") and request.user.is_staff
    context = {
        "listing": listing,
        "rows": listing.page.object_list,
        "statuses": Experiment.Status.choices,
        "verdicts": verdict_titles(),
        "can_create": can_create,
    }
    return render(request, "home.html", context)


@login_not_required
@require_GET
def healthz(request):
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError:
        return JsonResponse({"status": "error", "database": "unavailable"}, status=503)
    return JsonResponse({"status": "ok", "database": "ok"})
