"""Periodic notification detection: health_failed, result_ready, review_overdue, each occasion once.

Readouts are real (events in the database, the real readout, checks and verdicts); the concurrency test runs
two OS processes of the management command against PostgreSQL and a real receiver on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from experiments import services
from experiments.detection import notifications_detect
from experiments.models import Experiment, Webhook, WebhookDelivery
from readouts.selectors import readout_get
from readouts.verdicts import running_readiness, verdicts_get
from tests.experiments.conftest import add_winning_events
from tests.experiments.test_notifications import SECRET, Receiver, run_worker_until_finished


@pytest.fixture(autouse=True)
def _fast(settings):
    settings.SIGNALDASH_WEBHOOK_BACKOFF_S = 0.01
    settings.SIGNALDASH_WEBHOOK_TIMEOUT_S = 2
    settings.SIGNALDASH_WEBHOOK_ALLOW_PRIVATE = True


@pytest.fixture
def hook(db):
    receiver = Receiver([])
    Webhook.objects.create(name="ops", url=receiver.url, secret=SECRET)
    yield receiver
    receiver.close()


@pytest.fixture
def make_running(make_experiment, approver, ops):
    """make_running(slug, analysis=..., **plan): a draft with these plan fields, submitted and approved."""

    def _make(slug: str, *, analysis: str = "fixed", **plan) -> Experiment:
        exp = make_experiment(slug)
        Experiment.objects.filter(pk=exp.pk).update(analysis=analysis, **plan)
        exp.refresh_from_db()
        services.experiment_submit_for_review(experiment=exp, actor=ops)
        services.experiment_approve_and_start(experiment=exp, actor=approver)
        exp.refresh_from_db()
        return exp

    return _make


def add_srm_events(experiment: Experiment) -> None:
    """1,000 exposures in control and 800 in green at an even split: a sample-ratio mismatch (p far below 0.001)."""
    from tracking.models import Event

    now = timezone.now()
    events = [
        Event(experiment=experiment, variant=experiment.variants.get(key=key), user_key=f"{key}-s{i}",
              event_type="exposure", occurred_at=now)
        for key, n in (("control", 1000), ("green", 800))
        for i in range(n)
    ]  # fmt: skip
    Event.objects.bulk_create(events, batch_size=2000)


PERIODIC = ("experiment.health_failed", "experiment.result_ready", "experiment.review_overdue")


def _deliveries() -> Counter:
    """(event, occasion) of the periodic events' deliveries (the workflow's own events are left out)."""
    return Counter((d.event, d.occasion) for d in WebhookDelivery.objects.filter(event__in=PERIODIC))


def test_detect__srm__health_failed_once_per_check_code(make_running, hook):
    # Given a running experiment with a sample-ratio mismatch
    exp = make_running("srm-exp")
    add_srm_events(exp)
    # When detection runs twice
    first, second = notifications_detect(), notifications_detect()
    # Then health_failed is enqueued once, for the srm check, and the second run finds it and enqueues nothing
    occasion = f"experiment.health_failed:{exp.pk}:srm"
    assert ("experiment.health_failed", "srm-exp", occasion) in first.events
    assert _deliveries()[("experiment.health_failed", occasion)] == 1
    assert first.enqueued >= 1 and second.enqueued == 0 and second.events == first.events
    assert not any(e == "experiment.result_ready" for e, _, _ in first.events)  # untrustworthy: not ready


def test_detect__sequential_clear_winner__result_ready_once(make_running, hook):
    exp = make_running("seq-win", analysis="sequential")
    add_winning_events(exp, users=400, control_rate=0.10, green_rate=0.30)
    readout = readout_get(experiment=exp)
    assert [v.label for v in verdicts_get(readout)] == ["won"]  # the page's verdict, read independently
    notifications_detect()
    notifications_detect()
    assert _deliveries() == Counter({("experiment.result_ready", f"experiment.result_ready:{exp.pk}"): 1})


def test_detect__sequential_inconclusive_without_plan__nothing(make_running, hook):
    exp = make_running("seq-flat", analysis="sequential")
    add_winning_events(exp, users=200, control_rate=0.10, green_rate=0.10)
    assert notifications_detect().events == []
    assert _deliveries() == Counter()


def test_detect__fixed_planned_sample__ready_only_when_reached(make_running, hook):
    # Given two fixed-horizon experiments with 400 users an arm: one plans ~200 an arm, the other thousands
    reached = make_running("fixed-reached", baseline_rate=0.10, mde=1.0)
    short = make_running("fixed-short", baseline_rate=0.10, mde=0.1)
    for exp in (reached, short):
        add_winning_events(exp, users=400, control_rate=0.10, green_rate=0.12)
    progress = {e.slug: readout_get(experiment=e).plan.progress for e in (reached, short)}
    assert progress["fixed-reached"] >= 1 > progress["fixed-short"]
    # When detection runs
    events = notifications_detect().events
    # Then only the one that reached its planned sample is ready (whatever its verdict)
    assert [(e, slug) for e, slug, _ in events] == [("experiment.result_ready", "fixed-reached")]


def test_running_readiness__fixed_without_power_plan__not_a_result_ready(make_running, hook):
    exp = make_running("fixed-noplan")
    add_winning_events(exp, users=400)
    readout = readout_get(experiment=exp)
    assert readout.plan.progress is None and running_readiness(readout, verdicts_get(readout)) == ""
    assert notifications_detect().events == []


def test_detect__review_past_sla__overdue_once_per_submission(make_experiment, hook, reviewer, ops):
    # Given an experiment submitted 10 days ago (well past 2 working days) and one submitted now
    with pytest.MonkeyPatch.context() as mp:
        long_ago = timezone.now() - timedelta(days=10)
        mp.setattr("django.utils.timezone.now", lambda: long_ago)
        old = make_experiment("old-review", status="review")
    make_experiment("fresh-review", status="review")
    # When detection runs twice
    notifications_detect()
    notifications_detect()
    # Then the old submission is overdue once; the fresh one is not
    [(event, occasion)] = [k for k in _deliveries() if k[0] == "experiment.review_overdue"]
    assert occasion.startswith(f"experiment.review_overdue:{old.pk}:")
    # And a re-submission is a new occasion, overdue again only once it is past the SLA itself
    services.experiment_request_changes(experiment=old, actor=reviewer, comment="More detail")
    services.experiment_submit_for_review(experiment=old, actor=ops)
    notifications_detect()
    assert sum(1 for k in _deliveries() if k[0] == "experiment.review_overdue") == 1
    later = timezone.now() + timedelta(days=7)
    notifications_detect(now=later)
    assert sum(1 for k in _deliveries() if k[0] == "experiment.review_overdue") == 3  # the new one, and fresh


def test_detect_notifications_command__prints_events_and_summary(make_running, hook, capsys):
    add_srm_events(make_running("srm-cmd"))
    call_command("detect_notifications")
    out = capsys.readouterr().out
    assert "experiment.health_failed srm-cmd" in out and "1 experiment(s) checked" in out


@pytest.mark.django_db(transaction=True)  # the worker, as in production
def test_detect_notifications_enqueue_every__worker_runs_it_and_schedules_next(make_running, hook):
    from django_tasks_db.models import DBTaskResult

    from experiments.detection import notifications_detect_task

    add_srm_events(make_running("srm-worker"))
    call_command("detect_notifications", "--enqueue", "--every", "600")
    call_command("detect_notifications", "--enqueue", "--every", "600")  # one schedule at a time
    assert DBTaskResult.objects.filter(task_path=notifications_detect_task.module_path).count() == 1
    before = timezone.now()
    call_command("db_worker", "--batch", "--no-startup-delay", verbosity=0)
    [delivery] = WebhookDelivery.objects.filter(event="experiment.health_failed")
    delivery = run_worker_until_finished(delivery.pk)
    assert delivery.status == "delivered"
    assert "experiment.health_failed" in [json.loads(body)["event"] for _, _, body in hook.requests]
    [waiting] = DBTaskResult.objects.filter(task_path=notifications_detect_task.module_path, status="READY")
    assert (waiting.run_after - before).total_seconds() == pytest.approx(600, abs=30)


_RACER = """
import os, pathlib, sys, time
import django
django.setup()
from django.core.management import call_command
mine, other = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
mine.touch()
deadline = time.monotonic() + 60
while not other.exists():  # start together: both processes are up before either detects
    if time.monotonic() > deadline:
        sys.exit("the other worker never started")
    time.sleep(0.001)
call_command("detect_notifications")
"""


def _database_url(settings_dict: dict) -> str:
    from urllib.parse import quote

    user, password = quote(settings_dict["USER"] or ""), quote(settings_dict["PASSWORD"] or "")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    return f"postgres://{auth}{settings_dict['HOST']}:{settings_dict['PORT']}/{settings_dict['NAME']}"


@pytest.mark.django_db(transaction=True)  # the two processes read what this test committed
def test_detect_notifications__two_worker_processes_at_once__each_event_sent_once(
    make_running, make_experiment, hook, tmp_path, ops, settings
):
    from django.db import connection

    from tests.experiments.test_notification_email import SMTPServer

    if connection.vendor != "postgresql":
        pytest.skip("concurrent detection across processes needs PostgreSQL (SQLite locks the whole file)")
    smtp = SMTPServer([])
    ops.email = "ops@example.test"
    ops.save(update_fields=["email"])
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"  # the worker below sends (not locmem)
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp.port
    # Given an SRM experiment, a sequential winner and a review past its SLA
    srm, winner = make_running("race-srm"), make_running("race-win", analysis="sequential")
    add_srm_events(srm)
    add_winning_events(winner, users=400, control_rate=0.10, green_rate=0.30)
    with pytest.MonkeyPatch.context() as mp:
        long_ago = timezone.now() - timedelta(days=10)
        mp.setattr("django.utils.timezone.now", lambda: long_ago)
        make_experiment("race-review", status="review")
    # When two OS processes run the management command at the same moment
    env = {**os.environ, "DATABASE_URL": _database_url(connection.settings_dict)}
    env.update(DJANGO_SETTINGS_MODULE="signaldash.settings_test", EMAIL_HOST="127.0.0.1", EMAIL_PORT=str(smtp.port))
    a, b = tmp_path / "a", tmp_path / "b"
    procs = [
        subprocess.Popen(  # noqa: S603 - our own interpreter and script
            [sys.executable, "-c", _RACER, str(mine), str(other)],
            cwd=settings.BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for mine, other in ((a, b), (b, a))
    ]  # fmt: skip
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    # Then each process found every event, one delivery exists per occasion, and the worker sends each once
    for out, _ in outputs:
        assert "3 event(s) found" in out
    assert sum(int(out.split(" enqueued")[0].rsplit(", ", 1)[1]) for out, _ in outputs) == 6  # 3 hooks, 3 emails
    for delivery in WebhookDelivery.objects.all():
        run_worker_until_finished(delivery.pk)
    emails = Counter(m["Subject"] for _, _, m in smtp.messages)
    smtp.close()
    assert emails == Counter(
        {
            "[Signal Dash] Health check failed: Race Srm (running)": 1,
            "[Signal Dash] Result ready: Race Win (running)": 1,
            "[Signal Dash] Review overdue: Race Review (review)": 1,
        }
    )
    payloads = [json.loads(body) for _, _, body in hook.requests]
    sent = Counter((p["event"], p["experiment"]["slug"]) for p in payloads if p["event"] in PERIODIC)
    assert sent == Counter(
        {
            ("experiment.health_failed", "race-srm"): 1,
            ("experiment.result_ready", "race-win"): 1,
            ("experiment.review_overdue", "race-review"): 1,
        }
    )


@pytest.mark.django_db(transaction=True)  # the worker, as in production
def test_detect__delivery_whose_task_never_ran__resumed_and_delivered_once(make_running, hook):
    from django_tasks_db.models import DBTaskResult

    from experiments.detection import notifications_resume_stalled

    # Given a pending delivery whose task was lost (a worker killed mid-task), due an hour ago, and a fresh one
    exp = make_running("stalled")
    [lost] = WebhookDelivery.objects.filter(event="experiment.approved")
    DBTaskResult.objects.all().delete()
    WebhookDelivery.objects.filter(pk=lost.pk).update(created_at=timezone.now() - timedelta(hours=1))
    fresh = WebhookDelivery.objects.create(
        webhook=lost.webhook, event="experiment.decided", occasion=f"fresh:{exp.pk}", payload=lost.payload
    )
    # When detection runs (twice: the second finds the resumed one still queued and enqueues a no-op at most)
    assert notifications_detect().resumed == 1
    notifications_resume_stalled()
    # Then the worker delivers the lost one exactly once; the fresh one (not due) is left to its own task
    call_command("db_worker", "--batch", "--no-startup-delay", verbosity=0)
    lost.refresh_from_db()
    fresh.refresh_from_db()
    assert lost.status == "delivered" and lost.attempts == 1 and fresh.status == "pending"
    assert [json.loads(body)["event"] for _, _, body in hook.requests] == ["experiment.approved"]
