"""Users left out of an internal readout: those exposed to more than one variant (the ``multiple_exposures`` check).

Tracking keeps one exposure per user (the first; ``event_dedup``) and rejects a later exposure under another
variant as a variant conflict, so such a user would otherwise count in their first variant. A warehouse
readout leaves them out of every metric (GrowthBook's ``__multiple__``); the internal readout does the same:

- the rollups' rows minus these users' contributions, computed with the rollups' own per-user rules
  (``rollups.user_contributions``: the rows are sums of per-user contributions, so subtracting is exact);
- the rule metrics (``catalog_metrics``) computed without them.

Both cost nothing when no user has an exposure conflict: the users come with the conflict count, in the statement
the readout runs anyway.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from readouts import queries, rollups
from tracking.models import Covariate, Event, VariantConflict


def conflicts_and_multiple_exposures(*, experiment_id: int) -> tuple[int, frozenset[str], queries.BoundQuery]:
    """(variant conflicts, users with a stored exposure and an exposure rejected under another variant, the query):
    one statement, the one the readout ran for the conflict count alone."""
    query = queries.readout_conflicts_query(model=VariantConflict, experiment_id=experiment_id)
    conflicts, users = queries.readout_conflicts(query)
    return conflicts, users, query


def _contributions(experiment_id: int, users: frozenset[str]) -> dict:
    events: dict[str, list] = defaultdict(list)
    covariates: dict[str, list] = defaultdict(list)
    for chunk in rollups._chunks(sorted(users)):
        for pk, user, event_type, metric, value, at, variant in (
            Event.objects.filter(experiment_id=experiment_id, user_key__in=chunk)
            .order_by("id")
            .values_list("id", "user_key", "event_type", "metric", "value", "occurred_at", "variant_id")
        ):
            events[user].append(rollups.UserEvent(pk, event_type, metric, value, at, variant))
        for pk, user, metric, value, variant in Covariate.objects.filter(
            experiment_id=experiment_id, user_key__in=chunk
        ).values_list("id", "user_key", "metric", "value", "variant_id"):
            covariates[user].append(rollups.UserCovariate(pk, metric, value, variant))
    total: dict = {}
    for user in users:
        rollups._add(total, rollups.user_contributions(events.get(user, []), covariates.get(user, [])), +1)
    return total


def rows_without_users(
    rows: Iterable[queries.SumsRow], *, experiment_id: int, users: frozenset[str]
) -> list[queries.SumsRow]:
    """The aggregate's rows as if ``users`` had no events (rows that fall to no user and no event are dropped)."""
    rows = list(rows)
    if not users:
        return rows
    minus = _contributions(experiment_id, users)
    out = []
    for r in rows:
        vec = minus.pop((r.kind, r.variant_id or rollups.NO_VARIANT, r.metric, r.day), None)
        if vec is not None:
            values = [getattr(r, f) - v for f, v in zip(rollups.FIELDS, vec, strict=True)]
            r = queries.SumsRow(r.kind, r.variant_id, r.metric, r.day, *values)
        if any(getattr(r, f) for f in rollups.INT_FIELDS):
            out.append(r)
    return out
