"""Stored verdict summaries: what the experiment list and its CSV show of one experiment (issue 17).

A summary is the primary metric's verdict per treatment, its relative lift with the 95% interval and p per
treatment, the failing check codes, the exposed users and the result line — computed exactly as the list
always computed them (``summary_compute``), and kept as one ``readouts.VerdictSummary`` row per experiment,
keyed by a SHA-256 **fingerprint of its inputs** (style rule 8):

- every field of the experiment but ``updated_at`` (status, dates, the analysis settings, the approved plan
  with its frozen metric definitions), its variants, its metric rows and the catalog definitions they link;
- the rollups' version: the watermark's event and covariate ids and its ``updated_at`` (every write to an
  experiment's rollups saves the watermark in the same transaction: ``readouts.rollups``);
- the variant-conflict users (the conflict check), and for a warehouse experiment its latest ok snapshot id;
- the analysis settings the statistics read and ``SUMMARY_VERSION`` (bump it when the rules change).

Every input is read in **one statement** (``with_inputs``: the experiment row, its watermark, its stored
summary, the snapshot id and the conflict users), before any number is read. A summary is then computed from
numbers read after that statement, so its content is never older than its fingerprint; a reader shows a
stored summary only when its fingerprint equals the one of the inputs it just read, so a stored summary is
never older than what the readout would show from the same rollups. (A summary whose content came out newer
than its fingerprint — a catch-up committed in between — simply mismatches next time and is recomputed.)

Writers: the experiment list (only the rows whose fingerprint is stale, ``summaries_current``),
``manage.py catch_up_rollups`` (every live experiment, after its catch-up) and the readout page and API
(``summary_after_readout``: the readout they just computed, when its inputs were read first).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import date

from django.conf import settings
from django.db.models import Count, F, IntegerField, OuterRef, Prefetch, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from experiments.models import Experiment, ExperimentMetric
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


def with_inputs(qs: QuerySet[Experiment]) -> QuerySet[Experiment]:
    """The experiments with every fingerprint input and the stored summary, in the one statement that reads
    them, plus the variants and metric rows (with their catalog metrics) prefetched."""
    metrics = ExperimentMetric.objects.select_related("metric", "metric__numerator", "metric__denominator")
    return (
        qs.select_related("verdict_summary")
        .prefetch_related("variants", Prefetch("metrics", queryset=metrics))
        .annotate(
            summary_wm_event=F("rollup_watermark__event_id"),
            summary_wm_covariate=F("rollup_watermark__covariate_id"),
            summary_wm_at=F("rollup_watermark__updated_at"),
            summary_snapshot=_latest_ok_snapshot(),
            summary_conflict_users=_conflict_users(),
        )
    )


def _field_values(obj) -> dict:
    fields = obj._meta.concrete_fields
    return {f.attname: getattr(obj, f.attname) for f in fields if f.attname not in UNFINGERPRINTED_FIELDS}


def _catalog_definition(row: ExperimentMetric) -> dict | None:
    from experiments.catalog import metric_definition  # noqa: PLC0415 - the catalog imports experiments' models

    return asdict(metric_definition(row.metric)) if row.metric_id is not None else None


def summary_fingerprint(e: Experiment) -> str:
    """SHA-256 of everything the summary is computed from (``e`` from ``with_inputs``; no query)."""
    payload = {
        "version": SUMMARY_VERSION,
        "experiment": _field_values(e),
        "variants": sorted([v.pk, v.key, v.name, v.is_control, v.weight] for v in e.variants.all()),
        "metrics": sorted(
            ([_field_values(m), _catalog_definition(m)] for m in e.metrics.all()), key=lambda m: m[0]["id"]
        ),
        "rollups": [e.summary_wm_event, e.summary_wm_covariate, e.summary_wm_at],
        "snapshot": e.summary_snapshot,
        "conflict_users": e.summary_conflict_users,
        "settings": [settings.SIGNALDASH_SEQUENTIAL_TUNING, settings.SIGNALDASH_BAYES_PRIOR_SD],
    }
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _stored(e: Experiment) -> VerdictSummary | None:
    try:
        return e.verdict_summary
    except VerdictSummary.DoesNotExist:
        return None


# --- computing one --------------------------------------------------------------------------------------
def needs_full_readout(e: Experiment) -> bool:
    """Whether this experiment must be read like its readout page (more queries, same numbers): its numbers
    come from a warehouse snapshot, or a planned metric has rules (window, cap, filter, count, ratio, funnel)
    that the rollups do not hold. No query for an approved plan (its definitions are frozen)."""
    from experiments.selectors import experiment_metric_definitions  # noqa: PLC0415 - experiments imports readouts
    from readouts.catalog_metrics import rollup_shaped  # noqa: PLC0415

    if e.data_source_id is not None:
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
    if needs_full_readout(e):  # a warehouse snapshot, or catalog rules the rollups cannot represent
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
def summaries_current(experiments: list[Experiment]) -> dict[int, Summary]:
    """The summary of every summarisable experiment (from ``with_inputs``): the stored one when its fingerprint
    is current, else computed now (one rollup query for all of them, plus the full readout of the few that need
    it) and stored (one statement). No query when every stored summary is current."""
    out: dict[int, Summary] = {}
    stale: list[tuple[Experiment, str]] = []
    for e in experiments:
        if not summarisable(e):
            continue
        fp, stored = summary_fingerprint(e), _stored(e)
        if stored is not None and stored.fingerprint == fp:
            out[e.pk] = Summary.of_json(stored.data)
        else:
            stale.append((e, fp))
    if stale:
        sums = rollup_sums([e.pk for e, _ in stale if not needs_full_readout(e)])
        computed = [(e, fp, summary_compute(e, sums.get(e.pk, []))) for e, fp in stale]
        _store(computed)
        out.update({e.pk: s for e, _, s in computed})
    return out


def summaries_refresh(*, experiment_ids: list[int]) -> int:
    """Bring the stored summaries of these experiments up to date (``manage.py catch_up_rollups``, after the
    catch-ups); returns how many were recomputed."""
    experiments = list(with_inputs(Experiment.objects.filter(pk__in=experiment_ids)))
    stale = 0
    for e in experiments:
        stored = _stored(e)
        stale += summarisable(e) and (stored is None or stored.fingerprint != summary_fingerprint(e))
    summaries_current(experiments)
    return stale


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
