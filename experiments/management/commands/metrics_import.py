"""manage.py metrics_import FILE [--certify --as USERNAME]: create or update catalog metrics from YAML."""

from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from experiments.metrics_yaml import ImportRefused, metrics_import_yaml


class Command(BaseCommand):
    help = "Create or update metrics from a YAML file (all validated first; a second run changes nothing)."

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--certify", action="store_true", help="Allow official metrics (needs --as).")
        parser.add_argument("--as", dest="as_user", help="The user the import acts as (audited).")

    def handle(self, *args, **options):
        actor = None
        if options["as_user"]:
            actor = get_user_model().objects.filter(username=options["as_user"]).first()
            if actor is None:
                raise CommandError(f"No user '{options['as_user']}'.")
        try:
            text = Path(options["file"]).read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"Cannot read {options['file']}: {exc}") from exc
        try:
            result = metrics_import_yaml(text, actor=actor, certify=options["certify"])
        except ImportRefused as exc:
            raise CommandError(
                f"Refused, nothing was written ({len(exc.problems)} problem(s)):\n" + "\n".join(exc.problems)
            ) from exc
        self.stdout.write(
            f"created {len(result.created)}, updated {len(result.updated)}, unchanged {len(result.unchanged)}"
        )
