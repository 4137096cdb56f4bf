"""PostgreSQL: rate counters live in an UNLOGGED table (no WAL per hit).

A counter is rewritten by every throttled request; its rows matter only for the current window, so
they need no crash safety: after a crash PostgreSQL empties an unlogged table, which restarts every
window's count at zero (at most one window's allowance extra). Unlogged tables are not sent to
streaming replicas; counters are only ever read and written on the primary (signaldash.routers).
"""

from django.db import migrations

from signaldash.ratelimit.models import RateCounter


def _set(persistence: str):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            table = schema_editor.quote_name(RateCounter._meta.db_table)
            schema_editor.execute(f"ALTER TABLE {table} SET {persistence}")

    return apply


class Migration(migrations.Migration):
    dependencies = [("ratelimit", "0001_initial")]

    operations = [migrations.RunPython(_set("UNLOGGED"), _set("LOGGED"), elidable=False)]
