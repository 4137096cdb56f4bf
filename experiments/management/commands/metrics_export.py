"""manage.py metrics_export [FILE]: the metric catalog as YAML (stdout without FILE)."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand

from experiments.metrics_yaml import metrics_export_yaml


class Command(BaseCommand):
    help = "Write the metric catalog as YAML (to FILE, or stdout)."

    def add_arguments(self, parser):
        parser.add_argument("file", nargs="?", help="Where to write (default: stdout).")

    def handle(self, *args, **options):
        text = metrics_export_yaml()
        if options["file"]:
            Path(options["file"]).write_text(text, encoding="utf-8")
            self.stderr.write(f"Wrote the catalog to {options['file']}.")
        else:
            self.stdout.write(text, ending="")
