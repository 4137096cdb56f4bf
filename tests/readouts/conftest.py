"""Readout fixtures: experiments with variants, and events written with bulk_create."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def owner(make_user):
    return make_user("owner")


@pytest.fixture
def make_experiment(owner):
    from experiments.models import Experiment, Variant

    def _make(
        slug="checkout", *, name=None, variants=(("control", True, 1), ("treatment", False, 1)), metric="purchase"
    ):
        exp = Experiment.objects.create(name=name or slug.title(), slug=slug, owner=owner, primary_metric=metric)
        for key, is_control, weight in variants:
            Variant.objects.create(experiment=exp, key=key, name=key.title(), is_control=is_control, weight=weight)
        return exp

    return _make


@pytest.fixture
def add_events():
    """add_events(exp, variant_key, exposures=n, conversions=k, metric=..., prefix=...): k of n users convert."""
    from tracking.models import Event

    def _add(exp, variant_key, *, exposures, conversions=0, metric=None, prefix=None, start=T0, convert_after=60):
        variant = exp.variants.get(key=variant_key)
        metric = metric or exp.primary_metric
        prefix = prefix or f"{variant_key}-u"
        events = []
        for i in range(exposures):
            at = start + timedelta(minutes=i)
            events.append(
                Event(experiment=exp, variant=variant, user_key=f"{prefix}{i}", event_type="exposure", occurred_at=at)
            )
            if i < conversions:
                events.append(
                    Event(
                        experiment=exp,
                        variant=variant,
                        user_key=f"{prefix}{i}",
                        event_type="conversion",
                        metric=metric,
                        occurred_at=at + timedelta(seconds=convert_after),
                    )
                )
        Event.objects.bulk_create(events, batch_size=2000)

    return _add
