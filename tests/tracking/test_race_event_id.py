"""Race: repeat conversions with event_id are stored once each under concurrent, reordered retries.

8 HTTP clients against a threaded live server send overlapping, differently ordered copies of the same
events: per user an exposure with an event_id and covariates, three purchases (event_ids, a mean metric
with values), one id-less signup conversion, and for every fourth user an exposure retried under a new
event_id (still one exposure per user; same covariates, since whichever lands first wins). Exactly the
expected rows must exist afterwards, with every response a 2xx and no rejected item. Runs on both
databases; the PostgreSQL pass is the one that would show a deadlock or a lost/doubled row between the
two partial unique indexes.
"""

from __future__ import annotations

import random
import threading
from collections import Counter

import httpx
import pytest

from experiments.models import ExperimentMetric
from tracking.models import Assignment, Covariate, Event, VariantConflict

pytestmark = pytest.mark.django_db(transaction=True)

CLIENTS = 8
USERS = 300
PURCHASES = 3
BATCH = 200
SINGLES_PER_CLIENT = 100
_LOCK = threading.Lock()


def _events() -> list[dict]:
    events = []
    for i in range(USERS):
        base = {"experiment": "checkout", "variant": "control" if i % 2 else "treatment", "user_key": f"user-{i}"}
        events.append({**base, "event_type": "exposure", "event_id": f"x-{i}", "covariates": {"revenue": i}})
        if i % 4 == 0:
            events.append({**base, "event_type": "exposure", "event_id": f"x-{i}-again", "covariates": {"revenue": i}})
        for k in range(PURCHASES):
            events.append(
                {**base, "event_type": "conversion", "metric": "revenue", "value": i + k, "event_id": f"o-{i}-{k}"}
            )
        events.append({**base, "event_type": "conversion", "metric": "signup"})
    return events


def _client(base_url: str, key: str, seed: int, barrier: threading.Barrier, totals: Counter, failures: list) -> None:
    order = _events()
    random.Random(seed).shuffle(order)
    singles = order[::-1][:SINGLES_PER_CLIENT]
    rounds = -(-len(order) // BATCH)
    per_round = -(-SINGLES_PER_CLIENT // rounds)
    counts: Counter = Counter()
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as http:
        barrier.wait()
        for round_, start in enumerate(range(0, len(order), BATCH)):
            response = http.post("/api/track/batch", json={"events": order[start : start + BATCH]})
            body = response.json() if response.status_code == 200 else None
            if body is None or body["rejected"]:
                failures.append(("batch", response.status_code, response.text[:300]))
                continue
            counts["stored"] += body["accepted"]
            for single in singles[round_ * per_round : (round_ + 1) * per_round]:
                response = http.post("/api/track", json=single)
                if response.status_code not in (200, 201):
                    failures.append(("single", response.status_code, response.text[:300]))
                counts["stored"] += response.status_code == 201
    with _LOCK:
        totals.update(counts)


def test_race__8_clients_retrying_event_id_conversions__each_stored_exactly_once(live_server, experiment, api_key):
    # Given a plan with a mean metric, and 8 clients holding all events in their own order
    ExperimentMetric.objects.create(experiment=experiment, key="purchase", role="primary", kind="binary")
    ExperimentMetric.objects.create(experiment=experiment, key="revenue", role="secondary", kind="mean")
    ExperimentMetric.objects.create(experiment=experiment, key="signup", role="guardrail", kind="binary")
    barrier = threading.Barrier(CLIENTS)
    totals: Counter = Counter()
    failures: list = []
    threads = [
        threading.Thread(target=_client, args=(live_server.url, api_key[1], seed, barrier, totals, failures))
        for seed in range(CLIENTS)
    ]
    # When they all send at once, as batches and as single events
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    # Then nothing failed, and each user has 1 exposure, 3 purchases and 1 signup — no more, no less
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    expected = USERS * (1 + PURCHASES + 1)
    assert Event.objects.count() == expected
    assert totals["stored"] == expected
    per_kind = Counter(Event.objects.values_list("event_type", "metric"))
    assert per_kind == {
        ("exposure", ""): USERS,
        ("conversion", "revenue"): USERS * PURCHASES,
        ("conversion", "signup"): USERS,
    }
    assert Event.objects.filter(event_type="conversion", metric="revenue").values("event_id").distinct().count() == (
        USERS * PURCHASES
    )
    assert (
        not Event.objects.filter(event_id__endswith="-again").exists()
        or Event.objects.filter(event_type="exposure").count() == USERS
    )
    assert sum(Event.objects.filter(metric="revenue").values_list("value", flat=True)) == sum(
        i + k for i in range(USERS) for k in range(PURCHASES)
    )
    assert Assignment.objects.count() == USERS
    assert Covariate.objects.count() == USERS
    assert sorted(Covariate.objects.values_list("value", flat=True)) == [float(i) for i in range(USERS)]
    assert not VariantConflict.objects.exists()
