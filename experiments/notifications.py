"""Outgoing notifications: enqueue one delivery per webhook and occasion, send it in the task worker.

``notification_enqueue`` is called from services inside their transaction; the deliveries are created
there (a unique constraint on ``(webhook, occasion)`` makes each occasion be sent once, even under
concurrent detection) and the sending is enqueued with ``transaction.on_commit`` — never inside the
request. ``webhook_delivery_send`` runs in the django-tasks worker: one signed POST per task run; on a timeout,
connection error or 5xx the next attempt is a new task with ``run_after`` (exponential backoff), none on 4xx,
one ``WebhookAttempt`` per try.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import socket
import time
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_tasks import task

from experiments.models import Experiment, NotificationEvent, Webhook, WebhookAttempt, WebhookDelivery

logger = logging.getLogger(__name__)


class UnsafeTarget(Exception):
    """The webhook URL resolves to a loopback, private or link-local address and that is not allowed."""


def _verdicts(experiment: Experiment) -> list[dict]:
    from readouts.verdicts import experiment_verdicts_get, verdicts_json

    try:
        return verdicts_json(experiment_verdicts_get(experiment=experiment))
    except Exception:  # noqa: BLE001 - a notification must not fail because a readout cannot be read
        logger.exception("verdicts unavailable for %s", experiment.slug)
        return []


def notification_payload(*, experiment: Experiment, event: str) -> dict:
    return {
        "event": event,
        "experiment": {
            "slug": experiment.slug,
            "name": experiment.name,
            "status": experiment.status,
            "url": settings.SIGNALDASH_SITE_URL.rstrip("/") + experiment.get_absolute_url(),
        },
        "verdicts": _verdicts(experiment),
        "at": timezone.now().isoformat(),
    }


def notify(*, experiment: Experiment, event: str, occasion: str | None = None, detail: str = "") -> int:
    """Raise ``event`` for its occasion: the webhooks' deliveries and the email, each once; returns how many are new.

    Called inside the transaction that raised it; the sending happens in the worker after commit. ``detail``
    (what happened, in words) goes into the email body.
    """
    from experiments.notification_email import email_enabled, email_notification_enqueue

    occasion = occasion or f"{event}:{experiment.pk}"
    if not email_enabled():  # webhooks only: the payload is built only if one wants the event
        return len(notification_enqueue(experiment=experiment, event=event, occasion=occasion))
    payload = notification_payload(experiment=experiment, event=event)
    created = len(notification_enqueue(experiment=experiment, event=event, occasion=occasion, payload=payload))
    email = email_notification_enqueue(
        experiment=experiment, event=event, occasion=occasion, payload=payload, detail=detail
    )
    return created + (email is not None)


def notification_enqueue(
    *, experiment: Experiment, event: str, occasion: str | None = None, payload: dict | None = None
) -> list[int]:
    """Create the webhook deliveries for ``event`` (once per webhook and occasion) and send them after commit."""
    if event not in NotificationEvent.values:
        raise ValueError(f"unknown notification event {event!r}")
    occasion = occasion or f"{event}:{experiment.pk}"
    webhooks = [w for w in Webhook.objects.filter(active=True).order_by("pk") if w.wants(event)]
    if webhooks and payload is None:
        payload = notification_payload(experiment=experiment, event=event)
    created: list[int] = []
    for webhook in webhooks:
        try:
            with transaction.atomic():
                delivery = WebhookDelivery.objects.create(
                    webhook=webhook, event=event, occasion=occasion, payload=payload
                )
        except IntegrityError:
            continue  # this occasion was already enqueued for this webhook (retry or concurrent worker)
        created.append(delivery.pk)
    for pk in created:
        transaction.on_commit(lambda pk=pk: webhook_delivery_task.enqueue(delivery_id=pk, attempt=1))
    return created


def webhook_body(delivery: WebhookDelivery) -> bytes:
    payload = delivery.payload
    if delivery.webhook.format == "slack":
        from experiments.notification_email import readable_line

        payload = {"text": f"{readable_line(payload)} <{payload['experiment']['url']}|open>"}
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def webhook_signature(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_target_check(url: str) -> str | None:
    """Refuse loopback/private/link-local targets (after DNS resolution) unless allowed by settings.

    Returns the checked address the attempt must connect to (None when private targets are allowed: then the
    host is resolved as usual). Connecting to the checked address, not to a second lookup of the name, is what
    stops DNS rebinding (a name that answers a public address to the check and a private one to the request).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeTarget(f"not an http(s) URL: {parts.scheme}://{parts.hostname}")
    if settings.SIGNALDASH_WEBHOOK_ALLOW_PRIVATE:
        return None
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except socket.gaierror as e:
        raise UnsafeTarget(f"cannot resolve {parts.hostname}: {e}") from e
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%")[0])
        if not ip.is_global or ip.is_multicast:
            raise UnsafeTarget(f"{parts.hostname} resolves to a non-public address ({ip})")
    return infos[0][4][0]


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to a given address (``address`` None: the host, resolved as usual); the Host header
    stays the URL's."""

    def __init__(self, host, port=None, *, address: str | None, **kwargs):
        super().__init__(host, port, **kwargs)
        self._address = address

    def connect(self):
        self.sock = socket.create_connection((self._address or self.host, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """The same over TLS: the certificate is checked against the URL's host name (SNI too)."""

    def __init__(self, host, port=None, *, address: str | None, **kwargs):
        super().__init__(host, port, **kwargs)
        self._address = address

    def connect(self):
        sock = socket.create_connection((self._address or self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _attempt(delivery: WebhookDelivery, body: bytes, *, address: str | None = None) -> tuple[int | None, str]:
    """One POST; redirects are not followed (a 3xx is final: a redirect could point past the SSRF check)."""
    parts = urlsplit(delivery.webhook.url)
    connection_class = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
    connection = connection_class(
        parts.hostname, parts.port, address=address, timeout=settings.SIGNALDASH_WEBHOOK_TIMEOUT_S
    )
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "SignalDash-Webhook/1",
        "X-SignalDash-Event": delivery.event,
        "X-SignalDash-Delivery": str(delivery.pk),
        "X-SignalDash-Signature": webhook_signature(body, delivery.webhook.secret),
    }
    try:
        connection.request("POST", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), body, headers)
        status = connection.getresponse().status
    except TimeoutError:
        return None, "timeout"
    except (OSError, http.client.HTTPException) as e:
        return None, f"connection error: {e}"
    finally:
        connection.close()
    return status, "" if 200 <= status < 300 else f"HTTP {status}"


def webhook_backoff_s(attempts_made: int) -> float:
    """The wait before the next attempt after ``attempts_made`` failed ones: the setting, doubling each time."""
    return settings.SIGNALDASH_WEBHOOK_BACKOFF_S * 2 ** (attempts_made - 1)


def _claim(delivery_id: int, attempt: int | None) -> WebhookDelivery | None:
    """The pending delivery if this run may make attempt ``attempt`` (None: finished, or a stale duplicate task)."""
    with transaction.atomic():
        delivery = WebhookDelivery.objects.select_for_update().select_related("webhook").get(pk=delivery_id)
        if delivery.status != WebhookDelivery.Status.PENDING:
            return None
        if attempt is not None and delivery.attempts != attempt - 1:
            return None  # another run already made this attempt
        return delivery


def webhook_delivery_send(*, delivery_id: int, attempt: int | None = None) -> WebhookDelivery:
    """Make one attempt of a delivery; on a timeout, connection error or 5xx, schedule the next as a new task.

    The next attempt is a new task with ``run_after`` = now + backoff, so no worker is held while waiting.
    A finished delivery, or a task whose attempt another run already made, does nothing (idempotent).
    """
    delivery = _claim(delivery_id, attempt)
    if delivery is None:
        return WebhookDelivery.objects.get(pk=delivery_id)
    try:
        address = webhook_target_check(delivery.webhook.url)
    except UnsafeTarget as e:
        delivery.status, delivery.last_error = WebhookDelivery.Status.FAILED, str(e)
        delivery.save(update_fields=["status", "last_error"])
        logger.warning("webhook %s refused: %s", delivery.webhook_id, e)
        return delivery
    started = time.monotonic()
    code, error = _attempt(delivery, webhook_body(delivery), address=address)
    number = delivery.attempts + 1
    with transaction.atomic():
        claimed = WebhookDelivery.objects.filter(
            pk=delivery.pk, status=WebhookDelivery.Status.PENDING, attempts=number - 1
        ).update(attempts=number)
        if not claimed:  # a concurrent run recorded this attempt first
            return WebhookDelivery.objects.get(pk=delivery.pk)
        now = timezone.now()  # one instant: the attempt's time, and the next attempt counted from it
        WebhookAttempt.objects.create(
            delivery=delivery,
            at=now,
            number=number,
            status_code=code,
            error=error,
            duration_ms=int((time.monotonic() - started) * 1000),
        )
        delivery.attempts, delivery.last_status, delivery.last_error = number, code, error
        delivery.next_attempt_at = None
        if code is not None and 200 <= code < 300:
            delivery.status, delivery.delivered_at = WebhookDelivery.Status.DELIVERED, now
        elif (code is not None and code < 500) or number >= settings.SIGNALDASH_WEBHOOK_MAX_ATTEMPTS:
            delivery.status = WebhookDelivery.Status.FAILED
        else:
            delivery.next_attempt_at = now + timedelta(seconds=webhook_backoff_s(number))
            webhook_delivery_task.using(run_after=delivery.next_attempt_at).enqueue(
                delivery_id=delivery.pk, attempt=number + 1
            )
        delivery.save(
            update_fields=["status", "attempts", "last_status", "last_error", "delivered_at", "next_attempt_at"]
        )
    logger.info("webhook delivery %s %s after %s attempt(s)", delivery.pk, delivery.status, delivery.attempts)
    return delivery


@task()
def webhook_delivery_task(*, delivery_id: int, attempt: int | None = None) -> str:
    return webhook_delivery_send(delivery_id=delivery_id, attempt=attempt).status
