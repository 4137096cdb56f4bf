"""`python manage.py create_api_key NAME [--scope track|read ...]`: create a service API key and print it once
(last line). Default scope: `track` (track events, assign); `--scope read` reads readouts."""

from django.core.management.base import BaseCommand, CommandError

from tracking.models import ServiceAPIKey


class Command(BaseCommand):
    help = "Create a per-service API key. The key is printed once, on the last line; only its hash is stored."

    def add_arguments(self, parser):
        parser.add_argument("name", help="Which service uses the key (at most 50 characters).")
        parser.add_argument(
            "--scope",
            action="append",
            choices=["track", "read"],
            dest="scopes",
            help="track: POST /api/track[/batch], /api/assign (default); read: readout API. Repeat for both.",
        )

    def handle(self, *args, name: str, scopes: list[str] | None = None, **options):
        name = name.strip()
        max_length = ServiceAPIKey._meta.get_field("name").max_length
        if not name or len(name) > max_length:
            raise CommandError(f"NAME must be 1–{max_length} characters.")
        wanted = set(scopes or ["track"])
        scope_value = ",".join(s for s in ("track", "read") if s in wanted)
        api_key, key = ServiceAPIKey.objects.create_key(name=name, scopes=scope_value)
        self.stdout.write(
            f"Created API key '{api_key.name}' (prefix {api_key.prefix}, scopes {scope_value}). "
            "Store it now; it cannot be shown again:"
        )
        self.stdout.write(key)
