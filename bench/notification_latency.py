"""Notification delivery latency: commit → receiver, and detection → receiver (webhook and email).

One command: `.venv/bin/python bench/notification_latency.py [--events 20] [--interval 1]`. It starts a
throwaway PostgreSQL cluster (tests.pgcluster), migrates, starts a loopback HTTP receiver and a loopback SMTP
server (aiosmtpd), and a real task worker (`manage.py db_worker --interval S`, a separate OS process). Then:

- commit → receiver: ``--events`` experiments are submitted for review one after another (each commit raises
  `experiment.review_requested`); the time from the service's commit to the receiver reading the webhook body,
  and to the SMTP server accepting the email;
- detection → receiver: ``--events`` running experiments with a sample-ratio mismatch; one
  `detect_notifications` run; the time from its start to each `experiment.health_failed` arriving.

Prints p50 / p95 / max in ms per path. The worker's poll interval (django-tasks' default 1 s) bounds the wait
of a task enqueued while the worker idles. Not part of pytest or `make bench`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.pgcluster import postgres_cluster  # noqa: E402


class Arrivals:
    """Wall-clock arrival times keyed by (channel, event, slug)."""

    def __init__(self):
        self.at: dict[tuple[str, str, str], float] = {}
        self.lock = threading.Lock()

    def add(self, key: tuple[str, str, str]) -> None:
        with self.lock:
            self.at.setdefault(key, time.time())

    def wait(self, keys: list[tuple[str, str, str]], within_s: float) -> None:
        deadline = time.monotonic() + within_s
        while any(k not in self.at for k in keys):
            if time.monotonic() > deadline:
                missing = [k for k in keys if k not in self.at]
                raise SystemExit(f"not delivered within {within_s} s: {missing[:5]}")
            time.sleep(0.005)


def receiver_start(arrivals: Arrivals) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server API
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            arrivals.add(("webhook", body["event"], body["experiment"]["slug"]))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def smtp_start(arrivals: Arrivals):
    import socket
    from email import message_from_bytes
    from email.policy import default

    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, smtp, session, envelope):  # noqa: N802 - aiosmtpd API
            message = message_from_bytes(envelope.original_content, policy=default)
            arrivals.add(("email", message["X-Bench-Event"] or message["Subject"], message["Subject"]))
            return "250 OK"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    return controller, port


def _summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[max(0, int(round(len(ordered) * 0.95)) - 1)]
    p50 = statistics.median(ordered)
    return f"p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   max {ordered[-1]:7.1f} ms   (n={len(ordered)})"


def _setup_users():
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    user_model = get_user_model()
    ops = user_model.objects.create_user("bench-ops", email="ops@example.test", is_staff=True)
    ops.groups.add(Group.objects.get(name="ops"))
    reviewer = user_model.objects.create_user("bench-reviewer", email="reviewer@example.test")
    reviewer.groups.add(Group.objects.get(name="reviewer"))
    return ops, reviewer


def _experiment(slug: str, ops):
    from experiments import services
    from experiments.models import Experiment, Variant

    exp = services.experiment_save_plan(
        experiment=Experiment(name=slug.replace("-", " ").title(), slug=slug, hypothesis="Bench.", owner=ops),
        actor=ops,
    )
    services.variant_save(variant=Variant(experiment=exp, key="control", name="Control", is_control=True), actor=ops)
    services.variant_save(variant=Variant(experiment=exp, key="green", name="Green"), actor=ops)
    return exp


def measure_commit(arrivals: Arrivals, ops, n: int) -> tuple[list[float], list[float]]:
    from experiments import services

    committed: dict[str, float] = {}
    for i in range(n):
        exp = _experiment(f"commit-{i:02d}", ops)
        services.experiment_submit_for_review(experiment=exp, actor=ops)  # @transaction.atomic: committed here
        committed[exp.slug] = time.time()
        subject = f"[Signal Dash] Review requested: {exp.name} (review)"
        arrivals.wait([("webhook", "experiment.review_requested", exp.slug), ("email", subject, subject)], 30)
    hooks = [(arrivals.at[("webhook", "experiment.review_requested", s)] - t) * 1000 for s, t in committed.items()]
    emails = []
    for slug, t in committed.items():
        subject = f"[Signal Dash] Review requested: {slug.replace('-', ' ').title()} (review)"
        emails.append((arrivals.at[("email", subject, subject)] - t) * 1000)
    return hooks, emails


def measure_detection(arrivals: Arrivals, ops, reviewer, n: int) -> tuple[list[float], list[float], float]:
    from django.utils import timezone

    from experiments import services
    from experiments.detection import notifications_detect
    from tracking.models import Event

    slugs = []
    for i in range(n):
        exp = _experiment(f"detect-{i:02d}", ops)
        services.experiment_submit_for_review(experiment=exp, actor=ops)
        services.experiment_approve_and_start(experiment=exp, actor=reviewer)
        now, events = timezone.now(), []
        for key, users in (("control", 1000), ("green", 800)):  # a sample-ratio mismatch
            variant = exp.variants.get(key=key)
            events += [
                Event(experiment=exp, variant=variant, user_key=f"{key}-{u}", event_type="exposure", occurred_at=now)
                for u in range(users)
            ]
        Event.objects.bulk_create(events, batch_size=2000)
        slugs.append(exp.slug)
    approved = [("webhook", "experiment.approved", s) for s in slugs]
    arrivals.wait(approved, 60)
    started = time.time()
    summary = notifications_detect()
    took = (time.time() - started) * 1000
    assert len(summary.events) == n, summary
    hook_keys = [("webhook", "experiment.health_failed", s) for s in slugs]
    subjects = [f"[Signal Dash] Health check failed: {s.replace('-', ' ').title()} (running)" for s in slugs]
    email_keys = [("email", s, s) for s in subjects]
    arrivals.wait(hook_keys + email_keys, 60)
    return (
        [(arrivals.at[k] - started) * 1000 for k in hook_keys],
        [(arrivals.at[k] - started) * 1000 for k in email_keys],
        took,
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--interval", type=float, default=1.0, help="db_worker poll interval (s)")
    args = parser.parse_args(argv)
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP command
    arrivals = Arrivals()
    receiver = receiver_start(arrivals)
    controller, smtp_port = smtp_start(arrivals)
    with postgres_cluster() as url:
        import psycopg

        with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE signaldash")
        os.environ.update(
            DATABASE_URL=url,
            DJANGO_SETTINGS_MODULE="signaldash.settings",
            SIGNALDASH_AI_PROVIDER="none",
            SIGNALDASH_WEBHOOK_ALLOW_PRIVATE="1",
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=str(smtp_port),
        )
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection

        from experiments.models import Webhook

        call_command("migrate", "--noinput", verbosity=0)
        call_command("createcachetable", verbosity=0)
        Webhook.objects.create(name="bench", url=f"http://127.0.0.1:{receiver.server_port}/hook", secret="bench")
        ops, reviewer = _setup_users()
        worker = subprocess.Popen(  # noqa: S603 - our own interpreter and manage.py
            [sys.executable, "manage.py", "db_worker", "--interval", str(args.interval), "--no-startup-delay"],
            cwd=ROOT,
            env=os.environ.copy(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            hooks, emails = measure_commit(arrivals, ops, args.events)
            d_hooks, d_emails, took = measure_detection(arrivals, ops, reviewer, args.events)
        finally:
            worker.terminate()
            worker.wait(30)
            connection.close()
    controller.stop()
    receiver.shutdown()
    print(f"db_worker --interval {args.interval:g}, {args.events} events per path, PostgreSQL, loopback receivers")
    print(f"commit → webhook received     {_summary(hooks)}")
    print(f"commit → email accepted       {_summary(emails)}")
    print(f"detection start → webhook     {_summary(d_hooks)}   (the detection run itself: {took:.0f} ms)")
    print(f"detection start → email       {_summary(d_emails)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
