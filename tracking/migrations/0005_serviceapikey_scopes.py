"""API key scopes. Existing keys get `track` only: they were created as tracking keys, and reading
readouts now needs a key created (or changed in the admin) with the `read` scope."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tracking", "0004_event_id_and_covariates"),
    ]

    operations = [
        migrations.AddField(
            model_name="serviceapikey",
            name="scopes",
            field=models.CharField(
                choices=[("track", "track (track events, assign)"), ("read", "read (read readouts)"), ("track,read", "track and read")],
                default="track",
                max_length=16,
            ),
        ),
        migrations.AddConstraint(
            model_name="serviceapikey",
            constraint=models.CheckConstraint(
                condition=models.Q(("scopes__in", ["track", "read", "track,read"])), name="serviceapikey_scopes_valid"
            ),
        ),
    ]
