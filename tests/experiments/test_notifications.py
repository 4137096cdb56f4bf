"""Webhook notifications against a real HTTP receiver on 127.0.0.1 started by each test."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import call_command

from experiments import services
from experiments.models import Experiment, Webhook, WebhookAttempt, WebhookDelivery
from experiments.notifications import (
    UnsafeTarget,
    notification_enqueue,
    webhook_delivery_send,
    webhook_target_check,
)

SECRET = "test-signing-secret"


class Receiver:
    """A loopback HTTP server answering with scripted statuses ("hang" waits until released or 5 s)."""

    def __init__(self, script: list):
        self.script, self.requests, self.release = list(script), [], threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((time.monotonic(), self.headers, body))
                step = receiver.script.pop(0) if receiver.script else 200
                if step == "hang":
                    receiver.release.wait(5)
                    return
                self.send_response(step)
                if step == 302:
                    self.send_header("Location", "http://169.254.169.254/latest")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def _make(*script):
        made.append(Receiver(list(script)))
        return made[-1]

    yield _make
    for r in made:
        r.close()


@pytest.fixture(autouse=True)
def _fast(settings):
    settings.SIGNALDASH_WEBHOOK_BACKOFF_S = 0.01
    settings.SIGNALDASH_WEBHOOK_TIMEOUT_S = 0.3
    settings.SIGNALDASH_WEBHOOK_ALLOW_PRIVATE = True


def _delivery(experiment, url: str, *, fmt: str = "json") -> WebhookDelivery:
    Webhook.objects.create(name="ops", url=url, secret=SECRET, format=fmt)
    [pk] = notification_enqueue(experiment=experiment, event="experiment.approved")
    return WebhookDelivery.objects.get(pk=pk)


def run_worker_until_finished(pk: int, *, within_s: float = 10.0) -> WebhookDelivery:
    """Run the task worker (batch runs) until the delivery is finished: retries wait for their run_after."""
    deadline = time.monotonic() + within_s
    while True:
        call_command("db_worker", "--batch", "--no-startup-delay", verbosity=0)
        delivery = WebhookDelivery.objects.get(pk=pk)
        if delivery.status != WebhookDelivery.Status.PENDING:
            return delivery
        assert time.monotonic() < deadline, f"delivery {pk} still pending after {within_s} s"


def _deliver(pk: int) -> WebhookDelivery:
    """The delivery's first task was enqueued on commit (transactional tests): let the worker finish it."""
    return run_worker_until_finished(pk)


worker_db = pytest.mark.django_db(transaction=True)  # on_commit and the task worker, as in production


def test_webhook_delivery__200__body_signed_with_secret_and_headers_set(make_experiment, receiver):
    exp = make_experiment("sig-check", status=Experiment.Status.RUNNING)
    r = receiver(200)
    delivery = webhook_delivery_send(delivery_id=_delivery(exp, r.url).pk)
    [(_, headers, body)] = r.requests
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-SignalDash-Signature"], expected)
    assert headers["X-SignalDash-Delivery"] == str(delivery.pk)
    payload = json.loads(body)
    assert payload["event"] == "experiment.approved"
    assert payload["experiment"]["slug"] == "sig-check" and payload["experiment"]["status"] == "running"
    assert payload["experiment"]["url"].endswith(exp.get_absolute_url())
    assert isinstance(payload["verdicts"], list) and "at" in payload
    assert delivery.status == "delivered" and delivery.attempts == 1 and delivery.delivered_at is not None
    assert SECRET.encode() not in body


@worker_db
def test_webhook_delivery__500_500_200__three_attempts_one_delivery(make_experiment, receiver):
    exp = make_experiment("retry-5xx", status=Experiment.Status.RUNNING)
    r = receiver(500, 500, 200)
    delivery = _deliver(_delivery(exp, r.url).pk)
    assert len(r.requests) == 3
    assert delivery.status == "delivered" and delivery.attempts == 3 and delivery.last_status == 200
    assert list(WebhookAttempt.objects.filter(delivery=delivery).values_list("status_code", flat=True)) == [
        500,
        500,
        200,
    ]
    assert WebhookDelivery.objects.count() == 1


@worker_db
def test_webhook_delivery__backoff__each_retry_a_new_task_run_after_doubling(make_experiment, receiver, settings):
    from django_tasks_db.models import DBTaskResult

    settings.SIGNALDASH_WEBHOOK_MAX_ATTEMPTS = 4
    exp = make_experiment("backoff", status=Experiment.Status.RUNNING)
    r = receiver(503, 503, 503, 503)
    delivery = _deliver(_delivery(exp, r.url).pk)
    assert delivery.status == "failed" and delivery.attempts == 4 and len(r.requests) == 4
    attempts = {a.number: a.at for a in WebhookAttempt.objects.filter(delivery=delivery)}
    retries = sorted(
        (t for t in DBTaskResult.objects.all() if t.args_kwargs["kwargs"]["attempt"] > 1),
        key=lambda t: t.args_kwargs["kwargs"]["attempt"],
    )
    assert [t.args_kwargs["kwargs"]["attempt"] for t in retries] == [2, 3, 4]
    waits = [(t.run_after - attempts[t.args_kwargs["kwargs"]["attempt"] - 1]).total_seconds() for t in retries]
    assert waits == pytest.approx([0.01, 0.02, 0.04], abs=1e-6)  # counted from the attempt's own time
    assert all(r.requests[i + 1][0] - r.requests[i][0] >= w for i, w in enumerate([0.01, 0.02, 0.04]))


@worker_db
def test_webhook_delivery__5xx_with_long_backoff__task_returns_at_once_next_attempt_scheduled(
    make_experiment, receiver, settings
):
    settings.SIGNALDASH_WEBHOOK_BACKOFF_S = 60
    exp = make_experiment("no-sleep", status=Experiment.Status.RUNNING)
    r = receiver(500, 200)
    pk = _delivery(exp, r.url).pk
    started = time.monotonic()
    call_command("db_worker", "--batch", "--no-startup-delay", verbosity=0)
    assert time.monotonic() - started < 5  # the worker is not held for the 60 s backoff
    delivery = WebhookDelivery.objects.get(pk=pk)
    assert delivery.status == "pending" and delivery.attempts == 1 and len(r.requests) == 1
    wait = (delivery.next_attempt_at - WebhookAttempt.objects.get(delivery=delivery).at).total_seconds()
    assert wait == pytest.approx(60, abs=0.5)


def test_webhook_delivery__stale_duplicate_task__makes_no_attempt(make_experiment, receiver):
    exp = make_experiment("stale", status=Experiment.Status.RUNNING)
    r = receiver(500, 200)
    pk = _delivery(exp, r.url).pk
    webhook_delivery_send(delivery_id=pk)  # attempt 1 fails, attempt 2 is scheduled
    webhook_delivery_send(delivery_id=pk, attempt=1)  # a duplicate of the first task
    assert len(r.requests) == 1 and WebhookDelivery.objects.get(pk=pk).attempts == 1


def test_webhook_delivery__4xx__not_retried(make_experiment, receiver):
    exp = make_experiment("no-retry-4xx", status=Experiment.Status.RUNNING)
    r = receiver(410, 200)
    delivery = webhook_delivery_send(delivery_id=_delivery(exp, r.url).pk)
    assert len(r.requests) == 1
    assert delivery.status == "failed" and delivery.attempts == 1 and delivery.last_status == 410
    assert delivery.last_error == "HTTP 410"


@worker_db
def test_webhook_delivery__hanging_receiver__cut_off_by_timeout_and_retried(make_experiment, receiver):
    exp = make_experiment("hang", status=Experiment.Status.RUNNING)
    r = receiver("hang", 200)
    started = time.monotonic()
    delivery = _deliver(_delivery(exp, r.url).pk)
    assert time.monotonic() - started < 3  # the receiver would have held the first request 5 s
    attempts = list(WebhookAttempt.objects.filter(delivery=delivery))
    assert [a.status_code for a in attempts] == [None, 200]
    assert attempts[0].error == "timeout" and attempts[0].duration_ms >= 250
    assert delivery.status == "delivered" and delivery.attempts == 2


def test_webhook_delivery__finished__second_send_does_nothing(make_experiment, receiver):
    exp = make_experiment("idempotent", status=Experiment.Status.RUNNING)
    r = receiver(200, 200)
    pk = _delivery(exp, r.url).pk
    webhook_delivery_send(delivery_id=pk)
    webhook_delivery_send(delivery_id=pk)
    assert len(r.requests) == 1


def test_webhook_delivery__slack_format__one_line_with_link(make_experiment, receiver):
    exp = make_experiment("slacky", status=Experiment.Status.RUNNING)
    r = receiver(200)
    webhook_delivery_send(delivery_id=_delivery(exp, r.url, fmt="slack").pk)
    body = json.loads(r.requests[0][2])
    assert list(body) == ["text"] and "\n" not in body["text"]
    assert "Slacky" in body["text"] and exp.get_absolute_url() in body["text"]


def test_notification_enqueue__same_occasion_twice__one_delivery(make_experiment, receiver):
    exp = make_experiment("once", status=Experiment.Status.RUNNING)
    Webhook.objects.create(name="a", url=receiver(200).url, secret=SECRET)
    assert len(notification_enqueue(experiment=exp, event="experiment.approved")) == 1
    assert notification_enqueue(experiment=exp, event="experiment.approved") == []
    assert WebhookDelivery.objects.count() == 1


def test_notification_enqueue__webhook_filters_events__only_wanted_ones(make_experiment, receiver):
    exp = make_experiment("filtered", status=Experiment.Status.RUNNING)
    Webhook.objects.create(name="a", url=receiver(200).url, secret=SECRET, events=["experiment.decided"])
    Webhook.objects.create(name="off", url=receiver(200).url, secret=SECRET, active=False)
    assert notification_enqueue(experiment=exp, event="experiment.approved") == []


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/x", "http://10.1.2.3/x", "http://169.254.169.254/latest", "http://[::1]/x"]
)
def test_webhook_target_check__private_in_production__refused(settings, url):
    settings.SIGNALDASH_WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(UnsafeTarget):
        webhook_target_check(url)


def test_webhook_delivery__private_target_not_allowed__failed_without_request(make_experiment, receiver, settings):
    exp = make_experiment("ssrf", status=Experiment.Status.RUNNING)
    r = receiver(200)
    pk = _delivery(exp, r.url).pk
    settings.SIGNALDASH_WEBHOOK_ALLOW_PRIVATE = False
    delivery = webhook_delivery_send(delivery_id=pk)
    assert r.requests == [] and delivery.status == "failed" and "non-public" in delivery.last_error


@pytest.mark.django_db(transaction=True)  # on_commit and the worker, as in production
def test_approve__webhook_configured__sent_after_commit_by_task_worker(make_experiment, reviewer, receiver):
    from tests.experiments.conftest import ensure_workflow_groups

    ensure_workflow_groups()
    r = receiver(200)
    Webhook.objects.create(name="ops", url=r.url, secret=SECRET)
    exp = make_experiment("via-worker", status=Experiment.Status.REVIEW)
    review = WebhookDelivery.objects.get(event="experiment.review_requested")
    assert r.requests == []  # enqueued, never sent inside the request
    services.experiment_approve_and_start(experiment=exp, actor=reviewer)
    enqueued = time.monotonic()
    call_command("db_worker", "--batch", "--no-startup-delay", verbosity=0)
    events = sorted(json.loads(body)["event"] for _, _, body in r.requests)
    assert events == ["experiment.approved", "experiment.review_requested"]
    latency_ms = (r.requests[-1][0] - enqueued) * 1000
    print(f"delivery latency enqueue→received: {latency_ms:.1f} ms")  # noqa: T201 - reported figure
    review.refresh_from_db()
    assert review.status == "delivered"


def test_webhook_admin__superuser__secret_never_rendered_and_blank_keeps_it(client, superuser, receiver):
    hook = Webhook.objects.create(name="ops", url=receiver(200).url, secret=SECRET)
    client.force_login(superuser)
    page = client.get(f"/admin/experiments/webhook/{hook.pk}/change/")
    assert page.status_code == 200 and SECRET not in page.content.decode()
    response = client.post(
        f"/admin/experiments/webhook/{hook.pk}/change/",
        {"name": "renamed", "url": hook.url, "format": "json", "secret": "", "active": "on"},
    )
    assert response.status_code == 302
    hook.refresh_from_db()
    assert hook.name == "renamed" and hook.secret == SECRET


@pytest.mark.django_db(transaction=True)  # two real connections racing, as two workers would
def test_notification_enqueue__two_concurrent_workers__one_delivery(make_experiment, receiver):
    from django.db import connection, connections, transaction

    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers need PostgreSQL (SQLite serialises whole-database writes)")
    from tests.experiments.conftest import ensure_workflow_groups

    ensure_workflow_groups()
    exp = make_experiment("race", status=Experiment.Status.RUNNING)
    Webhook.objects.create(name="a", url=receiver(200).url, secret=SECRET)
    barrier, results = threading.Barrier(2), []

    def worker():
        try:
            with transaction.atomic():
                barrier.wait(5)
                results.append(notification_enqueue(experiment=exp, event="experiment.result_ready"))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(len(r) for r in results) == [0, 1]
    assert WebhookDelivery.objects.filter(event="experiment.result_ready").count() == 1


def test_webhook_delivery__redirect__not_followed_and_not_retried(make_experiment, receiver):
    exp = make_experiment("redirect", status=Experiment.Status.RUNNING)
    r = receiver(302, 200)
    delivery = webhook_delivery_send(delivery_id=_delivery(exp, r.url).pk)
    assert len(r.requests) == 1
    assert delivery.status == "failed" and delivery.attempts == 1 and delivery.last_status == 302


def test_webhook_target_check__public_name__returns_the_checked_address(settings, monkeypatch):
    # Given a name that resolves to a public address (the lookup answered here: no traffic leaves the machine)
    settings.SIGNALDASH_WEBHOOK_ALLOW_PRIVATE = False
    answer = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 443))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: answer)
    # Then the check returns that address for the attempt to connect to
    assert webhook_target_check("https://hooks.example.com/x") == "93.184.216.34"


def test_webhook_delivery__name_rebinds_after_the_check__request_goes_to_the_checked_address(
    make_experiment, receiver, settings, monkeypatch
):
    # Given a webhook whose host name does not resolve at all, and a check that vouched for 127.0.0.1
    # (a DNS-rebinding name would answer the check and the request differently)
    import experiments.notifications as notifications

    exp = make_experiment("rebind", status=Experiment.Status.RUNNING)
    r = receiver(200)
    url = f"http://rebind.invalid:{r.server.server_port}/hook?x=1"
    pk = _delivery(exp, url).pk
    settings.SIGNALDASH_WEBHOOK_ALLOW_PRIVATE = False
    monkeypatch.setattr(notifications, "webhook_target_check", lambda u: "127.0.0.1")
    # When the delivery is sent
    delivery = webhook_delivery_send(delivery_id=pk)
    # Then it connected to the checked address (no second lookup), with the URL's Host header
    assert delivery.status == "delivered", delivery.last_error
    [(_, headers, _)] = r.requests
    assert headers["Host"] == f"rebind.invalid:{r.server.server_port}"
