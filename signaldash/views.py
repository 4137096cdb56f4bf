from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.db.models import Count
from django.db.utils import DatabaseError
from django.http import JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from experiments.models import Decision, Experiment
from signaldash.permissions import experiment_read_required

LIVE_RESULTS = {Experiment.Status.RUNNING, Experiment.Status.READOUT}
MAX_LIVE_RESULTS = 30  # readouts computed for the list; beyond that the row links to the readout


@dataclass(frozen=True)
class HomeRow:
    experiment: Experiment
    exposed: int | None
    days: int | None
    result: str  # the primary result in words ("" when there is nothing to read yet)
    outcome: str  # won | lost | inconclusive | untrustworthy (readouts.verdicts) | shipped | killed | ""
    has_readout: bool


def _primary_result(experiment: Experiment) -> tuple[str, str]:
    """The verdict line of a live experiment ('carousel: Untrustworthy (sample ratio mismatch)') and its label."""
    from readouts.selectors import readout_get
    from readouts.verdicts import overall_label, result_summary, verdicts_get

    readout = readout_get(experiment=experiment)
    verdicts = verdicts_get(readout)
    return result_summary(verdicts, readout), overall_label(verdicts)


def home_rows(*, now=None) -> list[HomeRow]:
    """The experiment list: status, primary result, exposed users, days running (readouts for live ones only)."""
    now = now or timezone.now()
    experiments = list(
        Experiment.objects.select_related("owner").annotate(exposed=Count("assignments")).order_by("-updated_at")[:200]
    )
    decided = Decision.objects.filter(experiment__in=experiments).select_related("shipped_variant")
    decisions = {d.experiment_id: d for d in decided}
    rows, live = [], 0
    for e in experiments:
        started = e.started_at is not None
        days = max(0, ((e.ended_at or now) - e.started_at).days) if started else None
        result, outcome = "", ""
        if (d := decisions.get(e.pk)) is not None:
            variant = f" {d.shipped_variant.key}" if getattr(d, "shipped_variant", None) else ""
            result, outcome = f"{d.get_outcome_display()}{variant}", d.outcome
        elif e.status in LIVE_RESULTS and live < MAX_LIVE_RESULTS:
            live += 1
            result, outcome = _primary_result(e)
        rows.append(HomeRow(e, e.exposed if started else None, days, result, outcome, started))
    return rows


@experiment_read_required
def home(request):
    can_create = request.user.has_perm("experiments.add_experiment") and request.user.is_staff
    return render(request, "home.html", {"rows": home_rows(), "can_create": can_create})


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
