"""The learnings library (``/learnings/``): every decided experiment as a body of knowledge.

Each row is one ``experiments.Decision`` with the numbers *frozen at decision time* — the verdicts and the
primary metric's comparisons of the decision's readout snapshot (``Decision.readout_snapshot``), never a fresh
readout, so a learning does not drift when late events arrive or a metric definition changes.

- Search ``?q=`` (name, slug, hypothesis, rationale) and filters ``?metric=`` (primary metric key),
  ``?outcome=`` (shipped | killed), ``?verdict=`` (won | lost | inconclusive | untrustworthy, of any treatment),
  ``?owner=`` (username) and ``?quarter=`` (``2026Q3``: the quarter of the decision), kept in the URL;
  50 a page (``?page=N``); ``?format=csv`` exports exactly the filtered rows.
- **Win rate** of a quarter: of the experiments (in the filtered rows) decided in that quarter, the share that
  were shipped *and* whose shipped variant's verdict, as recorded with the decision, was ``won``. A kill, a
  ship of an inconclusive / lost / untrustworthy treatment, or a decision recorded before verdicts existed is
  not a win; every decided experiment counts in the denominator.
- **Histograms**: per primary metric (named from the catalog when it is a catalog metric), the observed
  relative lifts of every treatment of the filtered decided experiments, in round-width bins.

A fixed number of queries whatever the number of decisions: the decisions with their experiment and owner
(only the snapshot's ``analysis``, ``alpha``, ``verdicts``, ``comparisons`` and ``scorecard`` are read from the
JSON, never the bundle), the catalog names of the metrics shown, and the filter choices.
"""

from __future__ import annotations

import bisect
import csv
import io
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from urllib.parse import urlencode

from django.core.paginator import Page, Paginator
from django.db.models import F, Q
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from experiments.models import Decision, Metric
from readouts import formatting
from readouts.charts import PALETTE, WIDTH, _c, _join, _nice_step, _pct_tick, _svg, _ticks
from readouts.exports import _csv_safe
from readouts.verdicts import LABELS, TITLES, TONES, WON, Verdict

PAGE_SIZE = 50
QUARTER_RE = re.compile(r"(\d{4})Q([1-4])")
OUTCOMES = tuple(Decision.Outcome.values)
FILTER_KEYS = ("q", "metric", "outcome", "verdict", "owner", "quarter")
WIN_RATE_DEFINITION = (
    "Win rate: of the experiments decided in the quarter, the share that were shipped and whose shipped "
    "variant's verdict, recorded with the decision, was Won. Kills, ships of a treatment that did not win, and "
    "decisions recorded without a verdict are not wins; every decided experiment counts in the total."
)


# --- parameters -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LearningsParams:
    q: str = ""
    metric: str = ""
    outcome: str = ""
    verdict: str = ""
    owner: str = ""
    quarter: str = ""
    page: str = "1"

    @classmethod
    def of(cls, data) -> LearningsParams:
        """From the query string; unknown values of the choice filters are ignored (the form shows them unset)."""
        outcome, verdict, quarter = data.get("outcome", ""), data.get("verdict", ""), data.get("quarter", "").upper()
        return cls(
            q=data.get("q", "").strip()[:200],
            metric=data.get("metric", "").strip()[:100],
            outcome=outcome if outcome in OUTCOMES else "",
            verdict=verdict if verdict in LABELS else "",
            owner=data.get("owner", "").strip()[:150],
            quarter=quarter if QUARTER_RE.fullmatch(quarter) else "",
            page=data.get("page", "1"),
        )

    @property
    def query(self) -> str:
        """The search and filters as a query string (no page), for links that keep them."""
        return urlencode({k: getattr(self, k) for k in FILTER_KEYS if getattr(self, k)})


def quarter_of(at: datetime) -> str:
    """'2026Q3' for a moment in July–September 2026 (in the site's time zone)."""
    local = timezone.localtime(at)
    return f"{local.year}Q{(local.month - 1) // 3 + 1}"


def quarter_bounds(quarter: str) -> tuple[datetime, datetime]:
    """[start, end) of a quarter such as '2026Q3', aware, in the site's time zone."""
    year, q = (int(x) for x in QUARTER_RE.fullmatch(quarter).groups())
    start = date(year, 3 * q - 2, 1)
    end = date(year + 1, 1, 1) if q == 4 else date(year, 3 * q + 1, 1)
    tz = timezone.get_current_timezone()
    return datetime(start.year, start.month, 1, tzinfo=tz), datetime(end.year, end.month, 1, tzinfo=tz)


# --- rows -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TreatmentResult:
    """One treatment's primary-metric result as recorded with the decision."""

    variant: str
    label: str  # won | lost | inconclusive | untrustworthy | "" (no verdict recorded)
    reason: str
    blocked_by: tuple[str, ...]
    rel_lift: float | None
    ci_low: float | None
    ci_high: float | None
    interval: str  # "confidence" | "always-valid" (the interval the outcome was decided on)
    guardrails_worse: tuple[str, ...] = ()  # guardrail keys worse for this treatment (for the headline)

    @property
    def title(self) -> str:
        return TITLES.get(self.label, "No verdict recorded")

    @property
    def headline(self) -> str:
        """The verdict's own headline ('Won — ship blocked by guardrail refund'), as everywhere else."""
        if not self.label:
            return self.title
        return Verdict(self.variant, self.label, self.reason, self.blocked_by, self.guardrails_worse).headline

    @property
    def tone(self) -> str:
        return TONES.get(self.label, "neutral")

    @property
    def lift_text(self) -> str:
        """'+11.6% (+5.0% to +18.2%)' for people (no scientific notation, a true minus)."""
        if self.rel_lift is None:
            return "—"
        text = formatting.signed_pct(self.rel_lift, 1)
        if self.ci_low is not None and self.ci_high is not None:
            text += f" ({formatting.signed_pct(self.ci_low, 1)} to {formatting.signed_pct(self.ci_high, 1)})"
        return text


@dataclass(frozen=True)
class LearningRow:
    decision: Decision  # with .experiment and its owner, and .shipped_variant
    quarter: str
    alpha: float
    treatments: list[TreatmentResult] = field(default_factory=list)

    @property
    def experiment(self):
        return self.decision.experiment

    @property
    def shipped_key(self) -> str:
        return self.decision.shipped_variant.key if self.decision.shipped_variant_id else ""

    @property
    def won_and_shipped(self) -> bool:
        """The win-rate rule (``WIN_RATE_DEFINITION``)."""
        if self.decision.outcome != Decision.Outcome.SHIPPED:
            return False
        return any(t.variant == self.shipped_key and t.label == WON for t in self.treatments)

    @property
    def labels(self) -> set[str]:
        return {t.label for t in self.treatments if t.label}

    @property
    def interval_level(self) -> str:
        return f"{(1 - self.alpha) * 100:g}%"


def _interval(value) -> tuple[float | None, float | None]:
    if isinstance(value, list | tuple) and len(value) == 2:
        return value[0], value[1]
    return None, None


def _guardrails_worse(scorecard) -> dict[str, tuple[str, ...]]:
    """Per treatment, the guardrail metrics the snapshot's scorecard reads as worse (as ``verdicts_get`` does)."""
    out: dict[str, list[str]] = defaultdict(list)
    for row in scorecard or []:
        if isinstance(row, dict) and row.get("role") == "guardrail":
            for c in row.get("comparisons") or []:
                if c.get("outcome") == "worse":
                    out[c.get("variant")].append(row.get("metric"))
    return {k: tuple(v) for k, v in out.items()}


def _treatments(analysis: str | None, verdicts, comparisons, scorecard=None) -> list[TreatmentResult]:
    """Per treatment: the recorded verdict and the primary comparison (always-valid interval under sequential)."""
    worse = _guardrails_worse(scorecard)
    by_variant = {c.get("variant"): c for c in comparisons or [] if isinstance(c, dict)}
    verdict_by = {v.get("variant"): v for v in verdicts or [] if isinstance(v, dict)}
    keys = list(verdict_by) + [k for k in by_variant if k not in verdict_by]
    out = []
    for key in keys:
        v, c = verdict_by.get(key, {}), by_variant.get(key, {})
        sequential = analysis == "sequential" and (c.get("sequential") or {}).get("rel_lift_ci") is not None
        low, high = _interval((c.get("sequential") or {}).get("rel_lift_ci") if sequential else c.get("rel_lift_ci"))
        out.append(
            TreatmentResult(
                variant=str(key),
                label=v.get("label", "") if v.get("label") in LABELS else "",
                reason=v.get("reason", ""),
                blocked_by=tuple(v.get("blocked_by") or ()),
                rel_lift=c.get("rel_lift"),
                ci_low=low,
                ci_high=high,
                interval="always-valid" if sequential else "confidence",
                guardrails_worse=worse.get(key, ()),
            )
        )
    return out


def _decisions(params: LearningsParams) -> list[Decision]:
    """The filtered decisions, newest first, with the five snapshot keys the page reads (one query)."""
    qs = (
        Decision.objects.select_related("experiment", "experiment__owner", "shipped_variant")
        .defer("readout_snapshot", "readout_bundle")
        .annotate(
            snap_analysis=F("readout_snapshot__analysis"),
            snap_alpha=F("readout_snapshot__alpha"),
            snap_verdicts=F("readout_snapshot__verdicts"),
            snap_comparisons=F("readout_snapshot__comparisons"),
            snap_scorecard=F("readout_snapshot__scorecard"),
        )
    )
    if params.q:
        q = params.q
        qs = qs.filter(
            Q(experiment__name__icontains=q)
            | Q(experiment__slug__icontains=q)
            | Q(experiment__hypothesis__icontains=q)
            | Q(rationale__icontains=q)
        )
    if params.metric:
        qs = qs.filter(experiment__primary_metric=params.metric)
    if params.outcome:
        qs = qs.filter(outcome=params.outcome)
    if params.owner:
        qs = qs.filter(experiment__owner__username=params.owner)
    if params.quarter:
        start, end = quarter_bounds(params.quarter)
        qs = qs.filter(decided_at__gte=start, decided_at__lt=end)
    return list(qs.order_by("-decided_at", "-pk"))


def _row(d: Decision) -> LearningRow:
    alpha = d.snap_alpha if isinstance(d.snap_alpha, int | float) else d.experiment.alpha
    return LearningRow(
        d,
        quarter_of(d.decided_at),
        float(alpha),
        _treatments(d.snap_analysis, d.snap_verdicts, d.snap_comparisons, d.snap_scorecard),
    )


# --- win rate ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QuarterRate:
    quarter: str
    decided: int
    wins: int

    @property
    def rate(self) -> float:
        return self.wins / self.decided if self.decided else 0.0

    @property
    def rate_text(self) -> str:
        return formatting.pct(self.rate, 0)


def win_rates(rows: list[LearningRow]) -> list[QuarterRate]:
    """Per quarter (newest first): decided experiments and wins (``WIN_RATE_DEFINITION``)."""
    decided: dict[str, int] = defaultdict(int)
    wins: dict[str, int] = defaultdict(int)
    for r in rows:
        decided[r.quarter] += 1
        wins[r.quarter] += r.won_and_shipped
    return [QuarterRate(q, decided[q], wins[q]) for q in sorted(decided, reverse=True)]


# --- histograms -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bin:
    low: float
    high: float
    count: int

    @property
    def text(self) -> str:
        step = self.high - self.low
        return f"{_pct_tick(self.low, step, signed=True)} to {_pct_tick(self.high, step, signed=True)}"


@dataclass(frozen=True)
class Histogram:
    metric: str
    name: str  # the catalog metric's name ("" for an ad-hoc key)
    experiments: int
    bins: list[Bin]

    @property
    def lifts(self) -> int:
        return sum(b.count for b in self.bins)

    @property
    def edges(self) -> list[float]:
        return [self.bins[0].low, *(b.high for b in self.bins)] if self.bins else []


def lift_bins(lifts: list[float]) -> list[Bin]:
    """Counts of ``lifts`` in bins [low, high) of one round width, covering zero and every value (the largest
    value is strictly inside the last bin). At most a dozen bins; none for no values."""
    values = [x for x in lifts if x is not None and math.isfinite(x)]
    if not values:
        return []
    lo, hi = min(*values, 0.0), max(*values, 0.0)
    step = _nice_step(max(hi - lo, 0.02), max_ticks=10)
    first = math.floor(lo / step)  # never above ``lo`` (a rounding error only adds an empty bin)
    last = math.floor(hi / step + 1e-9) + 1  # the top edge is above ``hi`` even when hi / step rounds down
    edges = [k * step for k in range(first, last + 1)]
    counts = [0] * (len(edges) - 1)
    for x in values:
        counts[min(max(bisect.bisect_right(edges, x) - 1, 0), len(counts) - 1)] += 1
    return [Bin(edges[i], edges[i + 1], n) for i, n in enumerate(counts)]


def histograms(rows: list[LearningRow], names: dict[str, str]) -> list[Histogram]:
    """One histogram per primary metric (by key), of every treatment's observed relative lift."""
    lifts: dict[str, list[float]] = defaultdict(list)
    experiments: dict[str, int] = defaultdict(int)
    for r in rows:
        key = r.experiment.primary_metric
        observed = [t.rel_lift for t in r.treatments if t.rel_lift is not None]
        if observed:
            lifts[key].extend(observed)
            experiments[key] += 1
    return [Histogram(k, names.get(k, ""), experiments[k], lift_bins(lifts[k])) for k in sorted(lifts)]


def histogram_svg(h: Histogram) -> SafeString:
    """The bins as bars over a percentage axis with a zero line; each bar carries its count as text."""
    label = f"{h.name} ({h.metric})" if h.name else h.metric
    title = (
        f"Observed relative lift in {label}: {h.lifts} treatment{'s' if h.lifts != 1 else ''} of "
        f"{h.experiments} decided experiment{'s' if h.experiments != 1 else ''}"
    )
    desc = "Treatments per lift range: " + "; ".join(f"{b.text}: {b.count}" for b in h.bins) + "."
    left, right, top, plot_h = 56.0, 16.0, 24.0, 150.0
    step = h.bins[0].high - h.bins[0].low
    lo, hi = h.edges[0], h.edges[-1]
    peak = max(b.count for b in h.bins)
    y_ticks = _ticks(0, max(peak, 1), integer=True, max_ticks=4)
    y_max = y_ticks[-1]

    def x(value: float) -> float:
        return left + (WIDTH - left - right) * (value - lo) / (hi - lo)

    def y(count: float) -> float:
        return top + plot_h - plot_h * count / y_max

    base = top + plot_h
    grid = _join(
        format_html(
            '<line x1="{}" x2="{}" y1="{}" y2="{}" class="grid"/>'
            '<text x="{}" y="{}" text-anchor="end" dominant-baseline="middle" class="tick">{}</text>',
            _c(left),
            _c(WIDTH - right),
            _c(y(t)),
            _c(y(t)),
            _c(left - 8),
            _c(y(t)),
            f"{int(t):,}",
        )
        for t in y_ticks
    )
    every = max(1, math.ceil(len(h.edges) / 12))  # at most about a dozen x labels
    x_labels = _join(
        format_html(
            '<text x="{}" y="{}" text-anchor="middle" class="tick">{}</text>',
            _c(x(e)),
            _c(base + 18),
            _pct_tick(e, step, signed=True),
        )
        for i, e in enumerate(h.edges)
        if i % every == 0 or i == len(h.edges) - 1
    )
    bars = _join(
        format_html(
            '<g class="bin" data-low="{}" data-high="{}" data-count="{}"><title>{}: {} treatment{}</title>'
            '<rect x="{}" y="{}" width="{}" height="{}" fill="{}" stroke="#fff" stroke-width="1"/>{}</g>',
            repr(b.low),
            repr(b.high),
            b.count,
            b.text,
            b.count,
            "" if b.count == 1 else "s",
            _c(x(b.low)),
            _c(y(b.count)),
            _c(x(b.high) - x(b.low)),
            _c(base - y(b.count)),
            PALETTE[1],
            format_html(
                '<text x="{}" y="{}" text-anchor="middle" class="val">{}</text>',
                _c((x(b.low) + x(b.high)) / 2),
                _c(y(b.count) - 5),
                b.count,
            )
            if b.count
            else "",
        )
        for b in h.bins
    )
    zero = format_html(
        '<line x1="{0}" x2="{0}" y1="{1}" y2="{2}" stroke="#1d232b" stroke-width="1.5" class="zero-line"/>',
        _c(x(0.0)),
        _c(top - 8),
        _c(base),
    )
    axis = format_html(
        '<text x="{}" y="{}" text-anchor="middle" class="tick">relative lift of the primary metric</text>',
        _c((left + WIDTH - right) / 2),
        _c(base + 38),
    )
    return _svg("lift-histogram", title, base + 48, grid + bars + zero + x_labels + axis, desc)


# --- the page ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LearningsPage:
    params: LearningsParams
    rows: list[LearningRow]  # every filtered row (the CSV)
    page: Page
    win_rates: list[QuarterRate]
    histograms: list[Histogram]
    owners: list[str]
    metrics: list[str]
    quarters: list[str]
    total: int  # decided experiments, unfiltered

    @property
    def charts(self) -> list[tuple[Histogram, SafeString]]:
        return [(h, histogram_svg(h)) for h in self.histograms]


def _choices() -> tuple[list[str], list[str], list[str], int]:
    """Owners, primary metrics and quarters of every decision, and how many decisions there are (one query)."""
    rows = list(Decision.objects.values_list("experiment__owner__username", "experiment__primary_metric", "decided_at"))
    owners, metrics, quarters = set(), set(), set()
    for owner, metric, at in rows:
        owners.add(owner)
        metrics.add(metric)
        quarters.add(quarter_of(at))
    return sorted(owners), sorted(metrics), sorted(quarters, reverse=True), len(rows)


def learnings_get(*, params: LearningsParams) -> LearningsPage:
    """The filtered learnings, their win rates and histograms, and the requested page (a fixed number of queries)."""
    rows = [_row(d) for d in _decisions(params)]
    if params.verdict:
        rows = [r for r in rows if params.verdict in r.labels]
    keys = sorted({r.experiment.primary_metric for r in rows})
    names = dict(Metric.objects.filter(key__in=keys).values_list("key", "name")) if keys else {}
    owners, metrics, quarters, total = _choices()
    page = Paginator(rows, PAGE_SIZE).get_page(params.page)
    return LearningsPage(params, rows, page, win_rates(rows), histograms(rows, names), owners, metrics, quarters, total)


# --- CSV --------------------------------------------------------------------------------------------------
CSV_COLUMNS = [
    "slug",
    "name",
    "owner",
    "primary_metric",
    "decided_at",
    "quarter",
    "outcome",
    "shipped_variant",
    "won_and_shipped",
    "variant",
    "verdict",
    "rel_lift",
    "rel_lift_ci_low",
    "rel_lift_ci_high",
    "interval",
    "hypothesis",
    "rationale",
]


def _num(x: float | None) -> str:
    return "" if x is None else repr(x)


def learnings_csv(rows: list[LearningRow]) -> str:
    """One line per listed decision (exactly the filtered rows); several treatments are joined with '; ' in the
    same order in every per-treatment column. Exact numbers (fractions), as the other CSVs."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        e, d = r.experiment, r.decision

        def joined(fn, treatments=r.treatments) -> str:
            return "; ".join(fn(t) for t in treatments)

        writer.writerow(
            [
                e.slug,
                _csv_safe(e.name),
                _csv_safe(e.owner.get_username()),
                _csv_safe(e.primary_metric),
                d.decided_at.isoformat(),
                r.quarter,
                d.outcome,
                _csv_safe(r.shipped_key),
                "1" if r.won_and_shipped else "0",
                joined(lambda t: _csv_safe(t.variant)),
                joined(lambda t: t.label),
                joined(lambda t: _num(t.rel_lift)),
                joined(lambda t: _num(t.ci_low)),
                joined(lambda t: _num(t.ci_high)),
                joined(lambda t: t.interval),
                _csv_safe(e.hypothesis),
                _csv_safe(d.rationale),
            ]
        )
    return buf.getvalue()
