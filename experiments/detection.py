"""Periodic detection of the notification events no request raises: health_failed, result_ready, review_overdue.

``notifications_detect`` is run by ``manage.py detect_notifications`` (cron) or as the task
``notifications_detect_task`` in the django-tasks worker. It reads what the pages read — the readout,
its health checks (``readouts.governance``), the verdicts and the next step's readiness
(``readouts.verdicts``), the review queue and its SLA (``experiments.selectors``) — and enqueues each
event through ``notification_enqueue``, whose unique ``(target, occasion)`` rows make every occasion be
sent once, however often and however concurrently detection runs:

- ``experiment.health_failed``: a running experiment's check is ``fail``; occasion = the check code (once per
  experiment and check).
- ``experiment.result_ready``: a running experiment is ready to decide (sequential: a clear result at the
  always-valid interval, or inconclusive at the planned sample; fixed: the planned sample is reached); once
  per experiment.
- ``experiment.review_overdue``: in review past the SLA (``REVIEW_SLA_WORKING_DAYS`` working days); once per
  submission.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_tasks import task

from experiments.models import Experiment, NotificationEvent
from experiments.notifications import notify

logger = logging.getLogger(__name__)


@dataclass
class DetectionSummary:
    """What one run found (``events``: (event, slug, occasion)), how many notifications (webhook deliveries and
    emails) it enqueued that did not exist yet, and what it could not read."""

    checked: int = 0
    events: list[tuple[str, str, str]] = field(default_factory=list)
    enqueued: int = 0
    errors: list[str] = field(default_factory=list)
    resumed: int = 0

    def __str__(self) -> str:
        text = f"{self.checked} experiment(s) checked, {len(self.events)} event(s) found, {self.enqueued} enqueued"
        text += f", {self.resumed} stalled resumed" if self.resumed else ""
        return text + (f", {len(self.errors)} error(s)" if self.errors else "")


def _raise(summary: DetectionSummary, experiment: Experiment, event: str, occasion: str, detail: str) -> None:
    summary.events.append((event, experiment.slug, occasion))
    summary.enqueued += notify(experiment=experiment, event=event, occasion=occasion, detail=detail)


def _running_events(experiment: Experiment) -> list[tuple[str, str, str]]:
    """(event, occasion, detail) of a running experiment: one per failing check, and result_ready when ready."""
    from readouts.governance import governance_get
    from readouts.selectors import readout_get
    from readouts.verdicts import failing_checks, running_readiness, verdicts_get

    readout = readout_get(experiment=experiment)
    governance = governance_get(experiment=experiment, readout=readout)
    failing = failing_checks(readout, governance)
    health, ready = NotificationEvent.HEALTH_FAILED.value, NotificationEvent.RESULT_READY.value
    messages = {c.code: c.message for c in governance.checks}
    out = [(health, f"{health}:{experiment.pk}:{code}", messages.get(code, f"{code} failed.")) for code in failing]
    why = running_readiness(readout, verdicts_get(readout, governance=governance))
    if why:
        out.append((ready, f"{ready}:{experiment.pk}", f"Ready to decide: {why}."))
    return out


def notifications_detect(*, now: datetime | None = None) -> DetectionSummary:
    """Enqueue the periodic events that hold now (each experiment in its own transaction; errors are logged)."""
    from experiments.selectors import REVIEW_SLA_WORKING_DAYS, review_queue

    summary = DetectionSummary()
    running = Experiment.objects.filter(status=Experiment.Status.RUNNING).select_related("owner").order_by("pk")
    for experiment in running:
        summary.checked += 1
        try:
            with transaction.atomic():
                for event, occasion, detail in _running_events(experiment):
                    _raise(summary, experiment, event, occasion, detail)
        except Exception as e:  # noqa: BLE001 - one unreadable readout must not stop the others
            logger.exception("detection failed for %s", experiment.slug)
            summary.errors.append(f"{experiment.slug}: {e}")
    for row in review_queue(now=now):
        summary.checked += 1
        if row.overdue:
            submission = row.submission_id or int(row.submitted_at.timestamp())
            event = NotificationEvent.REVIEW_OVERDUE.value
            detail = (
                f"It has waited {row.working_days:.1f} working days for review "
                f"(the review SLA is {REVIEW_SLA_WORKING_DAYS} working days)."
            )
            with transaction.atomic():
                _raise(summary, row.experiment, event, f"{event}:{row.experiment.pk}:{submission}", detail)
    summary.resumed = notifications_resume_stalled()
    logger.info("notification detection: %s", summary)
    return summary


STALLED_AFTER = timedelta(minutes=15)


def notifications_resume_stalled(*, now: datetime | None = None) -> int:
    """Re-enqueue the next attempt of pending deliveries and emails whose task never ran (a worker killed mid-task
    leaves its task row claimed forever): due more than ``STALLED_AFTER`` ago. A task for an attempt already
    made does nothing, so a slow queue costs at most a no-op task."""
    from experiments.models import EmailNotification, WebhookDelivery
    from experiments.notification_email import email_notification_task
    from experiments.notifications import webhook_delivery_task

    cutoff = (now or timezone.now()) - STALLED_AFTER
    resumed = 0
    for model, send in ((WebhookDelivery, webhook_delivery_task), (EmailNotification, email_notification_task)):
        stalled = model.objects.filter(status="pending").filter(
            Q(next_attempt_at__lt=cutoff) | Q(next_attempt_at__isnull=True, created_at__lt=cutoff)
        )
        key = "delivery_id" if model is WebhookDelivery else "email_id"
        for pk, attempts in stalled.values_list("pk", "attempts"):
            send.enqueue(**{key: pk, "attempt": attempts + 1})
            resumed += 1
    if resumed:
        logger.warning("notification detection: re-enqueued %s stalled notification(s)", resumed)
    return resumed


@task()
def notifications_detect_task(*, every_s: float | None = None) -> str:
    """Detection in the worker; with ``every_s`` it enqueues its next run (unless one is already waiting)."""
    try:
        return str(notifications_detect())
    finally:  # a failed run must not end the schedule
        if every_s:
            notifications_detect_schedule(every_s=every_s, delay_s=every_s)


def notifications_detect_schedule(*, every_s: float | None, delay_s: float = 0) -> bool:
    """Enqueue a detection run for the worker (in ``delay_s``); False if one is already queued and not started."""
    from django_tasks_db.models import DBTaskResult

    waiting = DBTaskResult.objects.filter(task_path=notifications_detect_task.module_path, status="READY")
    if every_s and waiting.exists():
        return False
    run_after = timezone.now() + timedelta(seconds=delay_s) if delay_s else None
    notifications_detect_task.using(run_after=run_after).enqueue(every_s=every_s)
    return True
