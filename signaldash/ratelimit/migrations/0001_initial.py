from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="RateCounter",
            fields=[
                ("bucket", models.CharField(max_length=200, primary_key=True, serialize=False)),
                ("count", models.BigIntegerField()),
                (
                    "window_end",
                    models.BigIntegerField(db_index=True, help_text="Unix time (s) at which the window ends."),
                ),
            ],
            options={
                "constraints": [
                    models.CheckConstraint(condition=models.Q(("count__gte", 1)), name="ratecounter_count_positive")
                ],
            },
        ),
    ]
