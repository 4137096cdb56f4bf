"""Incremental per-user rollups of catalog rule metrics (windows, delays, filters, caps, count, ratio, funnel).

``catalog_metrics.compute`` (the reference) rebuilds every exposed user's value from all events on every
readout. This module keeps the same results (``catalog_metrics.Computed``) in tables that a readout only
sums, maintained by a catch-up like ``readouts.rollups``'s:

- **Keyed by the frozen rules.** Every table is keyed (experiment, ``fingerprint(definition)``): the SHA-256
  of the definition's rules (not its key, name or direction). A readout uses the definitions frozen at
  approval; an edited catalog metric has another fingerprint, so its rollups start from scratch and the
  values of two versions never mix.
- **The per-user rule is ``readouts.metric_values``** (the one Python definition, also the reference's):
  the catch-up finds the users with events in (watermark, horizon], reads each such user's exposure and
  conversions, and computes their contribution twice — from the events up to the old watermark and up to
  the horizon — so a late exposure turns earlier conversions into counted ones, and ``event_dedup``
  (one exposure per user, each ``event_id`` once) is the database's.
- **What is stored** depends on the definition:
  - binary, mean without a percentile cap (absolute caps are per user), a funnel's steps, a ratio's
    numerator without a percentile cap: ``MetricRollup`` rows per (series, variant, UTC day), the
    ``SumsRow`` conversion increments, updated by deltas (new minus old contribution);
  - a ratio without a percentile-capped part: ``MetricRatioRollup`` per variant (Σm, Σm², Σd, Σd², Σm·d),
    by deltas; n is the variant's exposures;
  - a percentile cap (a mean, or a ratio's part): the quantile is over every exposed user's value, so it
    changes with any user. ``MetricUserValue`` keeps each user's uncapped value(s) (users at 0 have no row)
    and ``MetricUserDay`` their uncapped daily accrual; the readout takes the quantile by two ordered index
    reads (numpy's linear interpolation, the zeros counted from the exposures) and then one GROUP BY.
- **Catch-up** (``catch_up``): the horizon is ``rollups.state``'s (it waits for every ingest transaction
  of the experiment on PostgreSQL); one transaction locks the definitions' watermark rows (``FOR UPDATE``),
  so catch-ups of one experiment take turns and a second one finds the work done. A definition without
  rollups yet (new plan, approval, edit) is built from all of the experiment's events once.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import Count, Q
from django.utils import timezone

from readouts import catalog_metrics, queries, rollups, stats
from readouts.definitions import MetricDefinition
from readouts.metric_values import Conversion, Exposure, UserValue, _capped, _raw_value, funnel_reached
from readouts.models import MetricRatioRollup, MetricRollup, MetricRollupWatermark, MetricUserDay, MetricUserValue
from tracking.models import Event

RULES_VERSION = 1  # part of every fingerprint: a change to the per-user rules rebuilds every rollup
CHUNK = 500  # users per read of an incremental catch-up, rows per upsert statement
FLUSH_USERS = 5_000  # users per write batch
STREAM_USERS = 20_000  # more changed users than this: read the experiment's events in one ordered pass
SUMS_FIELDS = ("users", "total", "total_sq", "events")
# MetricRollup series of a percentile cap's counts (variant 0, COUNT_DAY): users = users ≠ 0, events = users < 0
VALUE_SERIES, DENOMINATOR_SERIES = -1, -2
COUNT_DAY = date(1970, 1, 1)
VALUE_COLUMNS = ("experiment_id", "definition", "user_key", "variant_id", "value", "denominator")
DAY_COLUMNS = ("experiment_id", "definition", "user_key", "variant_id", "day", "is_first", "cum_before", "cum_after",
               "events", "peak")  # fmt: skip
RATIO_FIELDS = ("users", "numerator_sum", "numerator_sum_squares", "denominator_sum", "denominator_sum_squares",
                "sum_products")  # fmt: skip

METRIC_ROLLUP_UPSERT_SQL = """
INSERT INTO {table} (experiment_id, definition, {keys}, {fields}) VALUES {values}
ON CONFLICT (experiment_id, definition, {keys}) DO UPDATE SET {increments}
"""
METRIC_ROLLUP_PRUNE_SQL = """
DELETE FROM {table} WHERE experiment_id = %s AND users = 0 AND events = 0
"""


# --- definitions -------------------------------------------------------------------------------------------
def _rules(data: dict) -> dict:
    out = {k: v for k, v in data.items() if k not in ("key", "name", "direction")}
    for k in ("window_hours", "delay_hours", "cap_value"):  # 72 and 72.0 are one rule
        if out.get(k) is not None:
            out[k] = float(out[k])
    for part in ("numerator", "denominator"):
        if isinstance(out.get(part), dict):
            out[part] = _rules(out[part])
    return out


def fingerprint(d: MetricDefinition) -> str:
    """SHA-256 of the definition's per-user rules (everything but key, name and direction)."""
    text = json.dumps({"v": RULES_VERSION, **_rules(d.to_dict())}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _percentile(p: MetricDefinition | None) -> bool:
    return p is not None and p.kind == "mean" and p.cap == "percentile"


def _absolute_cap(p: MetricDefinition) -> float | None:
    return float(p.cap_value) if p.kind == "mean" and p.cap == "absolute" else None


def rule_definitions(definitions: Iterable[MetricDefinition]) -> dict[str, MetricDefinition]:
    """The definitions these rollups serve (not rollup-shaped), by fingerprint."""
    return {fingerprint(d): d for d in definitions if not catalog_metrics.rollup_shaped(d)}


# --- one user's contribution (the rules: readouts.metric_values) -------------------------------------------
@dataclass
class Contribution:
    sums: dict[tuple[int, int, date], list] = field(default_factory=dict)  # (series, variant, day) → SUMS_FIELDS
    ratio: dict[int, list] = field(default_factory=dict)  # variant → RATIO_FIELDS
    value: tuple[float, float] | None = None  # MetricUserValue (value, denominator); None: no row
    days: list[tuple] = field(default_factory=list)  # MetricUserDay (day, is_first, cum_before, cum_after, events)


def _series_sums(out: dict, series: int, variant: int, uv: UserValue) -> None:
    """The aggregate's conversion increments of one user (as ``catalog_metrics._rows`` adds them)."""
    cum = 0.0
    for i, day in enumerate(sorted(uv.by_day)):
        add, events = uv.by_day[day]
        v = out.setdefault((series, variant, day), [0, 0.0, 0.0, 0])
        v[0] += 1 if i == 0 else 0
        v[1] += add
        v[2] += (cum + add) ** 2 - cum**2
        v[3] += events
        cum += add


def _user_days(uv: UserValue) -> list[tuple]:
    out, raw = [], 0.0
    for i, day in enumerate(sorted(uv.by_day)):
        add, events = uv.by_day[day]
        before = raw
        raw += add  # the same accumulation as metric_values._capped
        out.append((day, i == 0, before, raw, events))
    return out


def _part_value(p: MetricDefinition, uv: UserValue) -> float:
    """A ratio part's per-user value with its absolute cap (a percentile cap is the readout's)."""
    cap = _absolute_cap(p)
    return uv.value if cap is None else min(uv.value, cap)


def _counts(out: Contribution, series: int, value: float) -> None:
    """The quantile's counts of one stored column (``COUNT_SERIES``): users ≠ 0 and users < 0."""
    if value:
        out.sums[(series, 0, COUNT_DAY)] = [1, 0.0, 0.0, 1 if value < 0 else 0]


def user_contribution(d: MetricDefinition, exposure: Exposure | None, convs: list[Conversion]) -> Contribution:
    """One user's part of a definition's rollups. ``convs``: the user's conversions in (time, id) order.

    Percentile-capped values are stored uncapped (rows, sums and the user's own rows); the readout applies
    the cap to the users above it only."""
    out = Contribution()
    if exposure is None:
        return out
    variant = exposure.variant_id
    if d.kind == "funnel":
        for k, at in enumerate(funnel_reached(d, exposure.at, convs), start=1):
            out.sums[(k, variant, at.date())] = [1, 1.0, 1.0, 1]
        return out
    main = d.numerator if d.kind == "ratio" else d
    raw = _raw_value(main, exposure.at, convs)
    cap = _absolute_cap(main)
    _series_sums(out.sums, 0, variant, raw if cap is None else _capped(raw, cap))
    if _percentile(main):
        out.days = _user_days(raw)
    if d.kind == "ratio":
        m = _part_value(d.numerator, raw)
        dv = _part_value(d.denominator, _raw_value(d.denominator, exposure.at, convs))
        if m or dv:
            out.ratio[variant] = [1, m, m * m, dv, dv * dv, m * dv]
            if _percentile_storage(d):
                out.value = (m, dv)
                _counts(out, VALUE_SERIES, m)
                _counts(out, DENOMINATOR_SERIES, dv)
    elif _percentile(d) and raw.value:
        out.value = (raw.value, 0.0)
        _counts(out, VALUE_SERIES, raw.value)
    return out


# --- reading the events ------------------------------------------------------------------------------------
@dataclass
class _UserEvents:
    exposure: tuple[int, Exposure] | None = None  # (event id, exposure)
    conversions: list[tuple[int, Conversion]] = field(default_factory=list)  # (event id, conversion), in order

    def upto(self, event_id: int) -> tuple[Exposure | None, list[Conversion]]:
        x = self.exposure[1] if self.exposure is not None and self.exposure[0] <= event_id else None
        return x, [c for pk, c in self.conversions if pk <= event_id]


def _kinds(events: list[str]) -> Q:
    return Q(event_type=Event.EventType.EXPOSURE, metric="") | Q(
        event_type=Event.EventType.CONVERSION, metric__in=events
    )


COLUMNS = ("id", "user_key", "event_type", "variant_id", "metric", "value", "occurred_at", "props")


def _grouped(rows: Iterable[tuple], *, props: bool) -> Iterator[tuple[str, _UserEvents]]:
    """Rows ordered by (user, time, id) → (user, their events). ``props`` False: no filter reads them (the
    last column is then not props and not decoded)."""
    current, acc = None, _UserEvents()
    for pk, user, event_type, variant_id, metric, value, at, extra in rows:
        if user != current:
            if current is not None:
                yield current, acc
            current, acc = user, _UserEvents()
        if event_type == Event.EventType.EXPOSURE:
            if acc.exposure is None:
                acc.exposure = (pk, Exposure(user, variant_id, at))
        else:
            acc.conversions.append((pk, Conversion(user, metric, value, at, (extra or {}) if props else {})))
    if current is not None:
        yield current, acc


def _changed_users(using: str, experiment_id: int, since: int, horizon: int) -> list[str]:
    """Users with any event in (since, horizon] (by the primary key range; the users whose events no stale
    definition reads add nothing)."""
    return sorted(
        Event.objects.using(using)
        .filter(experiment_id=experiment_id, id__gt=since, id__lte=horizon)
        .values_list("user_key", flat=True)
        .distinct()
    )


def _user_events(using: str, experiment_id: int, events: list[str], horizon: int, users: list[str] | None,
                 props: bool) -> Iterator[tuple[str, _UserEvents]]:  # fmt: skip
    """Each user's events up to the horizon (``users`` None: every user of the experiment, one ordered pass)."""
    base = Event.objects.using(using).filter(_kinds(events), experiment_id=experiment_id, id__lte=horizon)
    ordered = ("user_key", "occurred_at", "id")
    columns = COLUMNS if props else (*COLUMNS[:-1], "id")
    if users is None:
        rows = base.order_by(*ordered).values_list(*columns).iterator(chunk_size=10_000)
        yield from _grouped(rows, props=props)
        return
    for start in range(0, len(users), CHUNK):
        chunk = users[start : start + CHUNK]
        yield from _grouped(base.filter(user_key__in=chunk).order_by(*ordered).values_list(*columns), props=props)


def _filters(d: MetricDefinition) -> bool:
    parts = [p for p in (d.numerator, d.denominator) if p is not None]
    return bool(d.filter_prop) or any(_filters(p) for p in parts)


# --- writing -----------------------------------------------------------------------------------------------
@dataclass
class _Batch:
    """Deltas and per-user rows of a batch of users, for every stale definition."""

    sums: dict[tuple, list] = field(default_factory=dict)  # (definition, series, variant, day) → SUMS_FIELDS
    ratio: dict[tuple, list] = field(default_factory=dict)  # (definition, variant) → RATIO_FIELDS
    users: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # definition → users replaced
    values: list[tuple] = field(default_factory=list)  # VALUE_COLUMNS
    days: list[tuple] = field(default_factory=list)  # DAY_COLUMNS
    count: int = 0


def _add(into: dict, key: tuple, vec: list, sign: int) -> None:
    acc = into.setdefault(key, [0] * len(vec))
    for i, v in enumerate(vec):
        acc[i] += sign * v


def _batch_user(batch: _Batch, experiment_id: int, user: str, evs: _UserEvents, stale: dict, marks: dict,
                horizon: int) -> None:  # fmt: skip
    batch.count += 1
    new_x, new_c = evs.upto(horizon)
    for f, d in stale.items():
        old = user_contribution(d, *evs.upto(marks[f])) if marks[f] else Contribution()
        new = user_contribution(d, new_x, new_c)
        for sign, c in ((-1, old), (1, new)):
            for (series, variant, day), vec in c.sums.items():
                _add(batch.sums, (f, series, variant, day), vec, sign)
            for variant, vec in c.ratio.items():
                _add(batch.ratio, (f, variant), vec, sign)
        if not _percentile_storage(d):
            continue
        if marks[f]:
            batch.users[f].append(user)  # its rows are replaced (a definition built from scratch has none)
        variant = new_x.variant_id if new_x is not None else 0
        if new.value is not None:
            batch.values.append((experiment_id, f, user, variant, *new.value))
        batch.days += [(experiment_id, f, user, variant, *day, max(day[2], day[3])) for day in new.days]


def _percentile_storage(d: MetricDefinition) -> bool:
    if d.kind == "ratio":
        return _percentile(d.numerator) or _percentile(d.denominator)
    return _percentile(d)


def _upsert(using: str, model, experiment_id: int, keys: tuple[str, ...], fields: tuple[str, ...],
            deltas: dict[tuple, list]) -> None:  # fmt: skip
    conn = connections[using]
    qn = conn.ops.quote_name
    table = qn(model._meta.db_table)
    increments = ", ".join(f"{qn(f)} = {table}.{qn(f)} + excluded.{qn(f)}" for f in fields)
    items = sorted((k, v) for k, v in deltas.items() if any(v))  # one lock order for every writer
    width = 2 + len(keys) + len(fields)  # experiment, definition, keys, fields
    with conn.cursor() as cursor:
        for start in range(0, len(items), CHUNK):
            chunk = items[start : start + CHUNK]
            sql = METRIC_ROLLUP_UPSERT_SQL.format(
                table=table,
                keys=", ".join(qn(k) for k in keys),
                fields=", ".join(qn(f) for f in fields),
                values=", ".join(["(" + ", ".join(["%s"] * width) + ")"] * len(chunk)),
                increments=increments,
            )
            cursor.execute(sql, [p for key, vec in chunk for p in (experiment_id, *key, *vec)])


def _flush(using: str, experiment_id: int, batch: _Batch) -> None:
    _upsert(using, MetricRollup, experiment_id, ("series", "variant_id", "day"), SUMS_FIELDS,
            {(f, *rest): v for (f, *rest), v in batch.sums.items()})  # fmt: skip
    _upsert(using, MetricRatioRollup, experiment_id, ("variant_id",), RATIO_FIELDS, batch.ratio)
    for f, users in batch.users.items():
        for start in range(0, len(users), CHUNK):
            chunk = users[start : start + CHUNK]
            for model in (MetricUserValue, MetricUserDay):
                model.objects.using(using).filter(experiment_id=experiment_id, definition=f,
                                                  user_key__in=chunk).delete()  # fmt: skip
    _insert(using, MetricUserValue, VALUE_COLUMNS, batch.values)
    _insert(using, MetricUserDay, DAY_COLUMNS, batch.days)


def _insert(using: str, model, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """Plain multi-row INSERTs (the ORM's bulk_create builds a model instance per row: most of a build)."""
    conn = connections[using]
    qn = conn.ops.quote_name
    head = f"INSERT INTO {qn(model._meta.db_table)} ({', '.join(qn(c) for c in columns)}) VALUES "
    row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    with conn.cursor() as cursor:
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start : start + CHUNK]
            cursor.execute(head + ", ".join([row] * len(chunk)), [p for r in chunk for p in r])


def _reset(using: str, experiment_id: int, definitions: Iterable[str]) -> None:
    """A definition built from scratch: whatever it had is dropped first."""
    for model in (MetricRollup, MetricRatioRollup, MetricUserValue, MetricUserDay):
        model.objects.using(using).filter(experiment_id=experiment_id, definition__in=list(definitions)).delete()


# --- the catch-up ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CatchUp:
    """What one catch-up did: ``mode`` 'none', 'incremental' or 'full' (a definition built from scratch)."""

    mode: str
    users: int = 0
    horizon: int = 0


def _watermarks(using: str, experiment_id: int, fingerprints: list[str], *, lock: bool) -> dict[str, int]:
    qs = MetricRollupWatermark.objects.using(using).filter(experiment_id=experiment_id, definition__in=fingerprints)
    if lock:
        qs = qs.select_for_update().order_by("definition")
    return dict(qs.values_list("definition", "event_id"))


def catch_up(*, experiment_id: int, definitions: Iterable[MetricDefinition], using: str = DEFAULT_DB_ALIAS,
             horizon: int | None = None) -> CatchUp:  # fmt: skip
    """Bring the rollups of ``definitions`` (the rule ones) up to every committed event of the experiment."""
    rules = rule_definitions(definitions)
    if not rules:
        return CatchUp("none")
    if horizon is None:
        horizon = rollups.state(experiment_id=experiment_id, using=using, with_rows=False).horizon.event_id
    fingerprints = sorted(rules)
    known = _watermarks(using, experiment_id, fingerprints, lock=False)
    if len(known) == len(fingerprints) and all(v >= horizon for v in known.values()):
        return CatchUp("none", horizon=horizon)
    with transaction.atomic(using=using):
        MetricRollupWatermark.objects.using(using).bulk_create(
            [MetricRollupWatermark(experiment_id=experiment_id, definition=f) for f in fingerprints],
            ignore_conflicts=True,
        )
        marks = _watermarks(using, experiment_id, fingerprints, lock=True)
        stale = {f: rules[f] for f in fingerprints if marks[f] < horizon}
        if not stale:
            return CatchUp("none", horizon=horizon)
        _reset(using, experiment_id, [f for f in stale if not marks[f]])
        events = sorted({e for d in stale.values() for e in d.events()})
        since = min(marks[f] for f in stale)
        users = None if not since else _changed_users(using, experiment_id, since, horizon)
        if users is not None and len(users) > STREAM_USERS:
            users = None  # one ordered pass beats many IN lists; unchanged users add nothing
        batch, total = _Batch(), 0
        props = any(_filters(d) for d in stale.values())
        for user, evs in _user_events(using, experiment_id, events, horizon, users, props):
            _batch_user(batch, experiment_id, user, evs, stale, marks, horizon)
            if batch.count >= FLUSH_USERS:
                total += batch.count
                _flush(using, experiment_id, batch)
                batch = _Batch()
        total += batch.count
        _flush(using, experiment_id, batch)
        table = connections[using].ops.quote_name(MetricRollup._meta.db_table)
        with connections[using].cursor() as cursor:
            cursor.execute(METRIC_ROLLUP_PRUNE_SQL.format(table=table), [experiment_id])
        MetricRollupWatermark.objects.using(using).filter(
            experiment_id=experiment_id, definition__in=list(stale)
        ).update(event_id=horizon, updated_at=timezone.now())
    if total >= STREAM_USERS and connections[using].vendor == "postgresql" and not connections[using].in_atomic_block:
        _analyze(using)  # so the next catch-up's per-user deletes are planned as index lookups at once
    return CatchUp("full" if not since else "incremental", users=total, horizon=horizon)


def _analyze(using: str) -> None:
    conn = connections[using]
    with conn.cursor() as cursor:
        for model in (MetricRollup, MetricRatioRollup, MetricUserValue, MetricUserDay):
            cursor.execute(f"ANALYZE {conn.ops.quote_name(model._meta.db_table)}")


# --- the readout -------------------------------------------------------------------------------------------
def _order_statistics(qs, column: str, k: int, count: int, nonzero: int) -> list[float]:
    """The non-zero ``column`` values of ascending ranks k … k + count − 1 (0-based), one ordered index read
    from whichever end is nearer."""
    qs = qs.exclude(**{column: 0})
    if k <= nonzero // 2:
        return [float(v) for v in qs.order_by(column).values_list(column, flat=True)[k : k + count]]
    top = nonzero - k - count
    return [float(v) for v in reversed(qs.order_by(f"-{column}").values_list(column, flat=True)[top : top + count])]


def _lerp(a: float, b: float, t: float) -> float:
    """numpy's ``_lerp`` (the linear method of ``quantile``), to the last bit."""
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


def percentile_cap(*, experiment_id: int, definition: str, column: str, q: float, exposed: int, ignore_zeros: bool,
                   counts: tuple[int, int] | None = None, using: str = DEFAULT_DB_ALIAS) -> float | None:  # fmt: skip
    """numpy's default ``quantile`` of every exposed user's ``column`` (users without a row are 0).

    ``counts``: (users ≠ 0, users < 0) as the rollups keep them (counted here when not given). Then at most
    one ordered index read: the order statistics of the multiset (stored non-zero values) ∪ (zeros), so
    1M users cost no sort.
    """
    qs = MetricUserValue.objects.using(using).filter(experiment_id=experiment_id, definition=definition)
    if counts is None:
        found = qs.aggregate(nonzero=Count("pk", filter=~Q(**{column: 0})),
                             negative=Count("pk", filter=Q(**{f"{column}__lt": 0})))  # fmt: skip
        counts = (found["nonzero"] or 0, found["negative"] or 0)
    nonzero, negative = counts
    zeros = 0 if ignore_zeros else max(exposed - nonzero, 0)
    n = nonzero + zeros
    if n == 0:
        return None
    h = (n - 1) * q
    lo = min(max(math.floor(h), 0), n - 1)
    hi = min(lo + 1, n - 1)
    # each index's rank among the non-zero values (None: one of the zeros); the ranks wanted are adjacent
    rank = {i: i if i < negative else None if i < negative + zeros else i - zeros for i in (lo, hi)}
    wanted = sorted({r for r in rank.values() if r is not None})
    found_values = {}
    if wanted:
        values = _order_statistics(qs, column, wanted[0], wanted[-1] - wanted[0] + 1, nonzero)
        found_values = dict(zip(range(wanted[0], wanted[-1] + 1), values, strict=True))
    a, b = (0.0 if rank[i] is None else found_values[rank[i]] for i in (lo, hi))
    return a if hi == lo else _lerp(a, b, h - lo)


@dataclass(frozen=True)
class _Stored:
    """One read of every definition's MetricRollup and MetricRatioRollup rows."""

    sums: dict[tuple[str, int], list[tuple]]  # (definition, series) → [(variant, day, *SUMS_FIELDS)]
    ratio: dict[tuple[str, int], list]  # (definition, variant) → RATIO_FIELDS

    def rows(self, key: str, f: str, series: int) -> list[queries.SumsRow]:
        return [_sums_row(key, *r) for r in self.sums.get((f, series), [])]

    def counts(self, f: str, series: int) -> tuple[int, int]:
        found = self.sums.get((f, series))
        return (int(found[0][2]), int(found[0][5])) if found else (0, 0)


def _cap(d: MetricDefinition, *, experiment_id: int, f: str, series: int, stored: _Stored, exposed: int,
         using: str) -> float | None:  # fmt: skip
    """The cap a part uses (as ``metric_values._cap_value``): absolute, the percentile, or None."""
    if _percentile(d):
        column = "value" if series == VALUE_SERIES else "denominator"
        return percentile_cap(experiment_id=experiment_id, definition=f, column=column, q=float(d.cap_value),
                              exposed=exposed, ignore_zeros=d.cap_ignore_zeros, counts=stored.counts(f, series),
                              using=using)  # fmt: skip
    return _absolute_cap(d)


def _sums_row(key: str, variant: int, day, users: int, total: float, total_sq: float, events: int) -> queries.SumsRow:
    return queries.SumsRow("conversion", variant, key, queries._day(day), int(users or 0), float(total or 0.0),
                           float(total_sq or 0.0), 0.0, 0.0, int(events or 0), 0, 0)  # fmt: skip


def _percentile_rows(key: str, experiment_id: int, f: str, cap: float | None, stored: _Stored):
    """The uncapped rows with the users above the cap swapped for their capped increments."""
    acc = {(v, queries._day(day)): [users, total, total_sq, events] for v, day, users, total, total_sq, events
           in stored.sums.get((f, 0), [])}  # fmt: skip
    if cap is not None:
        query = queries.metric_user_day_above_query(experiment_id=experiment_id, definition=f, cap=cap)
        for r in queries.metric_fetch(query):
            v = acc.setdefault((r["variant_id"], queries._day(r["day"])), [0, 0.0, 0.0, 0])
            v[1] += float(r["total"]) - float(r["raw_total"])
            v[2] += float(r["total_sq"]) - float(r["raw_total_sq"])
    return [_sums_row(key, variant, day, *vec) for (variant, day), vec in sorted(acc.items())]


def _percentile_ratio(experiment_id: int, f: str, caps: tuple, sums: dict[int, list]) -> dict[int, list]:
    """``sums`` (variant → [n, Σm, Σm², Σd, Σd², Σm·d] of the uncapped parts) with the users above a cap
    swapped for their capped parts, and the users at 0 (no row) capped too when a cap is below 0."""
    if caps[0] is not None or caps[1] is not None:
        query = queries.metric_user_ratio_above_query(experiment_id=experiment_id, definition=f,
                                                      numerator_cap=caps[0], denominator_cap=caps[1])  # fmt: skip
        for r in queries.metric_fetch(query):
            s = sums.get(r["variant_id"])
            if s is None:
                continue  # a user exposed after the exposures were read (concurrent ingest)
            for i, name in enumerate(("m", "m2", "d", "d2", "md"), start=1):
                s[i] += float(r[name]) - float(r[f"raw_{name}"])
    m0, d0 = (0.0 if c is None else min(0.0, c) for c in caps)  # metric_values caps the users at 0 as well
    if m0 or d0:
        for s in sums.values():
            k = s[0] - s.pop()  # exposed users without a row
            for i, term in enumerate((m0, m0 * m0, d0, d0 * d0, m0 * d0), start=1):
                s[i] += k * term
    else:
        for s in sums.values():
            s.pop()
    return sums


def _ratio(d: MetricDefinition, *, experiment_id: int, f: str, exposures: dict[int, int], stored: _Stored,
           numerator_cap: float | None, using: str) -> tuple[dict, float | dict | None]:  # fmt: skip
    exposed = sum(exposures.values())
    caps = (numerator_cap, _cap(d.denominator, experiment_id=experiment_id, f=f, series=DENOMINATOR_SERIES,
                                stored=stored, exposed=exposed, using=using))  # fmt: skip
    # [n, Σm, Σm², Σd, Σd², Σm·d, users with a row]
    sums = {}
    for v, n in exposures.items():
        users, *vec = stored.ratio.get((f, v), [0, 0.0, 0.0, 0.0, 0.0, 0.0])
        sums[v] = [n, *(float(x) for x in vec), int(users)]
    if _percentile_storage(d):
        percentile_caps = tuple(c if _percentile(p) else None for c, p in zip(caps, (d.numerator, d.denominator),
                                                                               strict=True))  # fmt: skip
        sums = _percentile_ratio(experiment_id, f, percentile_caps, sums)
    else:
        sums = {v: s[:-1] for v, s in sums.items()}
    ratio = {
        v: stats.RatioSums(*s, numerator_kind=d.numerator.kind, denominator_kind=d.denominator.kind)
        for v, s in sums.items()
    }
    cap_applied = {"numerator": caps[0], "denominator": caps[1]}
    return ratio, (cap_applied if any(c is not None for c in caps) else None)


def _stored(using: str, experiment_id: int, fingerprints: list[str]) -> _Stored:
    sums: dict[tuple[str, int], list[tuple]] = defaultdict(list)
    for f, series, variant, day, *vec in (
        MetricRollup.objects.using(using)
        .filter(experiment_id=experiment_id, definition__in=fingerprints)
        .order_by("definition", "series", "variant_id", "day")
        .values_list("definition", "series", "variant_id", "day", *SUMS_FIELDS)
    ):
        sums[(f, series)].append((variant, day, *vec))
    ratio = {
        (f, variant): list(vec)
        for f, variant, *vec in MetricRatioRollup.objects.using(using)
        .filter(experiment_id=experiment_id, definition__in=fingerprints)
        .values_list("definition", "variant_id", *RATIO_FIELDS)
    }
    return _Stored(sums=sums, ratio=ratio)


def computed(*, experiment_id: int, definitions: list[MetricDefinition], exposures: dict[int, int],
             using: str = DEFAULT_DB_ALIAS) -> dict[str, catalog_metrics.Computed]:  # fmt: skip
    """``catalog_metrics.compute``'s result from the rollups, caught up first.

    ``exposures``: exposed users per variant (the readout's exposure rows), for the users at 0 that have no
    stored row (ratio n, the quantile's zeros).
    """
    rules = [d for d in definitions if not catalog_metrics.rollup_shaped(d)]
    if not rules:
        return {}
    catch_up(experiment_id=experiment_id, definitions=rules, using=using)
    prints = {d.key: fingerprint(d) for d in rules}
    stored = _stored(using, experiment_id, sorted(set(prints.values())))
    exposed = sum(exposures.values())
    out: dict[str, catalog_metrics.Computed] = {}
    for d in rules:
        f = prints[d.key]
        if d.kind == "funnel":
            steps = [(event, stored.rows(d.key, f, k)) for k, event in enumerate(d.steps, start=1)]
            out[d.key] = catalog_metrics.Computed(rows=steps[-1][1] if steps else [], steps=steps)
            continue
        main = d.numerator if d.kind == "ratio" else d
        cap = _cap(main, experiment_id=experiment_id, f=f, series=VALUE_SERIES, stored=stored, exposed=exposed,
                   using=using)  # fmt: skip
        if _percentile(main):
            main_rows = _percentile_rows(d.key, experiment_id, f, cap, stored)
        else:
            main_rows = stored.rows(d.key, f, 0)
        if d.kind == "ratio":
            ratio, cap_applied = _ratio(d, experiment_id=experiment_id, f=f, exposures=exposures, stored=stored,
                                        numerator_cap=cap, using=using)  # fmt: skip
            out[d.key] = catalog_metrics.Computed(rows=main_rows, cap_applied=cap_applied, ratio=ratio)
        else:
            out[d.key] = catalog_metrics.Computed(rows=main_rows, cap_applied=cap)
    return out


# --- rebuild and comparison (tests, `recompute_readouts --verify`) -----------------------------------------
def rebuild(*, experiment_id: int, definitions: Iterable[MetricDefinition], using: str = DEFAULT_DB_ALIAS) -> CatchUp:
    """Drop every rule-metric rollup of the experiment (any definition) and build ``definitions``' from the events."""
    with transaction.atomic(using=using):
        MetricRollupWatermark.objects.using(using).filter(experiment_id=experiment_id).delete()
        for model in (MetricRollup, MetricRatioRollup, MetricUserValue, MetricUserDay):
            model.objects.using(using).filter(experiment_id=experiment_id).delete()
    return catch_up(experiment_id=experiment_id, definitions=definitions, using=using)


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=rollups.FLOAT_TOLERANCE, abs_tol=rollups.FLOAT_TOLERANCE)


def _cap_differences(key: str, a, b) -> list[str]:
    if isinstance(a, dict) or isinstance(b, dict):
        same = isinstance(a, dict) and isinstance(b, dict) and all(_close(a[p], b[p]) for p in a) and set(a) == set(b)
    else:
        same = _close(a, b)
    return [] if same else [f"{key} cap_applied: expected {a!r}, got {b!r}"]


def _ratio_differences(key: str, a: dict, b: dict) -> list[str]:
    out = []
    for v in sorted(set(a) | set(b)):
        x, y = a.get(v), b.get(v)
        fields = (
            "numerator_sum",
            "numerator_sum_squares",
            "denominator_sum",
            "denominator_sum_squares",
            "sum_products",
        )
        if x is None or y is None or x.n != y.n or not all(_close(getattr(x, f), getattr(y, f)) for f in fields):
            out.append(f"{key} ratio variant {v}: expected {x}, got {y}")
    return out


def computed_differences(expected: dict[str, catalog_metrics.Computed],
                         actual: dict[str, catalog_metrics.Computed]) -> list[str]:  # fmt: skip
    """Where two ``computed`` results differ (rows, caps, ratio sums, funnel steps); [] when equal."""
    out = [f"{key}: missing" for key in expected if key not in actual]
    out += [f"{key}: unexpected" for key in actual if key not in expected]
    for key in sorted(set(expected) & set(actual)):
        e, a = expected[key], actual[key]
        out += [f"{key} rows: {d}" for d in rollups.rows_differences(e.rows, a.rows)]
        out += _cap_differences(key, e.cap_applied, a.cap_applied)
        out += _ratio_differences(key, e.ratio, a.ratio)
        if [s for s, _ in e.steps] != [s for s, _ in a.steps]:
            out.append(f"{key} steps: expected {[s for s, _ in e.steps]}, got {[s for s, _ in a.steps]}")
        for (event, er), (_, ar) in zip(e.steps, a.steps, strict=False):
            out += [f"{key} step {event}: {d}" for d in rollups.rows_differences(er, ar)]
    return out
