"""GET /api/experiments/<slug>/readout/timeseries: cumulative lift per UTC day, fixed and always-valid."""

from __future__ import annotations

from datetime import timedelta

import pytest

from readouts.exports import readout_as_json
from readouts.selectors import readout_get, readout_timeseries
from tests.readouts.conftest import T0

pytestmark = pytest.mark.django_db


def _copy_until(source, target, day) -> None:
    """The events of ``source`` that happened on or before ``day``, into ``target`` (same variant keys)."""
    from tracking.models import Event

    variants = {v.key: v for v in target.variants.all()}
    Event.objects.bulk_create(
        [
            Event(
                experiment=target,
                variant=variants[e.variant.key],
                user_key=e.user_key,
                event_type=e.event_type,
                metric=e.metric,
                occurred_at=e.occurred_at,
            )
            for e in Event.objects.filter(experiment=source).select_related("variant")
            if e.occurred_at.date() <= day
        ]
    )


def test_timeseries__three_days__each_point_equals_the_readout_of_the_data_so_far(make_experiment, add_events):
    # Given events over three days (exposures one per minute from T0: 1,440 a day)
    exp = make_experiment()
    add_events(exp, "control", exposures=3000, conversions=300)
    add_events(exp, "treatment", exposures=3000, conversions=420)
    # When
    series = readout_timeseries(readout=readout_get(experiment=exp))
    # Then one point per day, and each equals the readout of a copy holding only the events until that day
    [treatment] = series["treatments"]
    assert series["days"] == [(T0 + timedelta(days=i)).date().isoformat() for i in range(3)]
    for i, point in enumerate(treatment["points"]):
        copy = make_experiment(f"copy-{i}")
        _copy_until(exp, copy, (T0 + timedelta(days=i)).date())
        want = readout_as_json(readout_get(experiment=copy))["comparisons"][0]
        assert point["rel_lift"] == pytest.approx(want["rel_lift"])
        assert point["rel_lift_ci"] == pytest.approx(want["rel_lift_ci"])
        assert point["sequential"]["rel_lift_ci"] == pytest.approx(want["sequential"]["rel_lift_ci"])
    # and the always-valid interval is wider than the fixed-horizon one
    last = treatment["points"][-1]
    assert last["sequential"]["rel_lift_ci"][0] < last["rel_lift_ci"][0] < last["rel_lift_ci"][1]


def test_timeseries_api__session__documented_fields(client, make_user, make_experiment, add_events):
    # Given
    exp = make_experiment()
    add_events(exp, "control", exposures=300, conversions=30)
    add_events(exp, "treatment", exposures=300, conversions=45)
    client.force_login(make_user("viewer", groups=("reviewer",)))
    # When
    response = client.get(f"/api/experiments/{exp.slug}/readout/timeseries?metric=purchase")
    bad = client.get(f"/api/experiments/{exp.slug}/readout/timeseries?metric=purchase%0A")
    # Then
    assert response.status_code == 200 and response["Cache-Control"].startswith("private")
    body = response.json()
    assert body["metric"] == "purchase" and body["metric_kind"] == "binary" and body["alpha"] == 0.05
    assert set(body["treatments"][0]["points"][0]) == {"day", "rel_lift", "rel_lift_ci", "sequential", "n"}
    assert bad.status_code == 400
