"""Every tracking write: event ingestion (single and batch) and hash assignment.

Dedup and one-variant-per-user are decided atomically by the database (`INSERT … ON CONFLICT DO
NOTHING`), never by check-then-insert. Each batch writes its rows in one consistent key order and is
retried on a deadlock or serialization failure, so concurrent clients never see one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from django.db import OperationalError, connection, transaction
from django.utils import timezone

from experiments.models import Experiment
from tracking import queries
from tracking.assignment import Answer, evaluate
from tracking.models import Assignment, Event
from tracking.selectors import (
    AssignExperiment,
    IngestExperiment,
    assignment_rules_for,
    assignment_rules_get,
    assignment_rules_running_cached,
    experiments_for_ingest,
    running_experiment_cached,
    running_experiment_forget,
)

if TYPE_CHECKING:
    from tracking.fast_batch import PlainEvents

logger = logging.getLogger(__name__)

T = TypeVar("T")

# SQLSTATEs worth retrying: serialization_failure, deadlock_detected.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
MAX_ATTEMPTS = 6
# Clients' clocks run a little ahead or behind: an event may say it happened up to this long before
# the experiment started (and, checked by the API, up to this long in the future).
CLOCK_SKEW = timedelta(minutes=5)


class Outcome(StrEnum):
    CREATED = "created"
    DUPLICATE = "duplicate"
    VARIANT_CONFLICT = "variant_conflict"
    EXPERIMENT_NOT_FOUND = "experiment_not_found"
    EXPERIMENT_NOT_RUNNING = "experiment_not_running"
    UNKNOWN_VARIANT = "unknown_variant"
    VALUE_REQUIRED = "value_required"
    UNKNOWN_METRIC = "unknown_metric"
    OCCURRED_BEFORE_START = "occurred_before_start"

    @property
    def stored(self) -> bool:
        return self in (Outcome.CREATED, Outcome.DUPLICATE)


@dataclass(frozen=True, slots=True)
class EventIn:
    """One validated event as the API received it (shape checked; references not yet resolved)."""

    experiment: str
    variant: str
    user_key: str
    event_type: str
    occurred_at: datetime
    metric: str | None = None
    value: float | None = None
    props: dict[str, Any] = field(default_factory=dict)
    event_id: str | None = None
    covariates: dict[str, float] = field(default_factory=dict)  # exposures only: metric key -> value


@dataclass(frozen=True, slots=True)
class EventResult:
    outcome: Outcome
    detail: str = ""


@dataclass(frozen=True, slots=True)
class _Row:
    index: int
    experiment_id: int
    variant_id: int
    user_key: str
    event_type: str
    metric: str
    value: float | None
    occurred_at: datetime
    props: dict[str, Any]
    event_id: str | None = None
    covariates: dict[str, float] = field(default_factory=dict)

    @property
    def pair(self) -> tuple[int, str]:
        return (self.experiment_id, self.user_key)

    @property
    def conflict_key(self) -> tuple[int, str, str, str]:
        """What a variant conflict is recorded under (VariantConflict's dedup key, minus the variant)."""
        return (self.experiment_id, self.user_key, self.event_type, self.metric)

    @property
    def dedup_keys(self) -> tuple[tuple, ...]:
        """The keys under which this event is a repeat, exactly as the two unique constraints say.

        `event_dedup` (experiment, user, type, metric) for exposures and for conversions without event_id;
        `event_dedup_event_id` (experiment, event_id) for every event with an event_id.
        """
        keys: tuple[tuple, ...] = ()
        if self.event_id is None or self.event_type == Event.EventType.EXPOSURE:
            keys = (("event", *self.conflict_key),)
        if self.event_id is not None:
            keys = (*keys, ("event_id", self.experiment_id, self.event_id))
        return keys

    @property
    def returned(self) -> tuple[int, str, str, str, str | None]:
        """The row as `queries.events_insert` returns it when stored (EVENT_RETURNING)."""
        return (*self.conflict_key, self.event_id)

    @property
    def sort_key(self) -> tuple:
        """Insert order: by user first, so concurrent writers lock `event_dedup` keys in one order.

        Rows sharing an event_id share this prefix too when they are retries of one event (same user,
        type and metric). An event_id reused for *different* content could still lock in another order;
        the resulting deadlock is retried (`_with_retry`), never shown to the client.
        """
        return (*self.conflict_key, self.event_id is not None, self.event_id or "")


class ExperimentNotFound(Exception):
    pass


class ExperimentNotRunning(Exception):
    pass


class ExperimentHasNoVariants(Exception):
    pass


def _is_retryable(exc: OperationalError) -> bool:
    cause = exc.__cause__
    sqlstate = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    if sqlstate in RETRYABLE_SQLSTATES:
        return True
    return connection.vendor == "sqlite" and "locked" in str(exc)


def _with_retry(operation: Callable[[], T]) -> T:
    """Run `operation` (one atomic transaction); retry deadlocks/serialization failures with jittered backoff.

    Inside an outer transaction a failure cannot be retried (the outer transaction is aborted), so
    there the error propagates unchanged.
    """
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            return operation()
        except OperationalError as exc:
            if connection.in_atomic_block or attempt == MAX_ATTEMPTS or not _is_retryable(exc):
                raise
            logger.warning("tracking write retried after %s (attempt %d)", exc.__class__.__name__, attempt)
            time.sleep(random.uniform(0, 0.01 * 2**attempt))  # noqa: S311 - jitter, not crypto
    raise AssertionError("unreachable")  # pragma: no cover


# --- Events ---------------------------------------------------------------------------------------
def _not_running(experiment: IngestExperiment, status: str | None = None) -> EventResult:
    status = status or experiment.status
    return EventResult(Outcome.EXPERIMENT_NOT_RUNNING, f"Experiment '{experiment.slug}' is {status}, not running.")


def _metric_problem(experiment: IngestExperiment, metric: str, value: float | None) -> EventResult | None:
    if not experiment.metric_is_planned(metric):
        planned = ", ".join(sorted(experiment.metric_kinds))
        return EventResult(
            Outcome.UNKNOWN_METRIC, f"Experiment '{experiment.slug}' plans no metric '{metric}' (planned: {planned})."
        )
    if value is None and experiment.metric_is_mean(metric):
        return EventResult(
            Outcome.VALUE_REQUIRED, f"Metric '{metric}' is a mean metric: its conversions need a numeric value."
        )
    return None


def _resolve(
    index: int, event: EventIn, experiments: dict[str, IngestExperiment], allow_before_start: bool
) -> _Row | EventResult:
    experiment = experiments.get(event.experiment)
    if experiment is None:
        return EventResult(Outcome.EXPERIMENT_NOT_FOUND, f"No experiment with slug '{event.experiment}'.")
    if not experiment.is_running:
        return _not_running(experiment)
    variant_id = experiment.variant_ids.get(event.variant)
    if variant_id is None:
        return EventResult(Outcome.UNKNOWN_VARIANT, f"Experiment '{experiment.slug}' has no variant '{event.variant}'.")
    if not allow_before_start and experiment.started_at and event.occurred_at < experiment.started_at - CLOCK_SKEW:
        return EventResult(
            Outcome.OCCURRED_BEFORE_START,
            f"occurred_at is before experiment '{experiment.slug}' started ({experiment.started_at.isoformat()}).",
        )
    metric = ""
    if event.event_type == Event.EventType.CONVERSION:
        metric = event.metric or experiment.primary_metric
        problem = _metric_problem(experiment, metric, event.value)
        if problem:
            return problem
    return _Row(
        index=index,
        experiment_id=experiment.id,
        variant_id=variant_id,
        user_key=event.user_key,
        event_type=event.event_type,
        metric=metric,
        value=event.value,
        occurred_at=event.occurred_at,
        props=event.props,
        event_id=event.event_id,
        covariates=event.covariates if event.event_type == Event.EventType.EXPOSURE else {},
    )


def _assignments_fix(rows: Sequence[tuple[int, str, int, str]], now: datetime) -> dict[tuple[int, str], int]:
    """Fix first-exposure assignments, then return the assigned variant of every user in `rows`
    ((experiment_id, user_key, variant_id, event_type) per event)."""
    first_exposure: dict[tuple[int, str], int] = {}
    exposure = Event.EventType.EXPOSURE.value
    for experiment_id, user_key, variant_id, event_type in rows:
        if event_type == exposure:
            first_exposure.setdefault((experiment_id, user_key), variant_id)
    source = Assignment.Source.UPSTREAM.value
    created = queries.assignments_insert([(e, u, v, now, source) for (e, u), v in sorted(first_exposure.items())])
    assigned = {pair: first_exposure[pair] for pair in created}
    missing: dict[int, set[str]] = {}
    for experiment_id, user_key, _, _ in rows:
        if (experiment_id, user_key) not in assigned:
            missing.setdefault(experiment_id, set()).add(user_key)
    for experiment_id, user_keys in missing.items():
        for user_key, variant_id in Assignment.objects.filter(
            experiment_id=experiment_id, user_key__in=user_keys
        ).values_list("user_key", "variant_id"):
            assigned[(experiment_id, user_key)] = variant_id
    return assigned


def _split_conflicts_and_repeats(
    rows: Sequence[_Row], assigned: dict[tuple[int, str], int], variant_keys: dict[int, str], now: datetime
) -> tuple[list[_Row], dict[int, EventResult]]:
    """The rows to insert (first of each dedup key), and results for conflicts and in-batch repeats.

    Conflicts are recorded in VariantConflict. A row repeats an earlier one when any of its dedup keys
    was taken by an earlier row of the batch (the same rule as the two unique constraints).
    """
    results: dict[int, EventResult] = {}
    conflicts: dict[tuple, tuple] = {}
    taken: set[tuple] = set()
    first: list[_Row] = []
    for row in rows:
        variant_id = assigned.get(row.pair, row.variant_id)
        if variant_id != row.variant_id:
            detail = f"User '{row.user_key}' is already assigned to variant '{variant_keys[variant_id]}'."
            results[row.index] = EventResult(Outcome.VARIANT_CONFLICT, detail)
            key = (*row.conflict_key, row.variant_id)
            conflicts.setdefault(key, (*row.conflict_key, variant_id, row.variant_id, row.occurred_at, now))
        elif taken.intersection(row.dedup_keys):
            results[row.index] = EventResult(Outcome.DUPLICATE)
        else:
            taken.update(row.dedup_keys)
            first.append(row)
    if conflicts:
        queries.variant_conflicts_insert([conflicts[k] for k in sorted(conflicts)])
    return first, results


def _store(
    rows: Sequence[_Row], experiments: dict[int, IngestExperiment], *, bulk: bool = False
) -> dict[int, EventResult]:
    """Write resolved rows; called inside the write transaction that read (and share-locked) `experiments`."""
    now = timezone.now()
    results: dict[int, EventResult] = {}
    variant_keys = {pk: key for exp in experiments.values() for key, pk in exp.variant_ids.items()}
    assigned = _assignments_fix([(r.experiment_id, r.user_key, r.variant_id, r.event_type) for r in rows], now)
    first, split_results = _split_conflicts_and_repeats(rows, assigned, variant_keys, now)
    results.update(split_results)
    first.sort(key=lambda r: r.sort_key)
    inserted = queries.events_insert(
        [
            (
                r.experiment_id,
                r.variant_id,
                r.user_key,
                r.event_type,
                r.metric,
                r.value,
                r.occurred_at,
                now,
                r.props,
                r.event_id,
            )
            for r in first
        ],
        copy=bulk,
    )
    covariates = []
    for row in first:
        created = row.returned in inserted
        results[row.index] = EventResult(Outcome.CREATED if created else Outcome.DUPLICATE)
        if created and row.covariates:  # first exposure wins: a repeat's covariates are ignored
            covariates += [(row.experiment_id, row.variant_id, row.user_key, m, v) for m, v in row.covariates.items()]
    if covariates:
        queries.covariates_insert(sorted(covariates, key=lambda c: (c[0], c[2], c[3])))
    return results


def events_ingest(
    *, events: Sequence[EventIn], allow_before_start: bool = False, bulk: bool = False
) -> list[EventResult]:
    """Store valid events, atomically deduplicated; one result per input event, in input order.

    - The first exposure of a user fixes their variant (`Assignment`, source `upstream`).
    - An event whose variant differs from the user's assignment is rejected (`variant_conflict`) and
      recorded in `VariantConflict`; this wins over "duplicate".
    - A repeat of a stored event, or of an earlier event in the same batch, is a `duplicate`: an
      exposure repeats the user's exposure (one per user, whatever its event_id); a conversion with an
      `event_id` repeats any event of the experiment with that event_id (even one with other content);
      a conversion without one repeats the user's conversion on the same metric.
    - A conversion on a planned `mean` metric without a `value` is rejected (`value_required`).
    - A new exposure's `covariates` are stored (`Covariate`) in the same transaction; covariates of a
      repeated exposure are ignored (first exposure wins).
    - Conversions without an exposure are stored (events arrive out of order).
    - With a metric plan (ExperimentMetric rows), a conversion on a metric the plan does not name is
      rejected (`unknown_metric`); without one (legacy), any metric key is accepted.
    - An event that says it happened before the experiment started (beyond CLOCK_SKEW) is rejected
      (`occurred_before_start`), unless `allow_before_start` (trusted backfills such as demo data).
    - `bulk` (backfills): on PostgreSQL the events travel by `COPY` (same statement semantics, fewer bytes
      parsed per row); the rules above are unchanged.
    - The experiment must be running when the events commit: it is read, and on PostgreSQL share-locked,
      by the write transaction's first statement (`experiment_not_running` otherwise).
    """
    if not events:
        return []
    slugs = {event.experiment for event in events}
    return _with_retry(lambda: _ingest(events, slugs, allow_before_start, bulk))


def _ingest(events: Sequence[EventIn], slugs: set[str], allow_before_start: bool, bulk: bool) -> list[EventResult]:
    """One write transaction: read the experiments (share-locked on PostgreSQL, so "running" holds until
    commit and readouts/rollups.py's horizon waits for these rows), resolve, write."""
    with transaction.atomic():
        experiments = experiments_for_ingest(slugs=slugs, lock=True)
        return _resolve_and_store(events, experiments, allow_before_start, bulk)


def _resolve_and_store(
    events: Sequence[EventIn], experiments: dict[str, IngestExperiment], allow_before_start: bool, bulk: bool
) -> list[EventResult]:
    results: dict[int, EventResult] = {}
    rows: list[_Row] = []
    for index, event in enumerate(events):
        resolved = _resolve(index, event, experiments, allow_before_start)
        if isinstance(resolved, EventResult):
            results[index] = resolved
        else:
            rows.append(resolved)
    if rows:
        by_id = {experiment.id: experiment for experiment in experiments.values()}
        results.update(_store(rows, by_id, bulk=bulk))
    return [results[index] for index in range(len(events))]


# --- Events as columns (the batch fast path) ------------------------------------------------------
_CREATED = EventResult(Outcome.CREATED)
_DUPLICATE = EventResult(Outcome.DUPLICATE)


@dataclass(frozen=True, slots=True)
class _Resolved:
    """A plain batch resolved against its experiments, as columns in the body's order."""

    experiment_id: list[int]
    variant_id: list[int]
    metric: list[str]


def _resolve_columns(events: PlainEvents, experiments: dict[str, IngestExperiment]) -> _Resolved | None:
    """`_resolve` for every event at once; None when any event is rejected (the general path answers then)."""
    experiment_ids: list[int] = []
    variant_ids: list[int] = []
    metrics: list[str] = []
    conversion = Event.EventType.CONVERSION.value
    for slug, variant, event_type, metric, value, occurred_at in zip(
        events.experiment, events.variant, events.event_type, events.metric, events.value, events.occurred_at,
        strict=True,
    ):  # fmt: skip
        experiment = experiments.get(slug)
        if experiment is None or not experiment.is_running or variant not in experiment.variant_ids:
            return None
        if experiment.started_at and occurred_at < experiment.started_at - CLOCK_SKEW:
            return None
        if event_type == conversion:
            metric = metric or experiment.primary_metric
            if _metric_problem(experiment, metric, value):
                return None
        experiment_ids.append(experiment.id)
        variant_ids.append(experiment.variant_ids[variant])
        metrics.append(metric or "")
    return _Resolved(experiment_ids, variant_ids, metrics)


def _first_of_each_key(events: PlainEvents, resolved: _Resolved) -> list[int]:
    """The indexes of the events to insert (the first of each dedup key, `_Row.dedup_keys`), in insert order
    (`_Row.sort_key`); every other event repeats an earlier one of the batch."""
    exposure = Event.EventType.EXPOSURE.value
    taken_keys: set[tuple[int, str, str, str]] = set()
    taken_ids: set[tuple[int, str]] = set()
    first: list[tuple[tuple, int]] = []
    for index, (experiment_id, user_key, event_type, metric, event_id) in enumerate(
        zip(resolved.experiment_id, events.user_key, events.event_type, resolved.metric, events.event_id, strict=True)
    ):
        key = (experiment_id, user_key, event_type, metric)
        by_key = event_id is None or event_type == exposure
        if (by_key and key in taken_keys) or (event_id is not None and (experiment_id, event_id) in taken_ids):
            continue
        if by_key:
            taken_keys.add(key)
        if event_id is not None:
            taken_ids.add((experiment_id, event_id))
        first.append(((*key, event_id is not None, event_id or ""), index))
    first.sort()
    return [index for _, index in first]


def _store_columns(
    events: PlainEvents, resolved: _Resolved, experiments: dict[str, IngestExperiment]
) -> list[EventResult]:
    """`_store` for a plain batch: no per-event objects, one statement per table. A variant conflict hands the
    batch to `_store` (which records it), in the same transaction."""
    now = timezone.now()
    per_event = list(zip(resolved.experiment_id, events.user_key, resolved.variant_id, events.event_type, strict=True))
    assigned = _assignments_fix(per_event, now)
    if any(assigned.get((e, u), v) != v for e, u, v, _ in per_event):
        return _resolve_and_store(events.events(), experiments, allow_before_start=False, bulk=False)
    order = _first_of_each_key(events, resolved)
    inserted = queries.events_insert_columns(
        experiment_id=[resolved.experiment_id[i] for i in order],
        variant_id=[resolved.variant_id[i] for i in order],
        user_key=[events.user_key[i] for i in order],
        event_type=[events.event_type[i] for i in order],
        metric=[resolved.metric[i] for i in order],
        value=[events.value[i] for i in order],
        occurred_at=[events.occurred_at[i] for i in order],
        received_at=now,
        props=[events.props[i] for i in order],
        event_id=[events.event_id[i] for i in order],
    )
    results = [_DUPLICATE] * len(events)
    for i in order:
        key = (resolved.experiment_id[i], events.user_key[i], events.event_type[i], resolved.metric[i])
        if (*key, events.event_id[i]) in inserted:
            results[i] = _CREATED
    return results


def events_ingest_plain(*, events: PlainEvents) -> list[EventResult]:
    """`events_ingest` for a plainly valid batch (`tracking.fast_batch.batch_decode`), with the same rules and
    the same results, built from columns: one statement per table when no event is rejected and no user is in
    another variant; otherwise the general path decides, in the same transaction."""
    if not len(events):
        return []
    slugs = set(events.experiment)
    return _with_retry(lambda: _ingest_plain(events, slugs))


def _ingest_plain(events: PlainEvents, slugs: set[str]) -> list[EventResult]:
    with transaction.atomic():
        experiments = experiments_for_ingest(slugs=slugs, lock=True)
        resolved = _resolve_columns(events, experiments)
        if resolved is None:
            return _resolve_and_store(events.events(), experiments, allow_before_start=False, bulk=False)
        return _store_columns(events, resolved, experiments)


def _single_ingest(event: EventIn) -> EventResult | None:
    """PostgreSQL: store one event in one statement (`queries.event_insert_single`) when nothing about it
    needs more than that; None hands it to the general path (`events_ingest`), which then decides.

    The experiment's plan comes from `running_experiment_cached` (a running experiment's variants and
    metrics cannot change); the statement itself checks, under the row lock, that it is still running.
    Every rejection, covariates and variant conflicts go the general path, so their answers and records
    come from the one implementation.
    """
    if event.covariates:
        return None
    experiment = running_experiment_cached(event.experiment)
    if experiment is None:
        return None
    row = _resolve(0, event, {event.experiment: experiment}, allow_before_start=False)
    if isinstance(row, EventResult):
        return None
    running, verdict, stored = queries.event_insert_single(
        experiment_id=row.experiment_id,
        variant_id=row.variant_id,
        user_key=row.user_key,
        event_type=row.event_type,
        metric=row.metric,
        value=row.value,
        occurred_at=row.occurred_at,
        received_at=timezone.now(),
        props=row.props,
        event_id=row.event_id,
    )
    if not running:
        running_experiment_forget(event.experiment)
        return None
    if verdict != "store":
        return None
    return EventResult(Outcome.CREATED if stored else Outcome.DUPLICATE)


def event_ingest(*, event: EventIn) -> EventResult:
    """Store one event (see `events_ingest`); on PostgreSQL the common case is one statement (`_single_ingest`)."""
    if connection.vendor == "postgresql":
        result = _with_retry(lambda: _single_ingest(event))
        if result is not None:
            return result
    return events_ingest(events=[event])[0]


# --- Assignment -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AssignmentResult:
    """One experiment's answer for one user: enrolled (`variant` set, stored) or not (`variant` None,
    nothing stored, `reason` says why)."""

    experiment: str
    variant: str | None
    reason: str
    assigned_at: datetime | None
    new: bool

    @property
    def in_experiment(self) -> bool:
        return self.variant is not None


def _stored_assignments(user_key: str, experiments: dict[str, AssignExperiment]) -> dict[str, tuple[str, datetime]]:
    """The user's stored (variant key, assigned_at) per experiment slug, in one query."""
    by_id = {e.id: e for e in experiments.values()}
    rows = queries.assignments_of_user(user_key, list(by_id))
    return {by_id[e].rule.slug: (by_id[e].variant_keys[v], at) for e, v, at in rows}


def _record_sqlite(
    user_key: str, new: list[Answer], answers: list[Answer], experiments: dict[str, AssignExperiment]
) -> tuple[dict[str, tuple[str, datetime]], set[str], set[str]]:
    """Record one user's answers: store the new enrolments and count the `answers` per experiment and reason,
    only for experiments still running (read inside the write transaction: SQLite serializes writers, so the
    read holds until commit and nothing is assigned or counted after an end). Returns what is stored now for the
    new enrolments' experiments, the slugs stored by this call, and the slugs no longer running.
    (PostgreSQL does the same in one statement: `_record_postgresql`.)"""
    by_id = {experiments[a.experiment].id: a for a in [*new, *answers]}
    with transaction.atomic():
        statuses = queries.experiments_running_lock(sorted(by_id))
        gone = {a.experiment for pk, a in by_id.items() if statuses.get(pk) != Experiment.Status.RUNNING}
        now = timezone.now()
        rows = sorted(
            (
                experiments[a.experiment].id,
                user_key,
                experiments[a.experiment].variant_ids[a.variant],
                now,
                Assignment.Source.HASH,
            )
            for a in new
            if a.experiment not in gone
        )
        created = queries.assignments_insert(rows) if rows else set()
        kept = {s: experiments[s] for s in {a.experiment for a in new} - gone}
        stored = _stored_assignments(user_key, kept) if rows else {}
        counts = Counter((experiments[a.experiment].id, a.reason) for a in answers if a.experiment not in gone)
        queries.assignment_counts_add([(e, reason, n) for (e, reason), n in counts.items()])
    return stored, {by_id[pk].experiment for pk, _ in created}, gone


def _record_postgresql(
    user_key: str, new: list[Answer], answers: list[Answer], experiments: dict[str, AssignExperiment]
) -> tuple[dict[str, tuple[str, datetime]], set[str], set[str]]:
    """`_record_sqlite` on PostgreSQL, in one statement (`queries.assignments_record`); the same three results.
    A row a concurrent transaction committed after the statement's snapshot (a first exposure, say) is read
    back by one more query: the stored row wins."""
    by_id = {experiments[a.experiment].id: a for a in [*new, *answers]}
    new_by_id = {experiments[a.experiment].id: a for a in new}
    counts = Counter(
        (experiments[a.experiment].id, a.reason, a.experiment in {n.experiment for n in new}) for a in answers
    )
    found = queries.assignments_record(
        user_key=user_key,
        experiment_ids=list(by_id),
        new=[(pk, experiments[a.experiment].variant_ids[a.variant]) for pk, a in new_by_id.items()],
        counts=[(e, reason, n, is_new) for (e, reason, is_new), n in counts.items()],
        now=timezone.now(),
    )
    rows = {**found.before, **found.created}
    if missing := [pk for pk in new_by_id if pk in found.running and pk not in rows]:
        rows.update({e: (v, at) for e, v, at in queries.assignments_of_user(user_key, missing)})
    stored = {
        new_by_id[pk].experiment: (experiments[new_by_id[pk].experiment].variant_keys[v], at)
        for pk, (v, at) in rows.items()
        if pk in found.running
    }
    gone = {a.experiment for pk, a in by_id.items() if pk not in found.running}
    return stored, {new_by_id[pk].experiment for pk in found.created}, gone


def _with_holdouts(asked: list[str], experiments: dict[str, AssignExperiment]) -> dict[str, AssignExperiment]:
    """The asked experiments and the holdouts their rules may evaluate (transitively): whose stored rows matter."""
    relevant: dict[str, AssignExperiment] = {}
    todo = list(asked)
    while todo:
        slug = todo.pop()
        if slug in relevant or slug not in experiments:
            continue
        relevant[slug] = experiments[slug]
        if experiments[slug].rule.holdout:
            todo.append(experiments[slug].rule.holdout)
    return relevant


def _evaluate(
    user_key: str, attributes: dict[str, Any], experiments: dict[str, AssignExperiment], asked: list[str]
) -> list[AssignmentResult]:
    """Evaluate the `asked` running experiments (docs/assignment.md), store new enrolments (the holdouts'
    too), count every answer per experiment and reason. An answer is given only for an experiment still
    running when it is recorded (`experiments` may be a cached read). A fixed number of queries whatever the
    count: on PostgreSQL two (the stored rows; the record statement)."""
    running = {slug: e for slug, e in experiments.items() if e.is_running}
    rules = {slug: e.rule for slug, e in running.items()}
    stored = _stored_assignments(user_key, _with_holdouts(asked, running))
    stored_variants = {s: v for s, (v, _) in stored.items()}
    memo: dict[str, Answer] = {}
    for slug in asked:
        evaluate(rules[slug], user_key=user_key, attributes=attributes, rules=rules, stored=stored_variants, memo=memo)
    new = [a for a in memo.values() if a.variant is not None and not a.stored]
    record = _record_postgresql if connection.vendor == "postgresql" else _record_sqlite
    now_stored, created, gone = _with_retry(lambda: record(user_key, new, [memo[s] for s in asked], running))
    stored.update(now_stored)
    results = []
    for slug in asked:
        answer = memo[slug]
        if slug in gone:
            continue
        if answer.variant is None:
            results.append(AssignmentResult(slug, None, answer.reason, None, False))
            continue
        variant, assigned_at = stored[slug]  # the stored row wins (a concurrent first exposure, say)
        results.append(AssignmentResult(slug, variant, answer.reason, assigned_at, slug in created))
    if asked and gone.issuperset(asked):
        raise ExperimentNotRunning("ended")
    return results


def assignment_get_or_create(
    *, experiment_slug: str, user_key: str, attributes: dict[str, Any] | None = None
) -> AssignmentResult:
    """The user's answer for one experiment: the stored assignment, or the rules in order (targeting,
    holdout, layer range, coverage, weights; docs/assignment.md). An enrolled user's assignment is stored
    once (source `hash`) and wins afterwards, whatever the attributes say later; a user who is not enrolled
    is stored nowhere, only counted (`AssignmentEvaluationCount`).
    """
    experiments = assignment_rules_for([experiment_slug])
    experiment = experiments.get(experiment_slug)
    if experiment is None:
        raise ExperimentNotFound(experiment_slug)
    if not experiment.is_running:
        raise ExperimentNotRunning(experiment.status)
    if not experiment.rule.variants:
        raise ExperimentHasNoVariants(experiment_slug)
    return _evaluate(user_key, attributes or {}, experiments, [experiment_slug])[0]


def assignments_get_or_create_all(
    *, user_key: str, attributes: dict[str, Any] | None = None, experiment_slugs: Sequence[str] | None = None
) -> list[AssignmentResult]:
    """`assignment_get_or_create` for every running experiment (or the listed ones that are running; others
    are left out), in slug order, in a fixed number of queries whatever their count."""
    if experiment_slugs is None:
        experiments = assignment_rules_running_cached()
    else:
        experiments = assignment_rules_for(experiment_slugs)
    wanted = set(experiment_slugs) if experiment_slugs is not None else None
    asked = sorted(
        slug
        for slug, e in experiments.items()
        if e.is_running and e.rule.variants and (wanted is None or slug in wanted)
    )
    try:
        return _evaluate(user_key, attributes or {}, experiments, asked)
    except ExperimentNotRunning:
        return []


ASSIGNMENT_ALGORITHM = "signaldash-assign-1"


def assignment_rules_published() -> tuple[dict[str, Any], str]:
    """The published rules of every running experiment (with variants) and their ETag: the SHA-256 of the
    canonical JSON of the body, so it changes when, and only when, a running experiment's rules do."""
    experiments = assignment_rules_get()
    body = {
        "algorithm": ASSIGNMENT_ALGORITHM,
        "experiments": [e.rule.as_json() for _, e in sorted(experiments.items()) if e.rule.variants],
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return body, hashlib.sha256(canonical.encode("utf-8")).hexdigest()
