"""Database router: readout sums are read from a streaming replica when one is configured and answering.

`DATABASE_REPLICA_URL` adds the database alias `replica` (settings.py). Only reads of the readout rollups
(`readouts.Rollup`, a few hundred rows per readout) go there; every write, the catch-up that keeps the
rollups current, and every other read stay on the primary (`default`). A replica that fails is skipped
for `REPLICA_RETRY_S` seconds (this process), so a replica that is down costs one failed attempt per
worker per period, not one per request; reads then come from the primary.
"""

from __future__ import annotations

import threading
import time

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

REPLICA = "replica"
REPLICA_RETRY_S = 30.0
REPLICA_MODELS = frozenset({"readouts.Rollup"})

_lock = threading.Lock()
_down_until: dict[str, float] = {}


def replica_failed(alias: str = REPLICA) -> None:
    """Mark the replica unusable for REPLICA_RETRY_S seconds and drop its broken connection."""
    with _lock:
        _down_until[alias] = time.monotonic() + REPLICA_RETRY_S
    try:
        connections[alias].close()
    except Exception:  # noqa: BLE001, S110 - a broken connection may fail to close; it is discarded either way
        pass


def replica_available(alias: str = REPLICA) -> bool:
    if alias not in settings.DATABASES:
        return False
    with _lock:
        return time.monotonic() >= _down_until.get(alias, 0.0)


class ReadoutReplicaRouter:
    """Rollup reads → `replica` (when configured and not marked down); everything else → `default`."""

    def db_for_read(self, model, **hints):
        # getattr: Django's database cache routes a stand-in class whose _meta has no `label`.
        if getattr(model._meta, "label", None) in REPLICA_MODELS and replica_available():
            return REPLICA
        return None

    def db_for_write(self, model, **hints):
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1, obj2, **hints):
        return True  # one database, two copies

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == DEFAULT_DB_ALIAS  # the replica follows the primary's schema by streaming
