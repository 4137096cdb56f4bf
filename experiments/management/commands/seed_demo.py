from django.core.management.base import BaseCommand
from django.db import connection

from experiments.demo_data import SCENARIOS_PATH, demo_seed
from tracking.models import Assignment, Event


def analyze_event_tables() -> None:
    """Refresh PostgreSQL's planner statistics after a bulk load: without them the readout aggregate
    is planned for empty tables (seconds instead of milliseconds until autovacuum catches up)."""
    if connection.vendor != "postgresql":
        return
    tables = ", ".join(connection.ops.quote_name(model._meta.db_table) for model in (Event, Assignment))
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {tables}")


class Command(BaseCommand):
    help = "Load the demo scenarios (fixtures/demo_scenarios.json) and demo users. Idempotent."

    def add_arguments(self, parser):
        parser.add_argument("--reset-passwords", action="store_true", help="Give the demo users new passwords.")

    def handle(self, *args, **options):
        result = demo_seed(path=SCENARIOS_PATH, reset_passwords=options["reset_passwords"])
        if result.events_inserted:
            analyze_event_tables()
        from django.contrib.auth import get_user_model

        from readouts.sources.demo import SLUG, demo_lake_seed  # the warehouse-native demo experiment

        users = {u.username: u for u in get_user_model().objects.filter(username__in=["ops", "reviewer"])}
        if demo_lake_seed(users=users):
            result.created_experiments.append(SLUG)
        if result.created_experiments:
            self.stdout.write(
                f"Created {len(result.created_experiments)} demo experiments "
                f"({', '.join(result.created_experiments)}) with {result.events_inserted} events."
            )
        else:
            self.stdout.write("Demo experiments already present: nothing changed.")
        if result.created_users:
            self.stdout.write(self.style.SUCCESS("Demo logins (shown once; save them now):"))
            for username, password in result.created_users.items():
                self.stdout.write(f"  {username:<9} {password}")
        else:
            self.stdout.write(
                "Demo users ops / reviewer / admin already exist (their passwords were shown when created; "
                "run `python manage.py seed_demo --reset-passwords` for new ones)."
            )
