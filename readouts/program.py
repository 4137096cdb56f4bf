"""The experiment list (``/``): filters, search, sort, pagination and CSV over every experiment's verdict.

Verdict inputs come from the rollups (``readouts.Rollup``, summed over days
in one query for every listed experiment) and a fixed number of further queries — the experiments with their
owners, variants and metric plans, the decisions, the variant-conflict users, the rollup watermarks and the
filter choices — whatever the number of experiments or the page size. Verdicts are then computed in Python
with the readout's own assembly (``selectors.readout_from_rows``) and rules (``readouts.verdicts``), so the
list can never contradict the readout page.

The rollups are read as of their last catch-up: every readout view catches its experiment up, and so does
``manage.py catch_up_rollups`` (for cron, every few minutes). Only a live experiment whose rollups were never
read (no watermark yet) is caught up here, at most ``MAX_CATCH_UPS_PER_REQUEST`` per request, so the list's
query count stays fixed once every experiment has been read once.

Known cost (bench/program_list.py, PostgreSQL): the queries are cheap (the rollup sums of 100 experiments:
~4 ms). The power plan's solver is memoised on its inputs (``stats._solve_users``), which took the page from
p50 359 ms to 176 ms at 100 experiments; what is left is the per-experiment readout assembly (the comparisons,
the Bayesian lift, the SRM test: ~3.5 ms per started experiment), so the page still does not meet p50 < 200 ms
at 1,000 experiments. Next step: store each experiment's verdict summary at catch-up time, keyed by a
fingerprint of its plan and rollup watermark (style rule 8), and read those rows here.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from urllib.parse import urlencode

from django.contrib.auth import get_user_model
from django.core.paginator import Page, Paginator
from django.db.models import Count, Q, Sum
from django.utils import timezone

from experiments.models import Decision, Experiment
from readouts import queries, rollups
from readouts.governance import FAIL, Governance, ViewFacts, checks_get
from readouts.models import Rollup, RollupWatermark
from readouts.selectors import MetricComparison, Readout, VariantInfo, readout_from_rows, readout_get
from readouts.verdicts import LABELS, Verdict, overall_label, result_summary, verdicts_get
from tracking.models import VariantConflict

PAGE_SIZE = 50
MAX_CATCH_UPS_PER_REQUEST = 10
LIVE = (Experiment.Status.RUNNING, Experiment.Status.READOUT)
SORTS = {  # ?sort= value → key (a leading '-' reverses)
    "name": lambda r: r.experiment.name.lower(),
    "status": lambda r: r.experiment.status,
    "started": lambda r: r.experiment.started_at,
    "exposed": lambda r: r.exposed,
}
FILTER_KEYS = ("q", "status", "owner", "verdict", "metric", "failing", "sort")
DAY = date(1970, 1, 1)  # the list sums the rollups over all days; the readout assembly ignores the day


@dataclass(frozen=True)
class ListParams:
    q: str = ""
    status: str = ""
    owner: str = ""
    verdict: str = ""
    metric: str = ""
    failing: bool = False
    sort: str = ""
    page: str = "1"

    @classmethod
    def of(cls, data) -> ListParams:
        """From the query string; unknown values of the choice filters are ignored (the form shows them unset)."""
        status = data.get("status", "")
        verdict = data.get("verdict", "")
        sort = data.get("sort", "")
        return cls(
            q=data.get("q", "").strip()[:200],
            status=status if status in Experiment.Status.values else "",
            owner=data.get("owner", "").strip()[:150],
            verdict=verdict if verdict in LABELS else "",
            metric=data.get("metric", "").strip()[:100],
            failing=data.get("failing") == "1",
            sort=sort if sort.lstrip("-") in SORTS else "",
            page=data.get("page", "1"),
        )

    def _encode(self, keys: tuple[str, ...]) -> str:
        values = {k: getattr(self, k) for k in keys}
        if "failing" in values:
            values["failing"] = "1" if values["failing"] else ""
        return urlencode({k: v for k, v in values.items() if v})

    @property
    def query(self) -> str:
        """The filters and sort as a query string (no page), for links that keep them."""
        return self._encode(FILTER_KEYS)

    @property
    def query_unsorted(self) -> str:
        """The filters without the sort (the column headers add their own)."""
        return self._encode(tuple(k for k in FILTER_KEYS if k != "sort"))


@dataclass(frozen=True)
class ListRow:
    experiment: Experiment
    exposed: int | None
    days: int | None
    result: str  # the result in words ("" when there is nothing to read yet)
    outcome: str  # won | lost | inconclusive | untrustworthy | shipped | killed | ""
    has_readout: bool
    verdicts: list[Verdict] = field(default_factory=list)
    comparisons: list[MetricComparison] = field(default_factory=list)  # primary metric, per treatment
    failing: list[str] = field(default_factory=list)  # failing check codes
    decision: Decision | None = None

    @property
    def label(self) -> str:
        return overall_label(self.verdicts)


@dataclass(frozen=True)
class ListPage:
    params: ListParams
    rows: list[ListRow]  # every filtered, sorted row (the CSV)
    page: Page
    owners: list[str]
    metrics: list[str]


# --- the queries (a fixed number) -------------------------------------------------------------------
def _experiments(params: ListParams) -> list[Experiment]:
    qs = Experiment.objects.select_related("owner").prefetch_related("variants", "metrics")
    if params.q:
        qs = qs.filter(Q(name__icontains=params.q) | Q(slug__icontains=params.q) | Q(hypothesis__icontains=params.q))
    if params.status:
        qs = qs.filter(status=params.status)
    if params.owner:
        qs = qs.filter(owner__username=params.owner)
    if params.metric:
        qs = qs.filter(primary_metric=params.metric)
    return list(qs.order_by("-updated_at", "-pk"))


def _never_caught_up(experiments: list[Experiment]) -> list[int]:
    """Live experiments whose rollups were never read (no watermark yet): one query."""
    live = [e.pk for e in experiments if e.status in LIVE]
    if not live:
        return []
    known = set(RollupWatermark.objects.filter(experiment_id__in=live).values_list("experiment_id", flat=True))
    return [pk for pk in live if pk not in known]


def _rollup_rows(ids: list[int]) -> dict[int, list[queries.SumsRow]]:
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


def _conflict_users(ids: list[int]) -> dict[int, int]:
    rows = (
        VariantConflict.objects.filter(experiment_id__in=ids)
        .values("experiment_id")
        .annotate(n=Count("user_key", distinct=True))
        .order_by()
    )
    return {r["experiment_id"]: r["n"] for r in rows}


def _choices() -> tuple[list[str], list[str]]:
    owners = list(
        get_user_model()
        .objects.filter(owned_experiments__isnull=False)
        .values_list("username", flat=True)
        .distinct()
        .order_by("username")
    )
    metrics = list(Experiment.objects.values_list("primary_metric", flat=True).distinct().order_by("primary_metric"))
    return owners, metrics


# --- one row ----------------------------------------------------------------------------------------------
def _needs_full_readout(e: Experiment) -> bool:
    """Whether the list must read this experiment like its readout page (more queries, same numbers): its
    numbers come from a warehouse snapshot, or a planned metric has rules (window, cap, filter, count,
    ratio, funnel) that the rollups do not hold. No query for an approved plan (its definitions are frozen)."""
    from experiments.selectors import experiment_metric_definitions
    from readouts.catalog_metrics import rollup_shaped

    if e.data_source_id is not None:
        return True
    if not any(m.metric_id for m in e.metrics.all()):  # prefetched; ad-hoc rows are rule-free binary/mean sums
        return False
    return not all(rollup_shaped(d) for d in experiment_metric_definitions(e).values())


def _verdicts(e: Experiment, rows: list[queries.SumsRow], conflict_users: int) -> tuple[Readout, list, list[str]]:
    variants = [
        VariantInfo(v.pk, v.key, v.name, v.is_control, v.weight)
        for v in sorted(e.variants.all(), key=lambda v: (not v.is_control, v.key))
    ]
    # A warehouse snapshot, catalog rules the rollups cannot represent, or variant conflicts (users exposed to
    # two variants are left out of the readout: readouts.exclusions) — read like the readout page.
    if conflict_users or _needs_full_readout(e):
        readout = readout_get(experiment=e)
    else:
        readout = readout_from_rows(experiment=e, variants=variants, rows=rows, conflicts=None)
    checks = checks_get(readout=readout, facts=ViewFacts(conflict_users, 0, {}, {}))
    governance = Governance(checks, [], list(e.dimensions or []))
    failing = [c.code for c in checks if c.status == FAIL]
    return readout, verdicts_get(readout, governance=governance), failing


def _decision_text(decision: Decision) -> str:
    variant = f" {decision.shipped_variant.key}" if decision.shipped_variant_id else ""
    return f"{decision.get_outcome_display()}{variant}"


def _row(e: Experiment, rows, conflicts: int, decision: Decision | None, now: datetime) -> ListRow:
    started = e.started_at is not None
    days = max(0, ((e.ended_at or now) - e.started_at).days) if started else None
    decided = ("", "") if decision is None else (_decision_text(decision), decision.outcome)
    if not started or not e.variants.all():
        return ListRow(e, None, days, *decided, started, decision=decision)
    readout, verdicts, failing = _verdicts(e, rows, conflicts)
    exposed = sum(v.exposures for v in readout.variants)
    primary = next((r for r in readout.results if r.role == "primary"), readout.results[0])
    result, outcome = result_summary(verdicts, readout), overall_label(verdicts)
    if decision is not None:
        result, outcome = decided
    return ListRow(e, exposed, days, result, outcome, True, verdicts, primary.comparisons, failing, decision)


def _keep(row: ListRow, params: ListParams) -> bool:
    if params.verdict and params.verdict not in {v.label for v in row.verdicts}:
        return False
    return not (params.failing and not row.failing)


def _sorted(rows: list[ListRow], sort: str) -> list[ListRow]:
    """Sorted by ``sort`` ('-' first: descending); rows without a value (not started) last either way."""
    key = SORTS[sort.lstrip("-")]
    known = [r for r in rows if key(r) is not None]
    return sorted(known, key=key, reverse=sort.startswith("-")) + [r for r in rows if key(r) is None]


def experiment_list_get(*, params: ListParams, now: datetime | None = None) -> ListPage:
    """The filtered, sorted list and the requested page (a fixed number of queries; see the module docstring)."""
    now = now or timezone.now()
    experiments = _experiments(params)
    for pk in _never_caught_up(experiments)[:MAX_CATCH_UPS_PER_REQUEST]:
        rollups.catch_up(experiment_id=pk)
    ids = [e.pk for e in experiments if e.started_at is not None]
    sums = _rollup_rows(ids) if ids else {}
    conflicts = _conflict_users(ids) if ids else {}
    decided = Decision.objects.filter(experiment__in=[e.pk for e in experiments]).select_related("shipped_variant")
    decisions = {d.experiment_id: d for d in decided.defer("readout_snapshot", "readout_bundle")} if experiments else {}
    rows = [_row(e, sums.get(e.pk, []), conflicts.get(e.pk, 0), decisions.get(e.pk), now) for e in experiments]
    rows = [r for r in rows if _keep(r, params)]
    if params.sort:
        rows = _sorted(rows, params.sort)
    owners, metrics = _choices()
    page = Paginator(rows, PAGE_SIZE).get_page(params.page)
    return ListPage(params, rows, page, owners, metrics)


# --- CSV --------------------------------------------------------------------------------------------------
CSV_COLUMNS = [
    "slug",
    "name",
    "status",
    "owner",
    "started_at",
    "ended_at",
    "primary_metric",
    "variant",
    "verdict",
    "rel_lift",
    "rel_lift_ci_low",
    "rel_lift_ci_high",
    "p_value",
]


def _csv_safe(text: str) -> str:
    """Neutralise spreadsheet formulas in user-entered text (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _num(x: float | None) -> str:
    return "" if x is None else repr(x)


def experiment_list_csv(rows: list[ListRow]) -> str:
    """One line per listed experiment (exactly the filtered rows); several treatments are joined with '; '
    in the same order in every per-treatment column. Exact numbers (fractions, raw p), as the readout CSV."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        e = r.experiment
        by_variant = {c.variant: c for c in r.comparisons}
        treatments = [(v, by_variant.get(v.variant)) for v in r.verdicts]

        def joined(fn, treatments=treatments) -> str:
            return "; ".join(fn(v, c) for v, c in treatments)

        writer.writerow(
            [
                e.slug,
                _csv_safe(e.name),
                e.status,
                _csv_safe(e.owner.get_username()),
                e.started_at.isoformat() if e.started_at else "",
                e.ended_at.isoformat() if e.ended_at else "",
                _csv_safe(e.primary_metric),
                joined(lambda v, c: _csv_safe(v.variant)),
                joined(lambda v, c: v.label),
                joined(lambda v, c: _num(c.rel.rel_lift if c else None)),
                joined(lambda v, c: _num(c.rel.rel_lift_ci.low if c and c.rel.rel_lift_ci else None)),
                joined(lambda v, c: _num(c.rel.rel_lift_ci.high if c and c.rel.rel_lift_ci else None)),
                joined(lambda v, c: _num(c.p_value if c else None)),
            ]
        )
    return buf.getvalue()


def verdict_titles() -> list[tuple[str, str]]:
    from readouts.verdicts import TITLES

    return [(label, TITLES[label]) for label in LABELS]
