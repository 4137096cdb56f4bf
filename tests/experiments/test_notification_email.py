"""Notification emails through a real SMTP server (aiosmtpd) on 127.0.0.1 started by each test, never locmem."""

from __future__ import annotations

import re
import socket
import time
from email import message_from_bytes
from email.policy import default as default_policy

import pytest
from django.core.management import call_command

from experiments import services
from experiments.detection import notifications_detect
from experiments.models import EmailNotification, Experiment
from experiments.notification_email import email_notification_send
from tests.experiments.test_notification_detection import add_srm_events


class SMTPServer:
    """aiosmtpd on a free loopback port; ``script`` gives the replies to DATA in turn (then 250)."""

    def __init__(self, script: list[str]):
        from aiosmtpd.controller import Controller

        self.script, self.messages, self.data_calls = list(script), [], 0
        server = self

        class Handler:
            async def handle_DATA(self, smtp, session, envelope):  # noqa: N802 - aiosmtpd API
                server.data_calls += 1
                reply = server.script.pop(0) if server.script else "250 Message accepted for delivery"
                if reply.startswith("250"):
                    message = message_from_bytes(envelope.original_content, policy=default_policy)
                    server.messages.append((time.monotonic(), list(envelope.rcpt_tos), message))
                return reply

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def close(self):
        if self.controller.loop.is_running():
            self.controller.stop()


@pytest.fixture
def smtp(settings):
    made = []

    def _make(*script: str) -> SMTPServer:
        made.append(SMTPServer(list(script)))
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"  # pytest-django sets locmem
        settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", made[-1].port, 2
        settings.SIGNALDASH_EMAIL_NOTIFICATIONS = True
        settings.SIGNALDASH_WEBHOOK_BACKOFF_S = 0.01
        return made[-1]

    yield _make
    for server in made:
        server.close()


@pytest.fixture
def addressed(ops, reviewer, approver, django_user_model):
    """Everyone in the workflow fixtures has an address; one inactive reviewer must never be written to."""
    for user in (ops, reviewer, approver):
        django_user_model.objects.filter(pk=user.pk).update(email=f"{user.username}@example.test")
    from django.contrib.auth.models import Group

    gone = django_user_model.objects.create_user("gone", email="gone@example.test", is_active=False)
    gone.groups.add(Group.objects.get(name="reviewer"))
    return {"owner": "ops@example.test", "reviewers": {"reviewer@example.test", "approver@example.test"}}


def run_worker_until_sent(*, within_s: float = 10.0) -> list[EmailNotification]:
    """Run the task worker until no email is pending (retries wait for their run_after): poll with a bound."""
    deadline = time.monotonic() + within_s
    while True:
        call_command("db_worker", "--batch", "--no-startup-delay", verbosity=0)
        if not EmailNotification.objects.filter(status=EmailNotification.Status.PENDING).exists():
            return list(EmailNotification.objects.order_by("pk"))
        assert time.monotonic() < deadline, "emails still pending"


def _text(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


@pytest.mark.django_db(transaction=True)  # on_commit and the worker, as in production
def test_review_and_approval__smtp_configured__worker_sends_owner_and_reviewers_once(
    make_experiment, approver, addressed, smtp
):
    # Given a real SMTP server and an experiment submitted for review
    server = smtp()
    exp = make_experiment("mailed", status=Experiment.Status.REVIEW)
    assert server.messages == []  # written in the transaction, never sent inside the request
    # When a reviewer approves it and the worker runs
    services.experiment_approve_and_start(experiment=exp, actor=approver)
    run_worker_until_sent()
    # Then the review request went to the owner and every active reviewer, the approval to the owner only
    by_subject = {m["Subject"]: (set(rcpt), m) for _, rcpt, m in server.messages}
    assert set(by_subject) == {
        "[Signal Dash] Review requested: Mailed (review)",
        "[Signal Dash] Approved: Mailed (running)",
    }
    review_to, review = by_subject["[Signal Dash] Review requested: Mailed (review)"]
    assert review_to == {addressed["owner"], *addressed["reviewers"]}
    approved_to, approved = by_subject["[Signal Dash] Approved: Mailed (running)"]
    assert approved_to == {addressed["owner"]}
    body = _text(approved)
    assert body.splitlines()[0] == "Approved: Mailed (running)"
    assert f"http://localhost:8000{exp.get_absolute_url()}" in body.splitlines()[1]
    assert "A reviewer approved it and it started." in body
    # And a re-run of the worker sends nothing more
    call_command("db_worker", "--batch", "--no-startup-delay", verbosity=0)
    assert len(server.messages) == 2


@pytest.mark.django_db(transaction=True)
def test_health_failed_email__srm__p_values_in_words_and_sent_once(make_experiment, approver, addressed, smtp):
    from tests.experiments.test_notification_detection import PERIODIC

    server = smtp()
    exp = make_experiment("srm-mail", status=Experiment.Status.RUNNING)
    add_srm_events(exp)
    notifications_detect()
    notifications_detect()  # the same occasion: no second email
    run_worker_until_sent()
    [(_, rcpt, message)] = [m for m in server.messages if "Health check failed" in m[2]["Subject"]]
    assert rcpt == [addressed["owner"]]  # not a review event: the owner only
    body = _text(message)
    assert "Sample ratio mismatch" in body and "chi-square p < 0.001" in body
    assert "Untrustworthy" in body
    assert not re.search(r"\d[eE][-+]?\d", body)  # no scientific notation
    assert EmailNotification.objects.filter(event__in=PERIODIC).count() == 1


@pytest.mark.django_db(transaction=True)
def test_email__451_then_accepted__retried_as_new_task_and_sent_once(make_experiment, addressed, smtp):
    server = smtp("451 4.3.0 try again later")
    make_experiment("retry-mail", status=Experiment.Status.REVIEW)
    [email] = run_worker_until_sent()
    assert email.status == "sent" and email.attempts == 2 and server.data_calls == 2
    assert len(server.messages) == 1 and email.last_error == ""


@pytest.mark.django_db(transaction=True)
def test_email__554_permanent__not_retried(make_experiment, addressed, smtp):
    server = smtp("554 5.7.1 rejected")
    make_experiment("rejected-mail", status=Experiment.Status.REVIEW)
    [email] = run_worker_until_sent()
    assert email.status == "failed" and email.attempts == 1 and server.data_calls == 1
    assert "554" in email.last_error


def test_email__server_down__retry_scheduled_without_waiting(make_experiment, addressed, smtp, settings):
    server = smtp()
    make_experiment("down-mail", status=Experiment.Status.REVIEW)
    server.close()
    settings.SIGNALDASH_WEBHOOK_BACKOFF_S = 60
    [email] = EmailNotification.objects.all()
    started = time.monotonic()
    email = email_notification_send(email_id=email.pk, attempt=1)
    assert time.monotonic() - started < 5 and email.status == "pending" and email.attempts == 1
    assert email.next_attempt_at is not None and "Error" in email.last_error
    again = email_notification_send(email_id=email.pk, attempt=1)  # a duplicate of the first task
    assert again.attempts == 1


def test_email__no_smtp_configured__nothing_written(make_experiment, addressed, settings):
    settings.SIGNALDASH_EMAIL_NOTIFICATIONS = False
    make_experiment("quiet", status=Experiment.Status.REVIEW)
    assert EmailNotification.objects.count() == 0


def test_email__owner_without_address_and_not_a_review__nothing_written(make_experiment, ops, smtp):
    smtp()
    make_experiment("nobody", status=Experiment.Status.RUNNING)  # nobody has an address here
    assert EmailNotification.objects.count() == 0


def test_email_admin__superuser__lists_and_opens_read_only(make_experiment, addressed, smtp, client, superuser):
    smtp()
    make_experiment("admin-mail", status=Experiment.Status.REVIEW)
    [email] = EmailNotification.objects.all()
    client.force_login(superuser)
    listing = client.get("/admin/experiments/emailnotification/").content.decode()
    assert f"/admin/experiments/emailnotification/{email.pk}/change/" in listing and "Review requested" in listing
    page = client.get(f"/admin/experiments/emailnotification/{email.pk}/change/")
    assert page.status_code == 200 and "Review requested" in page.content.decode()
