"""Raise the periodic notification events (health_failed, result_ready, review_overdue); for cron.

    manage.py detect_notifications                     # detect now, in this process (cron: every 5 minutes)
    manage.py detect_notifications --enqueue           # one detection run as a task for the worker
    manage.py detect_notifications --enqueue --every 300   # the worker runs it every 300 s from now on

Each occasion is enqueued once (docs/notifications.md), so overlapping runs — two cron hosts, a cron run and
the worker's schedule — never send an event twice. The deliveries are sent by ``manage.py db_worker``.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from experiments.detection import notifications_detect, notifications_detect_schedule


class Command(BaseCommand):
    help = "Raise health_failed, result_ready and review_overdue notifications (each occasion once)."

    def add_arguments(self, parser):
        parser.add_argument("--enqueue", action="store_true", help="Run the detection as a task in the worker.")
        parser.add_argument(
            "--every",
            type=float,
            metavar="SECONDS",
            help="With --enqueue: the task re-enqueues itself to run again every SECONDS (one schedule at a time).",
        )

    def handle(self, *args, **options):
        every = options["every"]
        if every is not None and (not options["enqueue"] or every < 10):
            raise CommandError("--every needs --enqueue and at least 10 seconds.")
        if options["enqueue"]:
            queued = notifications_detect_schedule(every_s=every)
            self.stdout.write("Detection queued for the worker." if queued else "A scheduled detection is waiting.")
            return
        summary = notifications_detect()
        for event, slug, occasion in summary.events:
            self.stdout.write(f"{event} {slug} ({occasion})")
        for error in summary.errors:
            self.stderr.write(f"error: {error}")
        self.stdout.write(str(summary))
