"""Race: 8 concurrent HTTP clients send overlapping, differently-ordered copies of the same 2,000 events.

Real concurrency: a threaded live server (one thread and one database connection per client
connection) and 8 client threads with their own HTTP connections, released together by a barrier.
Runs on both databases (the PostgreSQL pass is where deadlocks would show up).
"""

from __future__ import annotations

import random
import threading
from collections import Counter

import httpx
import pytest
from django.db.models import Exists, OuterRef

from tracking.models import Assignment, Event, VariantConflict

pytestmark = pytest.mark.django_db(transaction=True)

CLIENTS = 8
USERS = 1000  # × (exposure + conversion) = 2,000 distinct events
BATCH = 250
SINGLES_PER_CLIENT = 240
_LOCK = threading.Lock()


def _events() -> list[dict]:
    events = []
    for i in range(USERS):
        variant = "control" if i % 2 else "treatment"
        events.append({"experiment": "checkout", "variant": variant, "user_key": f"user-{i}", "event_type": "exposure"})
        events.append(
            {"experiment": "checkout", "variant": variant, "user_key": f"user-{i}", "event_type": "conversion"}
        )
    return events


def _client(base_url: str, key: str, seed: int, barrier: threading.Barrier, totals: Counter, failures: list) -> None:
    """Send every event in batches (own shuffled order), interleaved with single events from the far end."""
    order = _events()
    random.Random(seed).shuffle(order)
    singles = order[::-1][:SINGLES_PER_CLIENT]
    per_round = SINGLES_PER_CLIENT // (len(order) // BATCH)
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
            counts["duplicates"] += body["duplicates"]
            for single in singles[round_ * per_round : (round_ + 1) * per_round]:
                response = http.post("/api/track", json=single)
                if response.status_code not in (200, 201):
                    failures.append(("single", response.status_code, response.text[:300]))
                counts["stored" if response.status_code == 201 else "duplicates"] += 1
                counts["singles"] += 1
    with _LOCK:
        totals.update(counts)


def test_race__8_clients_overlapping_single_and_batch__exactly_2000_stored_no_failures(
    live_server, experiment, api_key
):
    # Given 8 clients, each holding all 2,000 events in its own order
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
    # Then no request failed, every event is stored exactly once, and exactly 2,000 were reported stored
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    assert totals["singles"] == CLIENTS * SINGLES_PER_CLIENT
    assert Event.objects.count() == 2 * USERS
    assert totals["stored"] == 2 * USERS
    assert totals["stored"] + totals["duplicates"] == CLIENTS * 2 * USERS + totals["singles"]
    assert Assignment.objects.count() == USERS
    assert not VariantConflict.objects.exists()
    same_variant = Assignment.objects.filter(
        experiment=OuterRef("experiment"), user_key=OuterRef("user_key"), variant=OuterRef("variant")
    )
    assert not Event.objects.filter(~Exists(same_variant)).exists()
