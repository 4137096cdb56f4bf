"""The experiment list (``/``): filters, search, sort, pagination and CSV over every experiment's verdict.

Each started experiment's verdict summary (the verdict per treatment, the primary lift with its interval and
p, the failing checks, the exposed users) is stored as a row keyed by a fingerprint of its inputs
(``readouts.summaries``): the experiments query reads every input — the experiment, its rollup watermark,
its latest ok warehouse snapshot, its variant-conflict users — and the stored summary in one statement, and
the list shows a stored summary only when its fingerprint is current. Stale ones (an experiment caught up,
edited, refreshed from its warehouse since) are recomputed here with the readout's own assembly
(``selectors.readout_from_rows`` on the summed rollups, or the full ``readout_get`` for experiments on a
warehouse source or with catalog rule metrics) and rules (``readouts.verdicts``), and stored; so the list
never contradicts the readout and never shows a stale summary. A fixed number of queries when every summary
is current: the experiments (with the inputs and summaries), their variants, their metric plans, the
decisions and the filter choices.

The rollups are read as of their last catch-up: every readout view catches its experiment up (and stores its
summary), and so does ``manage.py catch_up_rollups`` (for cron, every few minutes). Only a live experiment
whose rollups were never read (no watermark yet) is caught up here, at most ``MAX_CATCH_UPS_PER_REQUEST`` per
request.

Measured (bench/program_list.py, PostgreSQL, this 2-core machine): before the stored summaries, p50 181 ms at
100 experiments and 1,635 ms at 1,000 (the per-experiment readout assembly, ~3.5 ms each, on every request).
With them, every summary current: p50 22 ms at 100 and 53 ms at 1,000 (filtered by verdict and sorted by
exposed users 63 ms, the CSV 75 ms); right after one experiment's catch-up 67 ms; the first request after a
deploy computes and stores every summary once (4.2 s at 1,000; ``catch_up_rollups`` does the live ones first).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from urllib.parse import urlencode

from django.contrib.auth import get_user_model
from django.core.paginator import Page, Paginator
from django.db.models import Q, QuerySet
from django.utils import timezone

from experiments.models import Decision, Experiment
from readouts import rollups, summaries
from readouts.summaries import Listed, PrimaryNumbers, Summary
from readouts.verdicts import LABELS, Verdict, overall_label

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
class Decided:
    """An experiment's decision as the list shows it."""

    outcome: str  # Decision.Outcome
    shipped_variant: str | None  # its key

    @property
    def text(self) -> str:
        """'Shipped treatment', 'Killed'."""
        variant = f" {self.shipped_variant}" if self.shipped_variant else ""
        return f"{Decision.Outcome(self.outcome).label}{variant}"


@dataclass(frozen=True)
class ListRow:
    """One listed experiment. Its stored summary is decoded on first use (the page's rows, the CSV, a verdict
    filter or the sort by exposed users), so a page of 50 out of 1,000 decodes 50."""

    experiment: Listed  # the experiment's fields as attributes (readouts.summaries.Listed)
    days: int | None
    has_readout: bool
    decision: Decided | None = None
    load: Callable[[], Summary] | None = field(default=None, repr=False)  # None: nothing to read yet

    @cached_property
    def summary(self) -> Summary | None:
        return self.load() if self.load is not None else None

    @property
    def exposed(self) -> int | None:
        return self.summary.exposed if self.summary is not None else None

    @property
    def result(self) -> str:
        """The result in words ("" when there is nothing to read yet); the decision once decided."""
        if self.decision is not None:
            return self.decision.text
        return self.summary.result if self.summary is not None else ""

    @property
    def outcome(self) -> str:
        """won | lost | inconclusive | untrustworthy, or the decision: shipped | killed ("": nothing yet)."""
        if self.decision is not None:
            return self.decision.outcome
        return self.summary.label if self.summary is not None else ""

    @property
    def verdicts(self) -> list[Verdict]:
        return self.summary.verdicts if self.summary is not None else []

    @property
    def numbers(self) -> list[PrimaryNumbers]:  # primary metric, per treatment
        return self.summary.numbers if self.summary is not None else []

    @property
    def failing(self) -> list[str]:  # failing check codes
        return self.summary.failing if self.summary is not None else []

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
def _filtered(params: ListParams) -> QuerySet[Experiment]:
    qs = Experiment.objects.all()
    if params.q:
        qs = qs.filter(Q(name__icontains=params.q) | Q(slug__icontains=params.q) | Q(hypothesis__icontains=params.q))
    if params.status:
        qs = qs.filter(status=params.status)
    if params.owner:
        qs = qs.filter(owner__username=params.owner)
    if params.metric:
        qs = qs.filter(primary_metric=params.metric)
    return qs.order_by("-updated_at", "-pk")


def _never_caught_up(experiments: list[Listed]) -> list[int]:
    """Live experiments whose rollups were never read (no watermark yet; read with the experiments)."""
    return [e.pk for e in experiments if e.status in LIVE and e.never_caught_up]


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
def _decisions(qs: QuerySet[Experiment]) -> dict[int, Decided]:
    rows = Decision.objects.filter(experiment__in=qs.order_by().values("pk")).order_by()
    return {pk: Decided(o, v) for pk, o, v in rows.values_list("experiment_id", "outcome", "shipped_variant__key")}


def _row(e: Listed, load: Callable[[], Summary] | None, decision: Decided | None, now: datetime) -> ListRow:
    started = e.started_at is not None
    days = max(0, ((e.ended_at or now) - e.started_at).days) if started else None
    return ListRow(e, days, started or load is not None, decision, load)


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
    qs = _filtered(params)
    experiments = summaries.listed_get(qs)  # with their owners, summary inputs and stored summaries: one statement
    caught_up = _never_caught_up(experiments)[:MAX_CATCH_UPS_PER_REQUEST]
    for pk in caught_up:
        rollups.catch_up(experiment_id=pk)
    if caught_up:  # their inputs changed: read them again (only until every live experiment was read once)
        experiments = summaries.listed_get(qs)
    current = summaries.summaries_current(experiments, qs)
    decisions = _decisions(qs) if experiments else {}
    rows = [_row(e, current.get(e.pk), decisions.get(e.pk), now) for e in experiments]
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
        by_variant = {n.variant: n for n in r.numbers}
        treatments = [(v, by_variant.get(v.variant)) for v in r.verdicts]

        def joined(fn, treatments=treatments) -> str:
            return "; ".join(fn(v, n) for v, n in treatments)

        writer.writerow(
            [
                e.slug,
                _csv_safe(e.name),
                e.status,
                _csv_safe(e.owner_name),
                e.started_at.isoformat() if e.started_at else "",
                e.ended_at.isoformat() if e.ended_at else "",
                _csv_safe(e.primary_metric),
                joined(lambda v, n: _csv_safe(v.variant)),
                joined(lambda v, n: v.label),
                joined(lambda v, n: _num(n.rel_lift if n else None)),
                joined(lambda v, n: _num(n.ci_low if n else None)),
                joined(lambda v, n: _num(n.ci_high if n else None)),
                joined(lambda v, n: _num(n.p_value if n else None)),
            ]
        )
    return buf.getvalue()


def verdict_titles() -> list[tuple[str, str]]:
    from readouts.verdicts import TITLES

    return [(label, TITLES[label]) for label in LABELS]
