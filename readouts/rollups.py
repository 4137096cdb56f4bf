"""Incremental readouts: the aggregate's rows (``queries.SumsRow``) kept up to date by a catch-up.

``readout_rows`` returns exactly what ``queries.readout_aggregate`` returns for an experiment (the same
non-zero increments per kind, variant, metric and UTC day; integers equal, floats equal up to rounding,
``FLOAT_TOLERANCE``), read from ``Rollup`` — a few hundred rows — instead of scanning the events.

**Catch-up** (``catch_up``), run first by every readout; idempotent, safe to run concurrently:

1. *Horizon.* One statement (``STATE_SQL``) reads the largest event and covariate ids, the watermark and
   the rollup rows; on PostgreSQL it takes the experiment row ``FOR NO KEY UPDATE`` (released at the end
   of the statement in autocommit). Every ingest transaction holds that row ``FOR SHARE`` before it
   inserts (``tracking.queries.experiments_with_variants(lock=True)``), so the statement returns only once every
   event id already handed out for this experiment is committed (or rolled back), and every later one is
   larger: below the horizon nothing can still appear. (A plain ``id > watermark`` would miss a
   transaction that took a lower id and committed after a higher one.) When the watermark covers the
   horizon, the rows are current and that one statement was the whole readout read. SQLite serialises
   writers.
2. *Apply.* One transaction locks the experiment's ``RollupWatermark`` row (``FOR UPDATE``: catch-ups of
   one experiment run one at a time; a second one finds the work done), finds the users with events or
   covariates in (watermark, horizon], recomputes each such user's whole contribution twice — from the
   events up to the old watermark and up to the horizon — with the aggregate's own rules
   (``user_contributions``), and adds the differences to the rollup rows with one upsert per chunk. So a
   late exposure turns earlier conversions into counted ones, an event_id repeat adds a conversion, and
   the first exposure wins (the database keeps one per user). Rows that fall back to zero are deleted.
3. A large backlog (first readout of a big experiment, ``FULL_RECOMPUTE_USERS`` users or more) is
   replaced by the full aggregate (``queries.READOUT_AGGREGATE_SQL``) run under the experiment row lock,
   which holds that experiment's ingest for the duration of the query (seconds at 10M events, once).

Ingest itself writes nothing here: no counter row is updated per request, so rollups never serialise
ingest (see the hot-row measurement in bench/).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from django.db import DEFAULT_DB_ALIAS, OperationalError, connections, router, transaction
from django.db.models import Q

from experiments.models import Experiment
from readouts import queries
from readouts.models import Rollup, RollupWatermark
from tracking.models import Covariate, Event

# More users than this to catch up: run the full aggregate instead (one query beats per-user work).
FULL_RECOMPUTE_USERS = 20_000
# Float sums agree with the aggregate's up to rounding: |a − b| ≤ FLOAT_TOLERANCE · max(1, |a|, |b|).
FLOAT_TOLERANCE = 1e-9
CHUNK = 500
NO_VARIANT = 0  # Rollup.variant_id of uncounted conversions (SumsRow.variant_id None)

FIELDS = ("users", "total", "total_sq", "products", "products_bin", "events", "late", "unexposed")
INT_FIELDS = ("users", "events", "late", "unexposed")
KEY_FIELDS = ("kind", "variant_id", "metric", "day")

ROLLUP_UPSERT_SQL = """
INSERT INTO {rollup} (experiment_id, kind, variant_id, metric, day, {fields}) VALUES {values}
ON CONFLICT (experiment_id, kind, variant_id, metric, day) DO UPDATE SET {increments}
"""
ROLLUP_PRUNE_SQL = """
DELETE FROM {rollup} WHERE experiment_id = %s AND users = 0 AND events = 0 AND late = 0 AND unexposed = 0
"""
# Horizon (largest event and covariate ids), watermark and, optionally, the rollup rows: one statement.
STATE_SQL = """
SELECT (SELECT MAX(id) FROM {event}) AS event_horizon, (SELECT MAX(id) FROM {covariate}) AS covariate_horizon,
       w.event_id, w.covariate_id{rows}
FROM {experiment} e
LEFT JOIN {watermark} w ON w.experiment_id = e.id{rows_join}
WHERE e.id = %(experiment_id)s{lock}
"""
STATE_ROWS_JOIN = " LEFT JOIN {rollup} r ON r.experiment_id = e.id"

Key = tuple[str, int, str, date]  # kind, variant_id (NO_VARIANT for none), metric, day


@dataclass(frozen=True, slots=True)
class UserEvent:
    id: int
    event_type: str
    metric: str
    value: float | None
    occurred_at: datetime
    variant_id: int


@dataclass(frozen=True, slots=True)
class UserCovariate:
    id: int
    metric: str
    value: float
    variant_id: int


@dataclass(frozen=True)
class Horizon:
    event_id: int
    covariate_id: int


@dataclass(frozen=True)
class State:
    horizon: Horizon
    event_id: int  # the watermark
    covariate_id: int
    rows: list[queries.SumsRow]

    @property
    def current(self) -> bool:
        return self.horizon.event_id <= self.event_id and self.horizon.covariate_id <= self.covariate_id


@dataclass(frozen=True)
class CatchUp:
    """What one catch-up did: ``mode`` is 'none', 'incremental' or 'full'."""

    mode: str
    users: int = 0
    rows_changed: int = 0
    horizon: Horizon | None = None


# --- the aggregate's rules for one user --------------------------------------------------------------
def _day(value: datetime) -> date:
    return value.astimezone(UTC).date()


def _vector() -> list:
    return [0, 0.0, 0.0, 0.0, 0.0, 0, 0, 0]  # FIELDS order


def _conversions(out: dict, exposure: UserEvent | None, metric: str, convs: list[UserEvent], x: float) -> None:
    days: dict[date, list] = {}
    for c in convs:
        day = _day(c.occurred_at)
        if exposure is None or exposure.occurred_at > c.occurred_at:
            out[("uncounted", NO_VARIANT, metric, day)][7 if exposure is None else 6] += 1
        else:
            acc = days.setdefault(day, [0.0, 0])
            acc[0] += c.value if c.value is not None else 0.0
            acc[1] += 1
    cum = 0.0
    for i, day in enumerate(sorted(days)):
        total, events = days[day]
        cum += total
        v = out[("conversion", exposure.variant_id, metric, day)]
        v[0] += 1 if i == 0 else 0
        v[1] += total
        v[2] += cum * cum - (cum - total) * (cum - total)
        v[3] += total * x
        v[4] += x if i == 0 else 0.0
        v[5] += events


def user_contributions(events: Iterable[UserEvent], covariates: Iterable[UserCovariate]) -> dict[Key, list]:
    """One user's increments per key, exactly as ``READOUT_AGGREGATE_SQL`` counts them.

    ``events`` are the user's events in id order (at most one exposure: ``event_dedup``), ``covariates``
    theirs (at most one per metric).
    """
    out: dict[Key, list] = defaultdict(_vector)
    events, covariates = list(events), list(covariates)
    exposure = next((e for e in events if e.event_type == Event.EventType.EXPOSURE), None)
    if exposure is not None:
        exposure_day = _day(exposure.occurred_at)
        out[("exposure", exposure.variant_id, "", exposure_day)][0] += 1
        for k in covariates:
            v = out[("covariate", k.variant_id, k.metric, exposure_day)]
            v[0] += 1
            v[1] += k.value
            v[2] += k.value * k.value
    by_metric: dict[str, list[UserEvent]] = defaultdict(list)
    for e in events:
        if e.event_type == Event.EventType.CONVERSION:
            by_metric[e.metric].append(e)
    x_of = {k.metric: k.value for k in covariates}
    for metric, convs in by_metric.items():
        _conversions(out, exposure, metric, convs, x_of.get(metric, 0.0))
    return out


def _add(into: dict[Key, list], contributions: dict[Key, list], sign: int) -> None:
    for key, vec in contributions.items():
        acc = into.setdefault(key, _vector())
        for i, value in enumerate(vec):
            acc[i] += sign * value


# --- reading what changed ------------------------------------------------------------------------------
def _chunks(items: Sequence, size: int = CHUNK) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _state_sql(conn, *, lock: bool, with_rows: bool) -> str:
    qn = conn.ops.quote_name
    rows = ", ".join(f"r.{qn(f)}" for f in (*KEY_FIELDS, *FIELDS)) if with_rows else ""
    return STATE_SQL.format(
        event=qn(Event._meta.db_table),
        covariate=qn(Covariate._meta.db_table),
        experiment=qn(Experiment._meta.db_table),
        watermark=qn(RollupWatermark._meta.db_table),
        rows=", " + rows if with_rows else "",
        rows_join=STATE_ROWS_JOIN.format(rollup=qn(Rollup._meta.db_table)) if with_rows else "",
        lock=" FOR NO KEY UPDATE OF e" if lock and conn.vendor == "postgresql" else "",
    )


def state(*, experiment_id: int, using: str = DEFAULT_DB_ALIAS, lock: bool = True, with_rows: bool = True) -> State:
    """Horizon, watermark and (``with_rows``) the rollup rows of an experiment, in one statement.

    ``lock`` (PostgreSQL): the statement takes the experiment row ``FOR NO KEY UPDATE`` (released at its
    end in autocommit), so it returns only once every ingest transaction holding the row has ended.
    """
    conn = connections[using]
    with conn.cursor() as cursor:
        cursor.execute(_state_sql(conn, lock=lock, with_rows=with_rows), {"experiment_id": experiment_id})
        fetched = cursor.fetchall()
    if not fetched:
        raise Experiment.DoesNotExist(experiment_id)
    head = fetched[0]
    rows = []
    if with_rows:
        for r in fetched:
            if r[4] is None:
                continue  # no rollup rows (LEFT JOIN)
            kind, variant, metric, day, *vec = r[4:]
            vec = [int(v) if f in INT_FIELDS else float(v) for f, v in zip(FIELDS, vec, strict=True)]
            rows.append(queries.SumsRow(kind, variant or None, metric, queries._day(day), *vec))
    return State(
        horizon=Horizon(int(head[0] or 0), int(head[1] or 0)),
        event_id=int(head[2] or 0),
        covariate_id=int(head[3] or 0),
        rows=rows,
    )


def _changed_users(using: str, experiment_id: int, wm: RollupWatermark, horizon: Horizon) -> tuple[set, set]:
    """Users with events or covariates in (watermark, horizon], and the metrics of those events."""
    rows = (
        Event.objects.using(using)
        .filter(id__gt=wm.event_id, id__lte=horizon.event_id, experiment_id=experiment_id)
        .values_list("user_key", "metric")
        .distinct()
    )
    users, metrics = set(), set()
    for user_key, metric in rows.iterator(chunk_size=5000):
        users.add(user_key)
        metrics.add(metric)
    users.update(
        Covariate.objects.using(using)
        .filter(id__gt=wm.covariate_id, id__lte=horizon.covariate_id, experiment_id=experiment_id)
        .values_list("user_key", flat=True)
    )
    return users, metrics - {""}


def _user_rows(using: str, experiment_id: int, users: Sequence[str], metrics: set[str], horizon: Horizon):
    """The events and covariates (up to the horizon) of ``users``, grouped by user, in id order."""
    events: dict[str, list[UserEvent]] = defaultdict(list)
    covariates: dict[str, list[UserCovariate]] = defaultdict(list)
    # (type, metric) spelled out so PostgreSQL walks event_readout_idx (experiment, type, metric, user).
    kinds = Q(event_type=Event.EventType.EXPOSURE, metric="") | Q(
        event_type=Event.EventType.CONVERSION, metric__in=sorted(metrics)
    )
    for chunk in _chunks(users):
        for row in (
            Event.objects.using(using)
            .filter(kinds, experiment_id=experiment_id, user_key__in=chunk, id__lte=horizon.event_id)
            .order_by("id")
            .values_list("id", "user_key", "event_type", "metric", "value", "occurred_at", "variant_id")
        ):
            events[row[1]].append(UserEvent(row[0], row[2], row[3], row[4], row[5], row[6]))
        for pk, user_key, metric, value, variant_id in (
            Covariate.objects.using(using)
            .filter(experiment_id=experiment_id, user_key__in=chunk, id__lte=horizon.covariate_id)
            .values_list("id", "user_key", "metric", "value", "variant_id")
        ):
            covariates[user_key].append(UserCovariate(pk, metric, value, variant_id))
    return events, covariates


# --- writing -----------------------------------------------------------------------------------------
def _upsert(using: str, experiment_id: int, deltas: dict[Key, list]) -> None:
    conn = connections[using]
    qn = conn.ops.quote_name
    table = qn(Rollup._meta.db_table)
    fields = ", ".join(qn(f) for f in FIELDS)
    increments = ", ".join(f"{qn(f)} = {table}.{qn(f)} + excluded.{qn(f)}" for f in FIELDS)
    items = sorted(deltas.items())  # one lock order for every writer
    with conn.cursor() as cursor:
        for chunk in _chunks(items):
            values = ", ".join(["(" + ", ".join(["%s"] * (5 + len(FIELDS))) + ")"] * len(chunk))
            params = [
                p
                for (kind, variant, metric, day), vec in chunk
                for p in (experiment_id, kind, variant, metric, day, *vec)
            ]
            sql = ROLLUP_UPSERT_SQL.format(rollup=table, fields=fields, values=values, increments=increments)
            cursor.execute(sql, params)
        cursor.execute(ROLLUP_PRUNE_SQL.format(rollup=table), [experiment_id])


def _watermark(using: str, experiment_id: int) -> RollupWatermark:
    RollupWatermark.objects.using(using).bulk_create([RollupWatermark(experiment_id=experiment_id)],
                                                    ignore_conflicts=True)  # fmt: skip
    return RollupWatermark.objects.using(using).select_for_update().get(experiment_id=experiment_id)


def _save_watermark(using: str, wm: RollupWatermark, horizon: Horizon) -> None:
    wm.event_id = max(wm.event_id, horizon.event_id)
    wm.covariate_id = max(wm.covariate_id, horizon.covariate_id)
    wm.save(using=using, update_fields=["event_id", "covariate_id", "updated_at"])


def _incremental(using: str, experiment_id: int, wm: RollupWatermark, horizon: Horizon, users: set[str],
                 metrics: set[str]) -> CatchUp:  # fmt: skip
    metrics = metrics | set(
        Rollup.objects.using(using)
        .filter(experiment_id=experiment_id, kind__in=["conversion", "uncounted"])
        .values_list("metric", flat=True)
        .distinct()
    )
    events, covariates = _user_rows(using, experiment_id, sorted(users), metrics, horizon)
    deltas: dict[Key, list] = {}
    for user_key in users:
        evs, covs = events.get(user_key, []), covariates.get(user_key, [])
        old = user_contributions([e for e in evs if e.id <= wm.event_id], [k for k in covs if k.id <= wm.covariate_id])
        _add(deltas, old, -1)
        _add(deltas, user_contributions(evs, covs), +1)
    deltas = {key: vec for key, vec in deltas.items() if any(vec)}
    _upsert(using, experiment_id, deltas)
    _save_watermark(using, wm, horizon)
    return CatchUp("incremental", users=len(users), rows_changed=len(deltas), horizon=horizon)


def recompute(*, experiment_id: int, using: str = DEFAULT_DB_ALIAS) -> CatchUp:
    """Rebuild an experiment's rollups from the full aggregate (``queries.READOUT_AGGREGATE_SQL``).

    Runs under the experiment row lock (PostgreSQL), so no event of the experiment commits meanwhile
    and the watermark set afterwards is exact. Ingest of that experiment waits for the query.
    """
    with transaction.atomic(using=using):
        horizon = state(experiment_id=experiment_id, using=using, with_rows=False).horizon  # lock held here
        wm = _watermark(using, experiment_id)
        rows = queries.readout_aggregate(queries.readout_aggregate_query(experiment_id=experiment_id))
        Rollup.objects.using(using).filter(experiment_id=experiment_id).delete()
        Rollup.objects.using(using).bulk_create(
            [
                Rollup(
                    experiment_id=experiment_id,
                    kind=r.kind,
                    variant_id=r.variant_id or NO_VARIANT,
                    metric=r.metric,
                    day=r.day,
                    **{f: getattr(r, f) for f in FIELDS},
                )  # fmt: skip
                for r in rows
                if any(getattr(r, f) for f in INT_FIELDS)
            ],
            batch_size=CHUNK,
        )
        wm.event_id, wm.covariate_id = horizon.event_id, horizon.covariate_id
        wm.save(using=using, update_fields=["event_id", "covariate_id", "updated_at"])
    return CatchUp("full", rows_changed=len(rows), horizon=horizon)


def catch_up(*, experiment_id: int, using: str = DEFAULT_DB_ALIAS, known: State | None = None) -> CatchUp:
    """Bring an experiment's rollups up to every committed event (see the module docstring).

    ``known``: a ``state`` just read with the lock (its horizon is used instead of reading it again).
    """
    known = known or state(experiment_id=experiment_id, using=using, with_rows=False)
    if known.current:
        return CatchUp("none", horizon=known.horizon)
    horizon = known.horizon
    with transaction.atomic(using=using):
        wm = _watermark(using, experiment_id)
        if horizon.event_id <= wm.event_id and horizon.covariate_id <= wm.covariate_id:
            return CatchUp("none", horizon=horizon)  # a concurrent catch-up did it
        users, metrics = _changed_users(using, experiment_id, wm, horizon)
        if len(users) < FULL_RECOMPUTE_USERS:
            return _incremental(using, experiment_id, wm, horizon, users, metrics)
    return recompute(experiment_id=experiment_id, using=using)


# --- reading -----------------------------------------------------------------------------------------
def _rows(alias: str, experiment_id: int) -> list[queries.SumsRow]:
    return [
        queries.SumsRow(
            kind=kind, variant_id=variant or None, metric=metric, day=day, **dict(zip(FIELDS, vec, strict=True))
        )
        for kind, variant, metric, day, *vec in Rollup.objects.using(alias)
        .filter(experiment_id=experiment_id)
        .order_by(*KEY_FIELDS)
        .values_list(*KEY_FIELDS, *FIELDS)
    ]


def _from_replica(alias: str, experiment_id: int) -> list[queries.SumsRow] | None:
    """The rows from the replica when it has caught up with the primary's horizon; None otherwise."""
    from signaldash.routers import replica_failed  # noqa: PLC0415 - the router is only used with a replica

    try:
        replica = state(experiment_id=experiment_id, using=alias, lock=False)
    except OperationalError:
        replica_failed(alias)
        return None
    primary = state(experiment_id=experiment_id, with_rows=False)
    if replica.event_id >= primary.horizon.event_id and replica.covariate_id >= primary.horizon.covariate_id:
        return replica.rows
    catch_up(experiment_id=experiment_id, known=primary)
    return None


def readout_rows(*, experiment_id: int) -> list[queries.SumsRow]:
    """The readout aggregate's rows (``queries.SumsRow``), from the rollups, caught up first.

    Usually one statement: horizon, watermark and rows together, on the primary. With a replica
    (``DATABASE_REPLICA_URL``, ``signaldash.routers``) the rows are read there whenever the replica's
    watermark covers the primary's horizon; otherwise (lag, a catch-up to do, a replica that is down)
    the primary serves them.
    """
    alias = router.db_for_read(Rollup)
    if alias != DEFAULT_DB_ALIAS and not connections[DEFAULT_DB_ALIAS].in_atomic_block:
        rows = _from_replica(alias, experiment_id)
        if rows is not None:
            return rows
    now = state(experiment_id=experiment_id)
    if now.current:
        return now.rows
    catch_up(experiment_id=experiment_id, known=now)
    return _rows(DEFAULT_DB_ALIAS, experiment_id)


# --- comparison (tests, `recompute_readouts --verify`) ------------------------------------------------
def _keyed(rows: Iterable[queries.SumsRow]) -> dict[tuple, list]:
    out: dict[tuple, list] = {}
    for r in rows:
        if not any(getattr(r, f) for f in INT_FIELDS):
            continue  # a zero increment is no row
        acc = out.setdefault((r.kind, r.variant_id or None, r.metric, r.day), _vector())
        for i, f in enumerate(FIELDS):
            acc[i] += getattr(r, f)
    return out


def _float_equal(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=FLOAT_TOLERANCE, abs_tol=FLOAT_TOLERANCE)


def rows_differences(expected: Iterable[queries.SumsRow], actual: Iterable[queries.SumsRow]) -> list[str]:
    """Where two row sets differ: integers exactly, floats beyond ``FLOAT_TOLERANCE``; [] when equal."""
    a, b = _keyed(expected), _keyed(actual)
    out = []
    for key in sorted(set(a) | set(b), key=repr):
        va, vb = a.get(key), b.get(key)
        if va is None or vb is None:
            out.append(f"{key}: {'missing' if vb is None else 'unexpected'} {va or vb}")
            continue
        for i, f in enumerate(FIELDS):
            same = va[i] == vb[i] if f in INT_FIELDS else _float_equal(va[i], vb[i])
            if not same:
                out.append(f"{key} {f}: expected {va[i]!r}, got {vb[i]!r}")
    return out
