"""Bench helper (run with DATABASE_URL set): create a running experiment and an API key; print JSON.

The experiment is put into `running` directly (bypassing the review workflow, which is not what is
being measured), with the timestamps the status constraints require.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "signaldash.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402

from experiments.models import Experiment, Variant  # noqa: E402
from tracking.models import ServiceAPIKey  # noqa: E402


def main() -> None:
    owner = get_user_model().objects.create_user(username="bench-owner", password=None)
    experiment = Experiment.objects.create(
        name="Ingest bench", slug="bench", hypothesis="Ingest is fast.", owner=owner, primary_metric="purchase"
    )
    control = Variant.objects.create(experiment=experiment, key="control", name="Control", is_control=True)
    treatment = Variant.objects.create(experiment=experiment, key="treatment", name="Treatment")
    Experiment.objects.filter(pk=experiment.pk).update(started_at=timezone.now())
    with connection.cursor() as cursor:
        table = connection.ops.quote_name(Experiment._meta.db_table)
        cursor.execute(f"UPDATE {table} SET status = %s WHERE id = %s", ["running", experiment.pk])
    _, key = ServiceAPIKey.objects.create_key(name="bench")
    print(
        json.dumps(
            {
                "key": key,
                "experiment_id": experiment.pk,
                "variant_ids": {"control": control.pk, "treatment": treatment.pk},
            }
        )
    )


if __name__ == "__main__":
    main()
