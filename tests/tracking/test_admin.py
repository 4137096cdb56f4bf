"""Events and assignments are visible in the admin but cannot be added, edited or deleted there."""

from __future__ import annotations

import pytest
from django.utils import timezone

from experiments.models import Experiment, Variant
from tracking.models import Assignment, Event

pytestmark = pytest.mark.django_db


@pytest.fixture
def recorded(make_user):
    owner = make_user("owner-admin")
    experiment = Experiment.objects.create(name="E", slug="e-admin", owner=owner)
    variant = Variant.objects.create(experiment=experiment, key="control", name="C", is_control=True)
    event = Event.objects.create(
        experiment=experiment, variant=variant, user_key="u1", event_type="exposure", occurred_at=timezone.now()
    )
    assignment = Assignment.objects.create(experiment=experiment, user_key="u1", variant=variant, source="upstream")
    return event, assignment


@pytest.mark.parametrize("model", ["event", "assignment"])
def test_tracking_admin__superuser__can_view_but_not_add_change_or_delete(client, make_user, recorded, model):
    # Given a superuser and a recorded event and assignment
    client.force_login(make_user("root-admin", is_superuser=True))
    obj = recorded[0] if model == "event" else recorded[1]
    base = f"/admin/tracking/{model}/"
    # Then the list and the detail are visible
    assert client.get(base).status_code == 200
    detail = client.get(f"{base}{obj.pk}/change/")
    assert detail.status_code == 200 and 'name="_save"' not in detail.content.decode()
    # And adding, editing and deleting are refused
    assert client.get(f"{base}add/").status_code == 403
    assert client.post(f"{base}{obj.pk}/change/", {"user_key": "rewritten"}).status_code == 403
    assert client.post(f"{base}{obj.pk}/delete/", {"post": "yes"}).status_code == 403
    assert type(obj).objects.filter(pk=obj.pk, user_key="u1").exists()
