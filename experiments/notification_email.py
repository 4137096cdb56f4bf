"""Notification emails: to the experiment's owner and, for review events, the reviewer group's members.

``email_notification_enqueue`` runs inside the transaction that raised the event (a workflow transition or
periodic detection): it writes one ``EmailNotification`` per occasion (``emailnotification_once_per_occasion``:
the same occasions as the webhooks, so retries and concurrent detection send it once) and enqueues the sending
after commit. ``email_notification_send`` runs in the django-tasks worker, never in a request: one SMTP attempt
per task run through Django's mail (the SMTP settings come from the environment, ``signaldash.settings``);
a temporary failure (connection error, timeout, 4xx reply) schedules the next attempt as a new task with
``run_after`` (the webhooks' backoff rule), a permanent one (5xx reply) is final.
"""

from __future__ import annotations

import logging
import smtplib
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage, get_connection
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_tasks import task

from experiments.models import EmailNotification, Experiment, NotificationEvent

logger = logging.getLogger(__name__)

REVIEWER_GROUP = "reviewer"
REVIEW_EVENTS = (NotificationEvent.REVIEW_REQUESTED, NotificationEvent.REVIEW_OVERDUE)


def email_enabled() -> bool:
    return bool(settings.SIGNALDASH_EMAIL_NOTIFICATIONS)


def email_recipients(*, experiment: Experiment, event: str) -> list[str]:
    """The owner's address and, for review events, every active reviewer's (no blanks, no duplicates)."""
    addresses = [experiment.owner.email if experiment.owner.is_active else ""]
    if event in REVIEW_EVENTS:
        reviewers = get_user_model().objects.filter(groups__name=REVIEWER_GROUP, is_active=True).order_by("pk")
        addresses += list(reviewers.values_list("email", flat=True))
    return list(dict.fromkeys(a for a in addresses if a))


def readable_line(payload: dict) -> str:
    """'Approved: Checkout Button (running)': the line the Slack message and the email subject share."""
    exp = payload["experiment"]
    return f"{NotificationEvent(payload['event']).label}: {exp['name']} ({exp['status']})"


def email_body(payload: dict, *, detail: str = "") -> str:
    """The text body: the readable line, the link, what happened, and each verdict (p-values in words)."""
    from readouts.verdicts import TITLES

    lines = [readable_line(payload), payload["experiment"]["url"], ""]
    if detail:
        lines += [detail, ""]
    verdicts = payload.get("verdicts") or []
    if verdicts:
        lines.append("Verdict:")
        lines += [f"- {v['variant']}: {TITLES.get(v['label'], v['label'])}. {v['reason']}" for v in verdicts]
        lines.append("")
    lines.append("— Signal Dash (you get this as the experiment's owner or as a reviewer)")
    return "\n".join(lines) + "\n"


def email_notification_enqueue(
    *, experiment: Experiment, event: str, occasion: str, payload: dict, detail: str = ""
) -> int | None:
    """Write the occasion's email (once) and send it after commit; None if off, nobody to tell, or already done."""
    if not email_enabled():
        return None
    recipients = email_recipients(experiment=experiment, event=event)
    if not recipients:
        return None
    try:
        with transaction.atomic():
            email = EmailNotification.objects.create(
                experiment=experiment,
                event=event,
                occasion=occasion,
                recipients=recipients,
                subject=f"[Signal Dash] {readable_line(payload)}",
                body=email_body(payload, detail=detail),
            )
    except IntegrityError:
        return None  # this occasion's email exists already (a retry or a concurrent detection run)
    transaction.on_commit(lambda: email_notification_task.enqueue(email_id=email.pk, attempt=1))
    return email.pk


def _send(email: EmailNotification) -> tuple[bool, str, bool]:
    """(sent, error, retryable) of one SMTP attempt."""
    try:
        with get_connection(fail_silently=False, timeout=settings.EMAIL_TIMEOUT) as connection:
            EmailMessage(subject=email.subject, body=email.body, to=email.recipients, connection=connection).send()
    except smtplib.SMTPResponseException as e:
        return False, f"SMTP {e.smtp_code}: {e.smtp_error!r}", e.smtp_code < 500
    except smtplib.SMTPRecipientsRefused as e:
        codes = [code for code, _ in e.recipients.values()]
        return False, f"recipients refused: {e.recipients!r}", all(400 <= c < 500 for c in codes)
    except (smtplib.SMTPException, OSError) as e:
        return False, f"{type(e).__name__}: {e}", True
    return True, "", False


def email_notification_send(*, email_id: int, attempt: int | None = None) -> EmailNotification:
    """One SMTP attempt; on a temporary failure the next one is a new task after the backoff (idempotent)."""
    from experiments.notifications import webhook_backoff_s

    with transaction.atomic():
        email = EmailNotification.objects.select_for_update().get(pk=email_id)
        stale = attempt is not None and email.attempts != attempt - 1
        if email.status != EmailNotification.Status.PENDING or stale:
            return email
        email.attempts += 1  # claimed before sending: a crashed or duplicate run never sends it twice
        email.save(update_fields=["attempts"])
    sent, error, retryable = _send(email)
    email.last_error, email.next_attempt_at = error, None
    if sent:
        email.status, email.sent_at = EmailNotification.Status.SENT, timezone.now()
    elif not retryable or email.attempts >= settings.SIGNALDASH_WEBHOOK_MAX_ATTEMPTS:
        email.status = EmailNotification.Status.FAILED
    with transaction.atomic():
        if not sent and email.status == EmailNotification.Status.PENDING:
            email.next_attempt_at = timezone.now() + timedelta(seconds=webhook_backoff_s(email.attempts))
            email_notification_task.using(run_after=email.next_attempt_at).enqueue(
                email_id=email.pk, attempt=email.attempts + 1
            )
        email.save(update_fields=["status", "sent_at", "last_error", "next_attempt_at"])
    logger.info("notification email %s %s after %s attempt(s)", email.pk, email.status, email.attempts)
    return email


@task()
def email_notification_task(*, email_id: int, attempt: int | None = None) -> str:
    return email_notification_send(email_id=email_id, attempt=attempt).status
