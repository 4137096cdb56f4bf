"""Stored verdict summaries: what the experiment list and its CSV show of one experiment (issue 17).

A summary is the primary metric's verdict per treatment, its relative lift with the 95% interval and p per
treatment, the failing check codes, the exposed users and the result line — computed exactly as the list
always computed them (``summary_compute``), and kept as one ``readouts.VerdictSummary`` row per experiment,
keyed by a SHA-256 **fingerprint of its inputs** (style rule 8):

- every field of the experiment but ``updated_at`` (status, dates, the analysis settings, the approved plan
  with its frozen metric definitions), its variants, its metric rows and the version (``updated_at``) of the
  catalog metrics they link;
- the rollups' version: the watermark's event and covariate ids and its ``updated_at`` (every write to an
  experiment's rollups saves the watermark in the same transaction: ``readouts.rollups``);
- the variant-conflict users (the conflict check), and for a warehouse experiment its latest ok snapshot id;
- the analysis settings the statistics read and ``SUMMARY_VERSION`` (bump it when the rules change).

The experiment's inputs are read in **one statement** (``listed_get``, ``with_inputs``: the experiment row,
its watermark, its stored summary, the snapshot id and the conflict users, joined into one text by the
database), its variants and metric rows right after, and a summary is computed from numbers read after
those, so its content is never older than its fingerprint. A reader shows a stored summary only when its
fingerprint equals the one of the inputs it has just read, so it never shows a summary older than what the
readout would compute from the same rollups. (A summary whose content came out newer than its fingerprint —
a catch-up committed in between — simply mismatches next time and is recomputed.)

Writers: the experiment list (only the rows whose fingerprint is stale, ``summaries_current``),
``manage.py catch_up_rollups`` (every live experiment, after its catch-up) and the readout page and API
(``summary_after_readout``: the readout they just computed, when its inputs were read first).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date
from functools import cache, partial

from django.conf import settings
from django.db import connection
from django.db.models import Count, F, Func, IntegerField, OuterRef, Prefetch, QuerySet, Subquery, Sum, TextField, Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

from experiments.models import Experiment, ExperimentMetric, Variant
from readouts import queries, rollups
from readouts.governance import FAIL, Governance, ViewFacts, checks_get
from readouts.models import ReadoutSnapshot, Rollup, VerdictSummary
from readouts.selectors import Readout, VariantInfo, readout_from_rows, readout_get
from readouts.verdicts import Verdict, overall_label, result_summary, verdicts_get
from tracking.models import VariantConflict

SUMMARY_VERSION = 1  # bump when the verdict rules, the statistics or what a summary holds change
UNFINGERPRINTED_FIELDS = {"updated_at"}  # touched by every save; every field the readout reads is included
DAY = date(1970, 1, 1)  # the list sums the rollups over all days; the readout assembly ignores the day


# --- what a summary holds ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PrimaryNumbers:
    """One treatment's primary-metric numbers as the CSV exports them (exact floats)."""

    variant: str
    rel_lift: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None


@dataclass(frozen=True)
class Summary:
    exposed: int
    result: str  # the result in words ('carousel: Untrustworthy (sample ratio mismatch)')
    verdicts: list[Verdict]
    numbers: list[PrimaryNumbers]  # primary metric, per treatment
    failing: list[str]  # failing check codes

    @property
    def label(self) -> str:
        return overall_label(self.verdicts)

    def as_json(self) -> dict:
        return {
            "exposed": self.exposed,
            "result": self.result,
            "failing": self.failing,
            "verdicts": [
                {**v.as_json(), "guardrails_worse": list(v.guardrails_worse), "failing": list(v.failing)}
                for v in self.verdicts
            ],
            "numbers": [{k: _float_out(v) for k, v in asdict(n).items()} for n in self.numbers],
        }

    @classmethod
    def of_json(cls, data: dict) -> Summary:
        verdicts = [
            Verdict(
                variant=v["variant"],
                label=v["label"],
                reason=v["reason"],
                blocked_by=tuple(v["blocked_by"]),
                guardrails_worse=tuple(v["guardrails_worse"]),
                failing=tuple(v["failing"]),
            )
            for v in data["verdicts"]
        ]
        numbers = [PrimaryNumbers(**{k: _float_in(v) for k, v in n.items()}) for n in data["numbers"]]
        return cls(int(data["exposed"]), data["result"], verdicts, numbers, list(data["failing"]))


def _float_out(x):
    """JSON has no inf/NaN (PostgreSQL's jsonb refuses them): those travel as text; exact otherwise."""
    return str(x) if isinstance(x, float) and not math.isfinite(x) else x


def _float_in(x):
    return float(x) if isinstance(x, str) and x in ("inf", "-inf", "nan") else x


# --- the inputs (one statement) and their fingerprint ------------------------------------------------------
def _latest_ok_snapshot():
    return Subquery(
        ReadoutSnapshot.objects.filter(experiment=OuterRef("pk"), status=ReadoutSnapshot.Status.OK)
        .order_by("-created_at", "-id")
        .values("id")[:1]
    )


def _conflict_users():
    users = (
        VariantConflict.objects.filter(experiment=OuterRef("pk"))
        .order_by()
        .values("experiment")
        .annotate(n=Count("user_key", distinct=True))
        .values("n")
    )
    return Coalesce(Subquery(users, output_field=IntegerField()), 0)


_SEP, _NULL = (
    Value("\x1f", output_field=TextField()),
    Value("\x1e", output_field=TextField()),
)  # unit and record separators: never in a field's text (NULL is the record separator alone)


class _Joined(Func):
    """``a || b || c …`` flat (Django's ``Concat`` nests one pair per part: SQLite's parser overflows at forty)."""

    arg_joiner = " || "
    template = "(%(expressions)s)"
    output_field = TextField()


_SEP_TEXT, _NULL_TEXT = "\x1f", "\x1e"
ROW_TEXT_SQL = "COALESCE(CAST({table}.{column} AS TEXT), %s)"  # one column of a row's text (both engines)


def _row_text(model) -> RawSQL:
    """Every field of the query's ``model`` row but ``updated_at``, as one text (``a || sep || b …``). Raw SQL
    on the base table (the query's alias for it is its name): forty ORM expressions cost more to compile
    than the query takes to run."""
    qn = connection.ops.quote_name
    table = qn(model._meta.db_table)
    columns = [f.column for f in model._meta.concrete_fields if f.attname not in UNFINGERPRINTED_FIELDS]
    sql = " || %s || ".join(ROW_TEXT_SQL.format(table=table, column=qn(c)) for c in columns)
    params = [_NULL_TEXT]
    for _ in columns[1:]:
        params += [_SEP_TEXT, _NULL_TEXT]
    return RawSQL(f"({sql})", params, output_field=TextField())


def _joined(row: RawSQL, parts: list) -> _Joined:
    """The row's text and further inputs as one text, built by the database (the list reads a thousand: one
    column each instead of forty); every reader and writer builds it with this same expression, so the same
    inputs give the same text."""
    out = [row]
    for p in parts:
        out += [_SEP, Coalesce(Cast(p, output_field=TextField()), _NULL)]
    return _Joined(*out)


def _experiment_inputs() -> _Joined:
    """Every field of the experiment but ``updated_at``, its rollups' version, its latest ok snapshot and its
    variant-conflict users."""
    return _joined(
        _row_text(Experiment),
        [
            F("rollup_watermark__event_id"),
            F("rollup_watermark__covariate_id"),
            F("rollup_watermark__updated_at"),
            _latest_ok_snapshot(),
            _conflict_users(),
        ],
    )


def _variant_inputs() -> _Joined:
    return _joined(_row_text(Variant), [])


def _metric_inputs() -> _Joined:
    """A metric row's fields and the version of the catalog metrics it links (a ratio's parts too):
    ``Metric.updated_at``, saved by every catalog edit (``experiments.catalog``)."""
    paths = ("metric", "metric__numerator", "metric__denominator")
    return _joined(_row_text(ExperimentMetric), [F(f"{p}__updated_at") for p in paths])


def _fingerprint(experiment: str, variants: list[str], metrics: list[str]) -> str:
    """SHA-256 of the inputs' texts (``_joined``) and the analysis settings."""
    payload = (
        SUMMARY_VERSION,
        (settings.SIGNALDASH_SEQUENTIAL_TUNING, settings.SIGNALDASH_BAYES_PRIOR_SD),
        experiment,
        sorted(variants),
        sorted(metrics),
    )
    return hashlib.sha256(repr(payload).encode()).hexdigest()


def summary_fingerprint(e: Experiment) -> str:
    """The fingerprint of an experiment read with ``with_inputs`` (no query)."""
    return _fingerprint(
        e.summary_inputs, [v.summary_inputs for v in e.variants.all()], [m.summary_inputs for m in e.metrics.all()]
    )


def with_inputs(qs: QuerySet[Experiment]) -> QuerySet[Experiment]:
    """The experiments with their summary inputs and stored summary, in the one statement that reads them, plus
    the variants and metric rows prefetched with theirs."""
    variants = Variant.objects.annotate(summary_inputs=_variant_inputs())
    metrics = ExperimentMetric.objects.annotate(summary_inputs=_metric_inputs())
    return (
        qs.select_related("verdict_summary")
        .prefetch_related(Prefetch("variants", queryset=variants), Prefetch("metrics", queryset=metrics))
        .annotate(
            summary_inputs=_experiment_inputs(),
            summary_wm_event=F("rollup_watermark__event_id"),
            summary_conflict_users=_conflict_users(),  # the count the conflict check reads, as in the inputs
        )
    )


LISTED_FIELDS = ("id", "slug", "name", "status", "started_at", "ended_at", "primary_metric")
_FIELD_AT = {f: i for i, f in enumerate(LISTED_FIELDS)}


@dataclass(frozen=True)
class Listed:
    """One experiment as the list reads it (``listed_get``): the fields it shows and the summary inputs."""

    values: tuple  # LISTED_FIELDS
    owner_name: str
    inputs: str  # _experiment_inputs()
    wm_event: int | None
    stored_fingerprint: str | None
    stored_data: str | None  # the stored summary's JSON text

    def __getattr__(self, name: str):  # the listed fields: x.slug, x.status, x.started_at
        at = _FIELD_AT.get(name)
        if at is None:
            raise AttributeError(name)
        return self.values[at]

    @property
    def pk(self) -> int:
        return self.values[0]

    @property
    def never_caught_up(self) -> bool:
        """No rollup watermark yet: its rollups were never read."""
        return self.wm_event is None

    def get_status_display(self) -> str:
        return Experiment.Status(self.status).label


def listed_get(qs: QuerySet[Experiment]) -> list[Listed]:
    """The experiments of ``qs`` (in its order) with their summary inputs and stored summaries: one statement,
    plain rows (no model instances)."""
    rows = qs.annotate(
        summary_owner=F("owner__username"),
        summary_inputs=_experiment_inputs(),
        summary_wm_event=F("rollup_watermark__event_id"),
        summary_fingerprint=F("verdict_summary__fingerprint"),
        summary_data=Cast("verdict_summary__data", output_field=TextField()),  # decoded when used
    ).values_list(
        *LISTED_FIELDS, "summary_owner", "summary_inputs", "summary_wm_event", "summary_fingerprint", "summary_data"
    )
    n = len(LISTED_FIELDS)
    return [Listed(r[:n], *r[n:]) for r in rows]


def _plans(experiments: QuerySet[Experiment]) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """The inputs of the variants and metric rows of these experiments: two plain queries, each selecting its
    experiments with a subquery (no list of ids to send and parse)."""
    ids = experiments.order_by().values("pk")
    variants: dict[int, list[str]] = defaultdict(list)
    metrics: dict[int, list[str]] = defaultdict(list)
    rows = Variant.objects.filter(experiment__in=ids).annotate(summary_inputs=_variant_inputs()).order_by()
    for experiment_id, text in rows.values_list("experiment_id", "summary_inputs"):
        variants[experiment_id].append(text)
    rows = ExperimentMetric.objects.filter(experiment__in=ids).annotate(summary_inputs=_metric_inputs()).order_by()
    for experiment_id, text in rows.values_list("experiment_id", "summary_inputs"):
        metrics[experiment_id].append(text)
    return variants, metrics


def _stored(e: Experiment) -> VerdictSummary | None:
    try:
        return e.verdict_summary
    except VerdictSummary.DoesNotExist:
        return None


# --- computing one --------------------------------------------------------------------------------------
def needs_full_readout(e: Experiment) -> bool:
    """Whether this experiment must be read like its readout page (more queries, same numbers): its numbers
    come from a warehouse snapshot, or a planned metric has rules (window, cap, filter, count, ratio, funnel)
    that the rollups do not hold, or it has variant-conflict users (users exposed to two variants are left out of
    the readout: ``readouts.exclusions``). No query for an approved plan (its definitions are frozen) nor for the
    conflicts (``with_inputs`` annotates their count)."""
    from experiments.selectors import experiment_metric_definitions  # noqa: PLC0415 - experiments imports readouts
    from readouts.catalog_metrics import rollup_shaped  # noqa: PLC0415

    if e.data_source_id is not None or getattr(e, "summary_conflict_users", 0):
        return True
    if not any(m.metric_id for m in e.metrics.all()):  # prefetched; ad-hoc rows are rule-free binary/mean sums
        return False
    return not all(rollup_shaped(d) for d in experiment_metric_definitions(e).values())


def summarisable(e: Experiment) -> bool:
    """Started, with variants (prefetched): there is something to read."""
    return e.started_at is not None and bool(e.variants.all())


def _summary_of(e: Experiment, readout: Readout) -> Summary:
    checks = checks_get(readout=readout, facts=ViewFacts(e.summary_conflict_users, 0, {}, {}))
    governance = Governance(checks, [], list(e.dimensions or []))
    verdicts = verdicts_get(readout, governance=governance)
    primary = next((r for r in readout.results if r.role == "primary"), readout.results[0])
    by_variant = {c.variant: c for c in primary.comparisons}
    numbers = []
    for v in verdicts:
        c = by_variant.get(v.variant)
        ci = c.rel.rel_lift_ci if c is not None else None
        numbers.append(
            PrimaryNumbers(
                v.variant,
                c.rel.rel_lift if c is not None else None,
                ci.low if ci else None,
                ci.high if ci else None,
                c.p_value if c is not None else None,
            )
        )
    return Summary(
        exposed=sum(v.exposures for v in readout.variants),
        result=result_summary(verdicts, readout),
        verdicts=verdicts,
        numbers=numbers,
        failing=[c.code for c in checks if c.status == FAIL],
    )


def summary_compute(e: Experiment, rows: list[queries.SumsRow]) -> Summary:
    """The summary of one experiment (``e`` from ``with_inputs``): from the summed rollup ``rows``, or, when it
    needs its full readout (``needs_full_readout``), from that readout."""
    variants = [
        VariantInfo(v.pk, v.key, v.name, v.is_control, v.weight)
        for v in sorted(e.variants.all(), key=lambda v: (not v.is_control, v.key))
    ]
    if needs_full_readout(e):  # a warehouse snapshot, catalog rules the rollups cannot represent, conflicts
        readout = readout_get(experiment=e)
    else:
        readout = readout_from_rows(experiment=e, variants=variants, rows=rows, conflicts=None)
    return _summary_of(e, readout)


def rollup_sums(ids: list[int]) -> dict[int, list[queries.SumsRow]]:
    """Each experiment's rollup rows summed over days: one query for every experiment."""
    sums = [Sum(f) for f in rollups.FIELDS]
    rows = (
        Rollup.objects.filter(experiment_id__in=ids)
        .values_list("experiment_id", "kind", "variant_id", "metric")
        .annotate(*sums)
        .order_by()
    )
    out: dict[int, list[queries.SumsRow]] = defaultdict(list)
    for experiment_id, kind, variant, metric, *vec in rows:
        values = dict(zip(rollups.FIELDS, vec, strict=True))
        values = {k: (int(v or 0) if k in rollups.INT_FIELDS else float(v or 0.0)) for k, v in values.items()}
        out[experiment_id].append(
            queries.SumsRow(kind=kind, variant_id=variant or None, metric=metric, day=DAY, **values)
        )
    return out


def _store(computed: list[tuple[Experiment, str, Summary]]) -> None:
    """Upsert the summaries (one statement). Concurrent writers: the last one wins, and a reader compares
    fingerprints, so a lost race costs a recomputation, never a stale row shown."""
    if not computed:
        return
    now = timezone.now()
    VerdictSummary.objects.bulk_create(
        [VerdictSummary(experiment=e, fingerprint=fp, data=s.as_json(), computed_at=now) for e, fp, s in computed],
        update_conflicts=True,
        unique_fields=["experiment"],
        update_fields=["fingerprint", "data", "computed_at"],
    )


# --- reading them (the list, the cron command) ----------------------------------------------------------------
def summaries_current(listed: list[Listed], experiments: QuerySet[Experiment]) -> dict[int, Callable[[], Summary]]:
    """The summary of every summarisable experiment of ``listed`` (``listed_get(experiments)``, where
    ``experiments`` is a queryset selecting the same rows), as a function that returns it (a stored one is
    decoded on its first call): the stored one when its fingerprint is current (two plain queries for the
    variants and metric rows, whatever the number of experiments), else computed now and stored (one
    statement): the stale experiments are read again as models, their rollup sums in one query, plus the full
    readout of the few that need it."""
    started = [x for x in listed if x.started_at is not None]
    variants, metrics = _plans(experiments.filter(started_at__isnull=False)) if started else ({}, {})
    out: dict[int, Callable[[], Summary]] = {}
    stale: list[int] = []
    for x in started:
        if not variants.get(x.pk):
            continue  # nothing to read (summarisable)
        fp = _fingerprint(x.inputs, variants[x.pk], metrics.get(x.pk, []))
        if x.stored_fingerprint == fp:
            out[x.pk] = cache(partial(_decoded, x.stored_data))
        else:
            stale.append(x.pk)
    if stale:
        out.update({pk: partial(_same, s) for pk, s in _recompute(stale).items()})
    return out


def _decoded(text: str) -> Summary:
    return Summary.of_json(json.loads(text))


def _same(summary: Summary) -> Summary:
    return summary


def _recompute(ids: list[int]) -> dict[int, Summary]:
    experiments = [e for e in with_inputs(Experiment.objects.filter(pk__in=ids)) if summarisable(e)]
    sums = rollup_sums([e.pk for e in experiments if not needs_full_readout(e)])
    computed = [(e, summary_fingerprint(e), summary_compute(e, sums.get(e.pk, []))) for e in experiments]
    _store(computed)
    return {e.pk: s for e, _, s in computed}


def summaries_refresh(*, experiment_ids: list[int]) -> int:
    """Bring the stored summaries of these experiments up to date (``manage.py catch_up_rollups``, after the
    catch-ups); returns how many were recomputed."""
    experiments = Experiment.objects.filter(pk__in=experiment_ids).order_by("pk")
    listed = listed_get(experiments)
    before = {x.pk: x.stored_fingerprint for x in listed}
    summaries_current(listed, experiments)
    after = dict(
        VerdictSummary.objects.filter(experiment_id__in=experiment_ids).values_list("experiment_id", "fingerprint")
    )
    return sum(1 for pk, fp in after.items() if before.get(pk) != fp)


# --- the readout views -----------------------------------------------------------------------------------
def summary_after_readout(*, experiment: Experiment, readout: Readout) -> None:
    """Store the summary of a readout a view just computed: ``experiment`` from ``with_inputs`` (so its inputs
    were read before the readout's numbers), ``readout`` of the primary metric. Nothing when the stored summary
    is current; otherwise the list's own computation (``summary_compute``), reusing ``readout`` when the
    experiment needs its full readout."""
    if readout.metric != experiment.primary_metric or not summarisable(experiment):
        return
    fp, stored = summary_fingerprint(experiment), _stored(experiment)
    if stored is not None and stored.fingerprint == fp:
        return
    if needs_full_readout(experiment):
        summary = _summary_of(experiment, readout)
    else:
        summary = summary_compute(experiment, rollup_sums([experiment.pk]).get(experiment.pk, []))
    _store([(experiment, fp, summary)])
