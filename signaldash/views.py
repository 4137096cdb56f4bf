from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.db.utils import DatabaseError
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from experiments.models import Experiment
from signaldash.permissions import experiment_read_required


@experiment_read_required
def home(request):
    experiments = Experiment.objects.select_related("owner").order_by("-updated_at")[:200]
    return render(request, "home.html", {"experiments": experiments})


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
