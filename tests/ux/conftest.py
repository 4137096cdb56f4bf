"""UX fixtures: small experiments with events written directly (bulk_create), on one or several days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def ux_owner(make_user):
    return make_user("ux-owner", groups=("ops",), is_staff=True)


@pytest.fixture
def ux_experiment(ux_owner):
    """ux_experiment(slug, variants=((key, is_control, weight), ...), metrics=((key, role, kind, direction), ...))."""
    from experiments.models import Experiment, ExperimentMetric, Variant

    def _make(
        slug="ux-exp", *, variants=(("control", True, 1), ("treatment", False, 1)), metrics=(), metric="purchase"
    ):
        exp = Experiment.objects.create(name=slug.title(), slug=slug, owner=ux_owner, primary_metric=metric)
        for key, is_control, weight in variants:
            Variant.objects.create(experiment=exp, key=key, name=key.title(), is_control=is_control, weight=weight)
        for key, role, kind, direction in metrics:
            ExperimentMetric.objects.create(experiment=exp, key=key, role=role, kind=kind, direction=direction)
        return exp

    return _make


@pytest.fixture
def ux_events():
    """ux_events(exp, variant, users=n, converted=k, metric=..., days=1, value=None): k of n users convert.

    Users are spread evenly over ``days`` UTC days starting at T0; converters convert a minute after exposure.
    """
    from tracking.models import Event

    def _add(exp, variant_key, *, users, converted=0, metric=None, days=1, value=None, start=T0):
        variant = exp.variants.get(key=variant_key)
        metric = metric or exp.primary_metric
        events = []
        for i in range(users):
            at = start + timedelta(days=i % days, minutes=i % 600)
            user = f"{variant_key}-u{i}"
            events.append(Event(experiment=exp, variant=variant, user_key=user, event_type="exposure", occurred_at=at))
            if i < converted:
                events.append(
                    Event(
                        experiment=exp,
                        variant=variant,
                        user_key=user,
                        event_type="conversion",
                        metric=metric,
                        value=value(i) if callable(value) else value,
                        occurred_at=at + timedelta(minutes=1),
                    )
                )
        Event.objects.bulk_create(events, batch_size=2000)

    return _add
