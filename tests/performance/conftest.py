"""Fixtures for the performance work: a running experiment and randomized event streams."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from tests.tracking.conftest import make_experiment

T0 = datetime(2026, 11, 1, 21, 0, tzinfo=UTC)  # near midnight: conversions fall on several UTC days
METRICS = ("purchase", "revenue")


@pytest.fixture
def owner(make_user):
    return make_user("owner")


@pytest.fixture
def running(owner):
    """A running experiment `checkout` (control/treatment, legacy plan: any metric, values optional)."""
    return make_experiment(owner)


def random_events(seed: int, *, users: int = 60, slug: str = "checkout") -> list:
    """A shuffled stream of EventIn: late, duplicate, out-of-order, event_id repeats, covariates, conflicts."""
    from tracking.services import EventIn

    rng = random.Random(seed)
    pool = [f"e{n}" for n in range(users)]  # event ids shared across users: repeats with other content
    stream: list[EventIn] = []
    for n in range(users):
        user, variant = f"u{n}", rng.choice(("control", "treatment"))
        exposed_at = T0 + timedelta(minutes=rng.randrange(0, 3 * 24 * 60))
        if rng.random() < 0.8:
            covariates = {m: round(rng.uniform(-50, 50), 3) for m in METRICS if rng.random() < 0.5}
            exposure = EventIn(slug, variant, user, "exposure", exposed_at, covariates=covariates)
            stream += [exposure] * rng.choice((1, 1, 2))  # repeats
            if rng.random() < 0.1:  # a later exposure naming another variant: conflict, first wins
                stream.append(EventIn(slug, "control" if variant == "treatment" else "treatment", user, "exposure",
                                      exposed_at + timedelta(hours=1)))  # fmt: skip
        for _ in range(rng.randrange(0, 5)):
            at = exposed_at + timedelta(minutes=rng.randrange(-600, 2 * 24 * 60))  # some before the exposure
            metric = rng.choice(METRICS)
            value = None if rng.random() < 0.2 else round(rng.uniform(0, 100), 2)
            event_id = rng.choice(pool) if rng.random() < 0.6 else None
            conversion = EventIn(slug, variant, user, "conversion", at, metric=metric, value=value, event_id=event_id)
            stream += [conversion] * rng.choice((1, 1, 1, 2))
    rng.shuffle(stream)
    return stream


def batches(stream: list, seed: int, largest: int = 12) -> list[list]:
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(stream):
        size = rng.randrange(1, largest + 1)
        out.append(stream[i : i + size])
        i += size
    return out
