"""Snapshots of warehouse readouts: request a refresh, run it as a background task, read the latest ``ok`` one.

A refresh is a ``ReadoutSnapshot`` row: ``queued`` when requested (the database allows one queued or
running snapshot per experiment, so a second request joins the first), ``running`` while the task runs
the experiment's one query, then ``ok`` (the rows) or ``failed`` (a plain message; the previous ``ok``
snapshot stays what the readout shows). The task runs through django-tasks (``django_tasks_db``'s
database backend and its ``db_worker`` command), never inside a web request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_tasks import task

from experiments.models import Experiment
from readouts import queries, stats
from readouts.models import DataSource, ReadoutSnapshot
from readouts.sources import builder, runners
from readouts.sources.plan import dimensions_for, query_plan_for

logger = logging.getLogger(__name__)
ACTIVE = (ReadoutSnapshot.Status.QUEUED, ReadoutSnapshot.Status.RUNNING)


# --- request ------------------------------------------------------------------------------------------
def snapshot_request(*, experiment: Experiment, triggered_by: str) -> tuple[ReadoutSnapshot, bool]:
    """Queue a refresh of ``experiment`` (returns the snapshot and whether it is new; False = joined)."""
    if experiment.data_source_id is None:
        raise ValueError(f"{experiment.slug} reads Signal Dash's own events; there is nothing to refresh.")
    try:
        with transaction.atomic():
            snapshot = ReadoutSnapshot.objects.create(
                experiment=experiment, data_source_id=experiment.data_source_id, triggered_by=triggered_by[:150]
            )
    except IntegrityError:  # readoutsnapshot_one_active_per_experiment: join the queued or running one
        active = ReadoutSnapshot.objects.filter(experiment=experiment, status__in=ACTIVE).first()
        if active is not None:
            return active, False
        raise
    transaction.on_commit(lambda: _enqueue(snapshot.pk))
    return snapshot, True


def _enqueue(snapshot_id: int) -> None:
    result = readout_refresh_task.enqueue(snapshot_id=snapshot_id)
    ReadoutSnapshot.objects.filter(pk=snapshot_id).update(task_id=str(result.id)[:64])


@task()
def readout_refresh_task(*, snapshot_id: int) -> str:
    """The background task: run one queued snapshot (idempotent: a finished snapshot is left as it is)."""
    snapshot = ReadoutSnapshot.objects.select_related("experiment", "data_source").get(pk=snapshot_id)
    if snapshot.status not in ACTIVE:
        return snapshot.status
    return snapshot_run(snapshot=snapshot).status


# --- run ----------------------------------------------------------------------------------------------
def _check_columns(source: DataSource, found: frozenset[str], required: tuple[str, ...], what: str) -> None:
    missing = [c for c in required if c not in found]
    if missing:
        raise runners.SourceError(
            f"The {what} SELECT of source {source.key} has no column {', '.join(missing)} "
            f"(found: {', '.join(sorted(found)) or 'none'})."
        )


def snapshot_run(*, snapshot: ReadoutSnapshot, now: datetime | None = None) -> ReadoutSnapshot:
    """Run the experiment's query on its source and store the sums or the failure (never raises for a bad source)."""
    source, experiment = snapshot.data_source, snapshot.experiment
    snapshot.status, snapshot.started_at = ReadoutSnapshot.Status.RUNNING, timezone.now()
    snapshot.save(update_fields=["status", "started_at"])
    try:
        exposure_probe = _probe(source, source.exposure_sql, "exposure")
        exposure_cols = frozenset(c.lower() for c in exposure_probe.columns)
        _check_columns(source, exposure_cols, builder.EXPOSURE_COLUMNS, "exposure")
        events_probe = _probe(source, source.events_sql, "events")
        event_cols = frozenset(c.lower() for c in events_probe.columns)
        _check_columns(source, event_cols, builder.EVENT_COLUMNS, "events")
        dimensions = dimensions_for(experiment=experiment, columns=exposure_cols, standard=builder.EXPOSURE_COLUMNS)
        plan = query_plan_for(
            experiment=experiment, lookback_days=source.cuped_lookback_days, now=now, dimensions=dimensions
        )
        sql = builder.build_query(
            plan=plan,
            source=builder.SourceSQL(
                source.exposure_sql, source.events_sql, event_cols, props_type=events_probe.type_of("props")
            ),
            engine=source.engine,
        )
        snapshot.sql = sql
        result = runners.run(engine=source.engine, url_env=source.url_env, sql=sql, timeout_s=source.timeout_s)
        snapshot.rows = rows_to_json(result.dicts(), dimensions=plan.dimensions)
        snapshot.status, snapshot.error = ReadoutSnapshot.Status.OK, ""
    except (runners.SourceError, builder.BuildError) as e:
        snapshot.status, snapshot.error = ReadoutSnapshot.Status.FAILED, str(e)
        logger.warning("readout refresh failed: experiment=%s source=%s: %s", experiment.slug, source.key, e)
    except Exception as e:  # noqa: BLE001 - a task must always end its snapshot
        snapshot.status = ReadoutSnapshot.Status.FAILED
        snapshot.error = f"Unexpected error ({type(e).__name__}); see the worker log."
        logger.exception("readout refresh crashed: experiment=%s source=%s", experiment.slug, source.key)
    snapshot.finished_at = timezone.now()
    snapshot.save(update_fields=["status", "error", "sql", "rows", "finished_at"])
    return snapshot


def _probe(source: DataSource, sql: str, what: str) -> runners.Result:
    """The SELECT's columns and their types (no rows)."""
    probe = builder.probe_query(sql=sql, engine=source.engine, what=what, limit=0)
    return runners.run(engine=source.engine, url_env=source.url_env, sql=probe, timeout_s=source.timeout_s)


def _num(value, cast=float):
    return cast(value or 0)


SUMS_KINDS = ("exposure", "covariate", "conversion", "uncounted")
SLICE_KINDS = ("slice", "slice_den")


def _row_json(r: dict) -> dict:
    day = r["day"]
    return {
        "kind": r["kind"],
        "variant": r["variant_key"],
        "metric": r["metric"],
        "day": None if day is None else (day.isoformat() if isinstance(day, date) else str(day)[:10]),
        "users": _num(r["users"], int),
        "total": _num(r["total"]),
        "total_sq": _num(r["total_sq"]),
        "products": _num(r["products"]),
        "products_bin": _num(r["products_bin"]),
        "events": _num(r["events"], int),
        "late": _num(r["late"], int),
        "unexposed": _num(r["unexposed"], int),
    }


def rows_to_json(rows: list[dict], *, dimensions: tuple[str, ...] = ()) -> dict:
    """The query's rows as the snapshot stores them: SumsRow fields (variant by key), health counts, the
    ``extras`` of rule metrics (caps used, ratio sums, funnel steps; see ``builder``), the ``slices`` of every
    metric by every dimension (``dimension``, ``slice``: users, Σm, Σm², Σm·d / Σd, Σd²) and the ``dimensions``
    (extra exposure columns) they were sliced by."""
    sums, extras, slices, health = [], [], [], {k: 0 for k in builder.HEALTH_KINDS}
    for r in rows:
        kind = r["kind"]
        if kind in builder.HEALTH_KINDS:
            health[kind] = int(r["users"] or 0)
        elif kind in SUMS_KINDS:
            sums.append(_row_json(r))
        elif kind in SLICE_KINDS:
            slices.append({**_row_json(r), "dimension": r["dimension"], "slice": r["slice"]})
        else:
            extra = _row_json(r)
            if kind == "cap":
                extra["total"] = None if r["total"] is None else float(r["total"])
            extras.append(extra)
    order = lambda s: (s["kind"], s["variant"] or "", s["metric"], s["day"] or "")  # noqa: E731
    by_slice = lambda s: (s["metric"], s["dimension"], s["slice"], s["kind"], s["variant"] or "")  # noqa: E731
    return {
        "sums": sorted(sums, key=order),
        "health": health,
        "extras": sorted(extras, key=order),
        "dimensions": list(dimensions),
        "slices": sorted(slices, key=by_slice),
    }


# --- read ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SnapshotState:
    """What a warehouse readout shows about its numbers: from which snapshot, how old, the last failure."""

    snapshot: ReadoutSnapshot | None  # the latest ok one (None: no numbers yet)
    latest: ReadoutSnapshot | None  # the latest of any status
    stale: bool
    age: timedelta | None

    @property
    def failed(self) -> ReadoutSnapshot | None:
        latest = self.latest
        if latest is not None and latest.status == ReadoutSnapshot.Status.FAILED:
            if self.snapshot is None or latest.created_at >= self.snapshot.created_at:
                return latest
        return None

    @property
    def dimensions(self) -> list[str]:
        """The extra exposure columns the latest ok snapshot broke every metric down by."""
        return list((self.snapshot.rows or {}).get("dimensions", [])) if self.snapshot is not None else []

    @property
    def active(self) -> bool:
        return self.latest is not None and self.latest.status in ACTIVE


def snapshot_state_get(*, experiment: Experiment, now: datetime | None = None) -> SnapshotState:
    snaps = list(ReadoutSnapshot.objects.filter(experiment=experiment).order_by("-created_at", "-id")[:20])
    ok = next((s for s in snaps if s.status == ReadoutSnapshot.Status.OK), None)
    if ok is None and snaps:
        ok = ReadoutSnapshot.objects.filter(experiment=experiment, status=ReadoutSnapshot.Status.OK).first()
    now = now or timezone.now()
    age = (now - ok.finished_at) if ok is not None and ok.finished_at else None
    stale_after = timedelta(hours=settings.SIGNALDASH_SNAPSHOT_STALE_HOURS)
    return SnapshotState(
        snapshot=ok, latest=snaps[0] if snaps else None, stale=age is None or age > stale_after, age=age
    )


def snapshot_sums(*, experiment: Experiment, snapshot: ReadoutSnapshot | None) -> list[queries.SumsRow]:
    """The snapshot's rows as ``SumsRow`` (variant keys mapped to this experiment's variant ids)."""
    if snapshot is None:
        return []
    ids = dict(experiment.variants.values_list("key", "pk"))
    out = []
    for r in (snapshot.rows or {}).get("sums", []):
        variant_id = ids.get(r["variant"]) if r["variant"] is not None else None
        if r["variant"] is not None and variant_id is None:
            continue  # a variant renamed after the snapshot; the plan is locked, so this does not happen
        out.append(
            queries.SumsRow(
                kind=r["kind"],
                variant_id=variant_id,
                metric=r["metric"],
                day=date.fromisoformat(r["day"]),
                users=r["users"],
                total=r["total"],
                total_sq=r["total_sq"],
                products=r["products"],
                products_bin=r["products_bin"],
                events=r["events"],
                late=r["late"],
                unexposed=r["unexposed"],
            )
        )
    return out


def _step_row(r: dict, variant_id: int | None, metric: str) -> queries.SumsRow:
    fields = ("users", "total", "total_sq", "products", "products_bin", "events", "late", "unexposed")
    return queries.SumsRow("conversion", variant_id, metric, date.fromisoformat(r["day"]), *(r[f] for f in fields))


def _ratio_sums(d, extras: list[dict], ids: dict) -> dict:
    parts: dict[int, dict] = {}
    for r in extras:
        if r["metric"] == d.key and r["kind"] in ("ratio", "ratio_den") and ids.get(r["variant"]) is not None:
            parts.setdefault(ids[r["variant"]], {})[r["kind"]] = r
    out = {}
    for variant_id, p in parts.items():
        num, den = p.get("ratio"), p.get("ratio_den")
        if num is None or den is None:
            continue
        out[variant_id] = ratio_sums_of(num, den, d)
    return out


def ratio_sums_of(num: dict, den: dict, d) -> stats.RatioSums:
    """A ratio's sums from its two stored rows ('ratio'/'ratio_den', or a slice's 'slice'/'slice_den'): the
    numerator row holds n, Σm, Σm², Σm·d, the denominator row Σd, Σd²."""
    return stats.RatioSums(
        num["users"], num["total"], num["total_sq"], den["total"], den["total_sq"], num["products"],
        numerator_kind=d.numerator.kind, denominator_kind=d.denominator.kind,
    )  # fmt: skip


def snapshot_event_rows(*, snapshot: ReadoutSnapshot | None) -> list[queries.SumsRow] | None:
    """Counted and late conversions per event name (not per metric), as the internal aggregate's rows have them.

    None for a snapshot taken before the query counted them (no ``extras``): its metric rows serve instead."""
    if snapshot is None or "extras" not in (snapshot.rows or {}):
        return None
    out = []
    for r in snapshot.rows["extras"]:
        if r["kind"] == "event":
            day = date.fromisoformat(r["day"])
            out.append(queries.SumsRow("conversion", None, r["metric"], day, 0, 0.0, 0.0, 0.0, 0.0, r["events"], 0, 0))
            out.append(queries.SumsRow("uncounted", None, r["metric"], day, 0, 0.0, 0.0, 0.0, 0.0, 0, r["late"], 0))
    return out


def snapshot_computed(*, experiment: Experiment, snapshot: ReadoutSnapshot | None, definitions: dict) -> dict:
    """What the internal readout computes in Python for rule metrics (``catalog_metrics.Computed``: the cap
    used, ratio sums, funnel steps), read from the snapshot's extras, for the definitions that have any."""
    from readouts.catalog_metrics import Computed  # noqa: PLC0415 - catalog_metrics imports the event model

    if snapshot is None:
        return {}
    ids = dict(experiment.variants.values_list("key", "pk"))
    extras = (snapshot.rows or {}).get("extras", [])
    caps: dict[str, dict] = {}
    for r in extras:
        if r["kind"] == "cap":
            caps.setdefault(r["metric"], {})[r["variant"] or ""] = r["total"]
    out = {}
    for key, d in definitions.items():
        if d.kind == "ratio":
            cap = {"numerator": caps.get(key, {}).get("numerator"), "denominator": caps.get(key, {}).get("denominator")}
            out[key] = Computed(
                cap_applied=cap if any(v is not None for v in cap.values()) else None,
                ratio=_ratio_sums(d, extras, ids),
            )
        elif d.kind == "funnel":
            steps = []
            for k, event in enumerate(d.steps):
                rows = [
                    _step_row(r, ids.get(r["variant"]), key)
                    for r in extras
                    if r["kind"] == "step" and r["metric"] == f"{key}#{k}" and ids.get(r["variant"]) is not None
                ]
                steps.append((event, rows))
            out[key] = Computed(steps=steps)
        elif key in caps:
            out[key] = Computed(cap_applied=caps[key].get(""))
    return out


# --- test connection (admin) ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ConnectionTest:
    ok: bool
    message: str


def source_test(*, source: DataSource) -> ConnectionTest:
    """Run both SELECTs with LIMIT 5: the columns found, or the exact problem (never the URL)."""
    found = []
    try:
        for what, sql, required in (
            ("exposure", source.exposure_sql, builder.EXPOSURE_COLUMNS),
            ("events", source.events_sql, builder.EVENT_COLUMNS),
        ):
            probe = builder.probe_query(sql=sql, engine=source.engine, what=what, limit=5)
            result = runners.run(engine=source.engine, url_env=source.url_env, sql=probe, timeout_s=source.timeout_s)
            columns = frozenset(c.lower() for c in result.columns)
            _check_columns(source, columns, required, what)
            found.append(f"{what}: {', '.join(result.columns)} ({len(result.rows)} sample rows)")
    except (runners.SourceError, builder.BuildError) as e:
        return ConnectionTest(False, str(e))
    return ConnectionTest(True, "OK — " + "; ".join(found))
