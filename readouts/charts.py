"""Server-side SVG charts (no JavaScript, no CDN, no inline style: presentation attributes only).

Every chart
- is one ``<svg>`` with a ``viewBox`` and ``width="100%"``: it fills its card and scales with it;
- draws a mark for every data point (a single day is a visible point, not an invisible line);
- tells series apart without colour: dash patterns, marker shapes and a legend (or row labels) that wrap
  onto further rows instead of being cut off;
- labels counts with whole numbers and rates with round percentages;
- builds every piece of text with ``format_html`` (escaped).

Public functions (the readout page calls them):
- ``rate_chart_svg(readout)``: each variant's level — conversion rate (binary) or mean (mean metrics) —
  with its 95% interval;
- ``cumulative_chart_svg(readout, series, *, kind)``: cumulative exposed / converted users per day;
- ``effect_chart_svg(readout, *, metric=None)``: each treatment's relative lift with its interval against 0;
- ``lift_timeseries_svg(timeseries)``: cumulative lift per day with the fixed-horizon and always-valid bands.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from scipy import stats as sps

from readouts import formatting
from readouts.selectors import MetricReadout, Readout, VariantReadout

WIDTH = 960  # viewBox width: about 1:1 in a full-width card, scaled down on narrow screens
FONT_PX = 13
CHAR_PX = 0.62 * FONT_PX  # a generous average glyph width, so estimated text widths never fall short
PALETTE = ["#475467", "#2f5bea", "#e04f16", "#067647", "#9e77ed", "#c11574", "#0e9384", "#b54708"]
DASHES = ["", "8 4", "2 3", "10 3 2 3", "5 5", "1 4", "12 4 4 4", "6 2"]
MARKERS = ["circle", "square", "triangle", "diamond", "triangle-down", "plus", "cross", "star"]
OUTCOME_STYLE = {
    # outcome: (colour, marker, label) — the label makes the outcome readable without colour
    "better": ("#067647", "circle", "Better"),
    "worse": ("#b42318", "diamond", "Worse"),
    "inconclusive": ("#667085", "circle-open", "Inconclusive"),
    "untrustworthy": ("#b54708", "square", "Untrustworthy"),  # a failing check: no outcome is read
}
MINUS = formatting.MINUS


# --- small helpers --------------------------------------------------------------------------------------
def _c(value: float) -> str:
    """An SVG coordinate."""
    return f"{value:.1f}"


def _variant_label(v: VariantReadout) -> str:
    """The variant key, marked as the control unless its key already says so."""
    return f"{v.key} (control)" if v.is_control and "control" not in v.key else v.key


def _text_width(text: str) -> float:
    return len(text) * CHAR_PX


def _wrap(text: str, max_w: float) -> list[str]:
    """Split a label into lines that fit ``max_w``, preferably after '-', '_' or ' ' (never dropping a character)."""
    max_chars = max(8, int(max_w // CHAR_PX))
    lines = []
    while len(text) > max_chars:
        cut = max((text.rfind(ch, 0, max_chars) for ch in "-_ "), default=-1)
        cut = cut + 1 if cut >= max_chars // 2 else max_chars
        lines.append(text[:cut])
        text = text[cut:]
    return [*lines, text]


def _row_label(lines: list[str], x: float, cy: float, line_h: float = FONT_PX + 3) -> SafeString:
    """A right-aligned row label of one or more lines, vertically centred on ``cy``."""
    first = cy - line_h * (len(lines) - 1) / 2
    spans = format_html_join(
        "", '<tspan x="{}" y="{}">{}</tspan>', ((_c(x), _c(first + i * line_h), t) for i, t in enumerate(lines))
    )
    return format_html('<text text-anchor="end" dominant-baseline="middle" class="lbl">{}</text>', spans)


def _rows(labels: list[str], max_w: float, min_h: float) -> tuple[list[list[str]], list[float], float]:
    """Wrapped labels, each row's centre y (from 0) and the total height."""
    wrapped = [_wrap(t, max_w) for t in labels]
    centres, y = [], 0.0
    for lines in wrapped:
        h = max(min_h, (FONT_PX + 3) * len(lines) + 12)
        centres.append(y + h / 2)
        y += h
    return wrapped, centres, y


def _join(parts: Iterable[SafeString]) -> SafeString:
    return mark_safe("".join(parts))  # every part was built with format_html


def _marker(shape: str, x: float, y: float, colour: str, size: float = 5.0, cls: str = "mark") -> SafeString:
    """A point marker; the shape alone tells series apart (readable without colour)."""
    return mark_safe(str(_marker_shape(shape, x, y, colour, size)).replace('class="mark"', f'class="{cls}"', 1))


def _marker_shape(shape: str, x: float, y: float, colour: str, size: float) -> SafeString:
    s = size
    if shape == "circle":
        return format_html('<circle class="mark" cx="{}" cy="{}" r="{}" fill="{}"/>', _c(x), _c(y), _c(s), colour)
    if shape == "circle-open":
        return format_html(
            '<circle class="mark" cx="{}" cy="{}" r="{}" fill="#fff" stroke="{}" stroke-width="2.5"/>',
            _c(x),
            _c(y),
            _c(s),
            colour,
        )
    if shape == "square":
        return format_html(
            '<rect class="mark" x="{}" y="{}" width="{}" height="{}" fill="{}"/>',
            _c(x - s),
            _c(y - s),
            _c(2 * s),
            _c(2 * s),
            colour,
        )
    points = {
        "triangle": [(0, -1.25), (1.15, 0.85), (-1.15, 0.85)],
        "triangle-down": [(0, 1.25), (1.15, -0.85), (-1.15, -0.85)],
        "diamond": [(0, -1.35), (1.1, 0), (0, 1.35), (-1.1, 0)],
        "star": [
            (0, -1.4),
            (0.4, -0.4),
            (1.4, -0.4),
            (0.6, 0.2),
            (0.9, 1.2),
            (0, 0.6),
            (-0.9, 1.2),
            (-0.6, 0.2),
            (-1.4, -0.4),
            (-0.4, -0.4),
        ],
    }
    if shape in points:
        path = " ".join(f"{_c(x + dx * s)},{_c(y + dy * s)}" for dx, dy in points[shape])
        return format_html('<polygon class="mark" points="{}" fill="{}"/>', path, colour)
    # plus / cross: two strokes
    d = s * 1.2
    if shape == "plus":
        lines = ((x - d, y, x + d, y), (x, y - d, x, y + d))
    else:
        lines = ((x - d, y - d, x + d, y + d), (x - d, y + d, x + d, y - d))
    return format_html(
        '<g class="mark">{}</g>',
        format_html_join(
            "",
            '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="2.5"/>',
            ((_c(a), _c(b), _c(c), _c(e), colour) for a, b, c, e in lines),
        ),
    )


@dataclass(frozen=True)
class _LegendItem:
    text: str
    colour: str
    dash: str = ""
    marker: str | None = None
    swatch: str = "line"  # line | band | band-dashed


def _legend(
    items: Sequence[_LegendItem], *, top: float, left: float = 12, width: float = WIDTH
) -> tuple[SafeString, float]:
    """A legend whose entries wrap onto further rows (never cut off); returns (markup, height used)."""
    row_h, swatch_w, gap = FONT_PX + 9, 30, 22
    x, y, parts = left, top + row_h / 2, []
    for item in items:
        item_w = swatch_w + 6 + _text_width(item.text)
        if x > left and x + item_w > width - 8:
            x, y = left, y + row_h
        if item.swatch == "line":
            swatch = format_html(
                '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="{}" stroke-width="2.5" stroke-dasharray="{}"/>',
                _c(x),
                _c(x + swatch_w),
                _c(y),
                _c(y),
                item.colour,
                item.dash or "none",
            )
            if item.marker:
                swatch += _marker(item.marker, x + swatch_w / 2, y, item.colour, 4.5, cls="legend-mark")
        else:
            swatch = format_html(
                '<rect x="{}" y="{}" width="{}" height="{}" fill="{}" fill-opacity="{}" stroke="{}" '
                'stroke-dasharray="{}"/>',
                _c(x),
                _c(y - 6),
                swatch_w,
                12,
                item.colour,
                "0.35" if item.swatch == "band" else "0.12",
                item.colour,
                "4 3" if item.swatch == "band-dashed" else "none",
            )
        parts.append(
            format_html(
                '<g class="legend-item">{}<text x="{}" y="{}" dominant-baseline="middle" class="legend">{}</text></g>',
                swatch,
                _c(x + swatch_w + 6),
                _c(y),
                item.text,
            )
        )
        x += item_w + gap
    height = (y - top) + row_h / 2 + 4
    return format_html('<g class="legend">{}</g>', _join(parts)), height


def _svg(css_class: str, title: str, height: float, body: SafeString, desc: str = "") -> SafeString:
    return format_html(
        '<svg class="chart sd-chart {}" role="img" viewBox="0 0 {} {}" width="100%" '
        'preserveAspectRatio="xMinYMin meet" font-size="{}" aria-label="{}"><title>{}</title>{}{}</svg>',
        css_class,
        WIDTH,
        _c(height),
        FONT_PX,
        title,
        title,
        format_html("<desc>{}</desc>", desc) if desc else "",
        body,
    )


def _nice_step(span: float, max_ticks: int = 6, *, integer: bool = False) -> float:
    """A round tick step (1, 2, 2.5 or 5 times a power of ten) giving at most ``max_ticks`` intervals."""
    if span <= 0:
        return 1.0
    raw = span / max_ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    steps = (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)
    step = next(m * magnitude for m in steps if m * magnitude >= raw)
    return max(1.0, round(step)) if integer else step


def _ticks(low: float, high: float, *, integer: bool = False, max_ticks: int = 6) -> list[float]:
    """Round tick values covering [low, high] (the first and last tick are the axis bounds)."""
    step = _nice_step(high - low, max_ticks, integer=integer)
    start = math.floor(low / step + 1e-9) * step
    end = math.ceil(high / step - 1e-9) * step
    count = round((end - start) / step)
    return [start + k * step for k in range(count + 1)] or [start]


def _decimals(step: float) -> int:
    """Decimals needed to print multiples of ``step`` exactly (0.5 → 1, 2.5 → 1, 10 → 0)."""
    for d in range(0, 6):
        if abs(step * 10**d - round(step * 10**d)) < 1e-9:
            return d
    return 6


def _pct_tick(value: float, step: float, *, signed: bool = False) -> str:
    """A tick label for a fraction, as a round percentage: 0.05 → '5%', 0.025 with step 0.005 → '2.5%'."""
    if abs(value) < 1e-12:
        return "0%"
    d = _decimals(step * 100)
    text = f"{value * 100:+.{d}f}%" if signed else f"{value * 100:.{d}f}%"
    return text.replace("-", MINUS)


def _number_tick(value: float, step: float) -> str:
    d = _decimals(step)
    return f"{value:,.{d}f}".replace("-", MINUS)


def _date_labels(days: Sequence[date], max_labels: int = 8) -> list[int]:
    """Indexes of the days to label: first, last and evenly spaced ones in between."""
    n = len(days)
    if n <= max_labels:
        return list(range(n))
    step = math.ceil((n - 1) / (max_labels - 1))
    picks = list(range(0, n - 1, step))
    if n - 1 - picks[-1] < step / 2:
        picks.pop()
    return [*picks, n - 1]


def _day_text(d: date | str) -> str:
    if isinstance(d, str):
        d = date.fromisoformat(d)
    return f"{d:%b} {d.day}"


# --- rate (or mean) per variant ---------------------------------------------------------------------------
def _mean_interval(v: VariantReadout, alpha: float) -> tuple[float, float] | None:
    """The 95% t-interval of a variant's mean (mean ± t·sd/√n); None below two users."""
    s = v.summary
    if s.mean is None or s.sd is None or v.exposures < 2:
        return None
    half = float(sps.t.ppf(1 - alpha / 2, v.exposures - 1)) * s.sd / math.sqrt(v.exposures)
    return s.mean - half, s.mean + half


def _levels(readout: Readout) -> list[tuple[VariantReadout, float | None, tuple[float, float] | None]]:
    """(variant, level, interval): the conversion rate with its Wilson interval, or the mean with its t-interval."""
    if readout.metric_kind == "binary":
        return [(v, v.rate.rate, (v.rate.ci.low, v.rate.ci.high) if v.rate.ci else None) for v in readout.variants]
    return [(v, v.summary.mean, _mean_interval(v, 0.05)) for v in readout.variants]


def rate_chart_svg(readout: Readout) -> SafeString:
    """Each variant's conversion rate (binary) or mean (mean metric) as a dot with its 95% interval."""
    binary = readout.metric_kind == "binary"
    what = "Conversion rate" if binary else f"Mean {readout.metric} per exposed user"
    title = f"{what} per variant with 95% intervals"
    rows = _levels(readout)
    labels = [_variant_label(v) for v, _, _ in rows]
    label_w = min(WIDTH * 0.4, max([_text_width(t) for t in labels] + [80]) + 16)
    values = [x for _, level, ci in rows if level is not None for x in (level, *(ci or ()))]
    low = min([0.0, *values])
    high = max([*values, 0.0]) or (0.01 if binary else 1.0)
    ticks = _ticks(low, high, max_ticks=5)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    axis_lo, axis_hi = ticks[0], ticks[-1]

    def fmt(value: float) -> str:
        return formatting.pct(value) if binary else formatting.number(value)

    value_w = max([_text_width(fmt(level)) for _, level, _ in rows if level is not None] + [60]) + 16
    plot_x0, plot_x1 = label_w, WIDTH - value_w - 12
    wrapped, centres, rows_h = _rows(labels, label_w - 16, 36)
    top = 12

    def x(value: float) -> float:
        return plot_x0 + (plot_x1 - plot_x0) * (value - axis_lo) / ((axis_hi - axis_lo) or 1)

    parts = []
    for i, (v, level, ci) in enumerate(rows):
        cy = top + centres[i]
        colour = PALETTE[i % len(PALETTE)]
        parts.append(_row_label(wrapped[i], label_w - 10, cy))
        if level is None:
            parts.append(
                format_html(
                    '<text x="{}" y="{}" dominant-baseline="middle" class="muted-svg">no exposed users yet</text>',
                    _c(plot_x0 + 4),
                    _c(cy),
                )
            )
            continue
        lo, hi = ci if ci else (level, level)
        interval = f" (95% CI {fmt(lo)} to {fmt(hi)})" if ci else ""
        parts.append(
            format_html(
                '<g class="variant-rate" data-variant="{key}">'
                '<line x1="{lo}" x2="{hi}" y1="{y}" y2="{y}" stroke="{colour}" stroke-width="2"/>'
                '<line x1="{lo}" x2="{lo}" y1="{y0}" y2="{y1}" stroke="{colour}" stroke-width="2"/>'
                '<line x1="{hi}" x2="{hi}" y1="{y0}" y2="{y1}" stroke="{colour}" stroke-width="2"/>'
                '<circle class="mark" cx="{mid}" cy="{y}" r="5.5" fill="{colour}">'
                "<title>{key}: {value}{interval}</title></circle>"
                '<text x="{label_x}" y="{y}" dominant-baseline="middle" class="val">{value}</text></g>',
                key=v.key,
                lo=_c(x(lo)),
                hi=_c(x(hi)),
                mid=_c(x(level)),
                y=_c(cy),
                y0=_c(cy - 7),
                y1=_c(cy + 7),
                colour=colour,
                value=fmt(level),
                interval=interval,
                label_x=_c(x(hi) + 8),
            )
        )
    axis_y = top + max(rows_h, 36)
    tick_text = (lambda t: _pct_tick(t, step)) if binary else (lambda t: _number_tick(t, step))
    grid = format_html_join(
        "",
        '<line x1="{0}" x2="{0}" y1="{1}" y2="{2}" class="grid"/>'
        '<text x="{0}" y="{3}" text-anchor="middle" class="tick">{4}</text>',
        ((_c(x(t)), top, axis_y, axis_y + 18, tick_text(t)) for t in ticks),
    )
    return _svg("rate-chart", title, axis_y + 28, grid + _join(parts))


# --- cumulative users per day -----------------------------------------------------------------------------
def cumulative_chart_svg(readout: Readout, series: dict, *, kind: str) -> SafeString:
    """Cumulative exposed (kind='exposures') or converted users (kind='conversions') per variant and UTC day.

    Every day is a marker on every line (so one day of data shows), each variant has its own dash pattern
    and marker shape (overlapping lines in a 50/50 test stay distinguishable), the y axis counts whole users.
    """
    days = series["days"]
    noun = "exposed" if kind == "exposures" else "converted"
    title = f"Cumulative {noun} users by day"
    if not days:
        return format_html('<p class="muted chart-empty">{}: no events yet.</p>', title)
    values = series[kind]
    left, right, top = 72, 24, 14
    plot_h = 220
    y_max = max([max(p) for p in values.values() if p] + [0])
    ticks = _ticks(0, max(y_max, 1), integer=True, max_ticks=5)
    axis_hi = ticks[-1]
    n = len(days)
    plot_w = WIDTH - left - right
    inset = 24 if n > 1 else 0

    def px(i: int) -> float:
        return left + inset + ((plot_w - 2 * inset) * i / (n - 1) if n > 1 else plot_w / 2)

    def py(v: float) -> float:
        return top + plot_h - plot_h * v / axis_hi

    spacing = (plot_w - 2 * inset) / (n - 1) if n > 1 else plot_w
    dodge = min(10.0, spacing / (len(readout.variants) + 1))
    lines, legend_items = [], []
    for i, v in enumerate(readout.variants):
        pts = values.get(v.key, [])
        colour, dash, shape = PALETTE[i % len(PALETTE)], DASHES[i % len(DASHES)], MARKERS[i % len(MARKERS)]
        last = pts[-1] if pts else 0
        label = f"{_variant_label(v)}: {formatting.count(last)}"
        legend_items.append(_LegendItem(label, colour, dash, shape))
        coords = [(px(j), py(val)) for j, val in enumerate(pts)]
        line = (
            format_html(
                '<polyline points="{}" fill="none" stroke="{}" stroke-width="2.5" stroke-dasharray="{}"/>',
                " ".join(f"{_c(a)},{_c(b)}" for a, b in coords),
                colour,
                dash or "none",
            )
            if len(coords) > 1
            else ""
        )
        # Markers of coinciding series (a 50/50 test's exposures) sit side by side instead of on top.
        shift = (i - (len(readout.variants) - 1) / 2) * dodge
        marks = _join(_marker(shape, a + shift, b, colour, 4.5 if n <= 60 else 2.5) for a, b in coords)
        lines.append(
            format_html('<g class="series" data-variant="{}"><title>{}</title>{}{}</g>', v.key, label, line, marks)
        )
    grid = format_html_join(
        "",
        '<line x1="{0}" x2="{1}" y1="{2}" y2="{2}" class="grid"/>'
        '<text x="{3}" y="{2}" text-anchor="end" dominant-baseline="middle" class="tick">{4}</text>',
        ((left, WIDTH - right, _c(py(t)), left - 8, formatting.count(int(t))) for t in ticks),
    )
    x_axis_y = top + plot_h
    x_labels = format_html_join(
        "",
        '<text x="{}" y="{}" text-anchor="middle" class="tick">{}</text>',
        ((_c(px(j)), x_axis_y + 18, _day_text(days[j])) for j in _date_labels(days)),
    )
    legend, legend_h = _legend(legend_items, top=x_axis_y + 30)
    body = grid + x_labels + _join(lines) + legend
    desc = "; ".join(item.text for item in legend_items)
    return _svg(f"cumulative-chart cumulative-{kind}", title, x_axis_y + 30 + legend_h, body, desc)


# --- relative lift per treatment against zero -----------------------------------------------------------
def _metric_result(readout: Readout, metric: str | None) -> MetricReadout:
    if metric is None:
        return readout.selected
    return next((r for r in readout.results if r.key == metric), readout.selected)


def _lift_interval(c, analysis: str):
    """The interval the outcome was decided on: always-valid under sequential analysis, else fixed-horizon."""
    if analysis == "sequential" and c.sequential.rel_lift_ci is not None:
        return c.sequential.rel_lift_ci
    return c.rel.rel_lift_ci


def _lift_axis(values: Sequence[float]) -> list[float]:
    """Round ticks covering every value and zero (at least −1% to +1%)."""
    lo, hi = min([*values, 0.0]), max([*values, 0.0])
    if hi - lo < 0.02:
        lo, hi = min(lo, -0.01), max(hi, 0.01)
    return _ticks(lo, hi, max_ticks=6)


def effect_chart_svg(readout: Readout, *, metric: str | None = None, untrustworthy: bool = False) -> SafeString:
    """Each treatment's relative lift (dot) with its interval (whisker) against a zero line.

    Colour and marker follow the comparison's outcome, and a text label ("Better", "Worse", "Inconclusive")
    says it without colour. Under sequential analysis the whisker is the always-valid interval (the one the
    outcome is decided on), otherwise the fixed-horizon one; the chart's title says which. ``untrustworthy``
    (the verdict, ``readouts.verdicts``): every treatment reads "Untrustworthy" instead of its outcome.
    """
    result = _metric_result(readout, metric)
    sequential = readout.analysis == "sequential"
    level = f"{(1 - readout.alpha) * 100:g}%"
    interval_name = f"{level} always-valid interval" if sequential else f"{level} confidence interval"
    title = f"Relative lift in {result.key} against {_control_key(result)}, with its {interval_name}"
    if not result.comparisons:
        return format_html('<p class="muted chart-empty">{}: nothing to compare yet.</p>', title)
    rows = []
    for c in result.comparisons:
        ci = _lift_interval(c, readout.analysis)
        rows.append((c, c.rel.rel_lift, ci))
    values = [x for _, lift, ci in rows if lift is not None for x in (lift, *((ci.low, ci.high) if ci else ()))]
    ticks = _lift_axis(values)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 0.01
    labels = [f"{c.variant} vs {c.control}" for c, _, _ in rows]
    label_w = min(WIDTH * 0.35, max(_text_width(t) for t in labels) + 16)
    verdict_w = _text_width("+999.9% (−999.9% to +999.9%) · Untrustworthy") + 12
    plot_x0, plot_x1 = label_w, WIDTH - verdict_w
    wrapped, centres, rows_h = _rows(labels, label_w - 16, 40)
    top = 12
    lo, hi = ticks[0], ticks[-1]

    def x(value: float) -> float:
        value = min(max(value, lo), hi)
        return plot_x0 + (plot_x1 - plot_x0) * (value - lo) / ((hi - lo) or 1)

    parts = []
    for i, (c, lift, ci) in enumerate(rows):
        label = labels[i]
        cy = top + centres[i]
        outcome = "untrustworthy" if untrustworthy else c.outcome
        colour, shape, word = OUTCOME_STYLE.get(outcome, OUTCOME_STYLE["inconclusive"])
        parts.append(_row_label(wrapped[i], label_w - 10, cy))
        if lift is None:
            parts.append(
                format_html(
                    '<text x="{}" y="{}" dominant-baseline="middle" class="muted-svg">{}</text>',
                    _c(plot_x0 + 4),
                    _c(cy),
                    c.rel.reason or "No estimate yet.",
                )
            )
            continue
        summary = formatting.signed_pct(lift, 1)
        if ci is not None:
            summary += f" ({formatting.signed_pct(ci.low, 1)} to {formatting.signed_pct(ci.high, 1)})"
        whisker = (
            format_html(
                '<line x1="{lo}" x2="{hi}" y1="{y}" y2="{y}" stroke="{c}" stroke-width="2.5"/>'
                '<line x1="{lo}" x2="{lo}" y1="{y0}" y2="{y1}" stroke="{c}" stroke-width="2.5"/>'
                '<line x1="{hi}" x2="{hi}" y1="{y0}" y2="{y1}" stroke="{c}" stroke-width="2.5"/>',
                lo=_c(x(ci.low)),
                hi=_c(x(ci.high)),
                y=_c(cy),
                y0=_c(cy - 8),
                y1=_c(cy + 8),
                c=colour,
            )
            if ci is not None
            else ""
        )
        parts.append(
            format_html(
                '<g class="effect" data-variant="{}" data-outcome="{}"><title>{}: {} — {}</title>{}{}'
                '<text x="{}" y="{}" dominant-baseline="middle" class="val outcome-label">{} · {}</text></g>',
                c.variant,
                c.outcome,
                label,
                summary,
                word,
                whisker,
                _marker(shape, x(lift), cy, colour, 6),
                _c(plot_x1 + 12),
                _c(cy),
                summary,
                word,
            )
        )
    axis_y = top + rows_h
    grid = format_html_join(
        "",
        '<line x1="{0}" x2="{0}" y1="{1}" y2="{2}" class="{5}"/>'
        '<text x="{0}" y="{3}" text-anchor="middle" class="tick">{4}</text>',
        (
            (_c(x(t)), top, axis_y, axis_y + 18, _pct_tick(t, step, signed=True), "zero" if abs(t) < 1e-12 else "grid")
            for t in ticks
        ),
    )
    zero = format_html(
        '<line x1="{0}" x2="{0}" y1="{1}" y2="{2}" stroke="#1d232b" stroke-width="1.5" class="zero-line"/>',
        _c(x(0.0)),
        top - 4,
        axis_y,
    )
    return _svg("effect-chart", title, axis_y + 28, grid + zero + _join(parts))


def _control_key(result: MetricReadout) -> str:
    return next((v.key for v in result.variants if v.is_control), "control")


# --- cumulative lift over time with both bands -----------------------------------------------------------
def _finite_points(points: list[dict]) -> list[tuple[int, dict]]:
    return [(j, p) for j, p in enumerate(points) if p.get("rel_lift") is not None]


def _band(
    coords_lo: list[tuple[float, float]],
    coords_hi: list[tuple[float, float]],
    colour: str,
    *,
    opacity: str,
    dashed: bool,
    cls: str,
) -> SafeString:
    """A filled band between two lines; one point becomes a visible bar (a band needs two)."""
    if not coords_lo:
        return SafeString("")
    dash = "4 3" if dashed else "none"
    if len(coords_lo) == 1:
        (x0, y_lo), (_, y_hi) = coords_lo[0], coords_hi[0]
        half = 14 if dashed else 8
        return format_html(
            '<rect class="{}" x="{}" y="{}" width="{}" height="{}" fill="{}" fill-opacity="{}" stroke="{}" '
            'stroke-dasharray="{}"/>',
            cls,
            _c(x0 - half),
            _c(min(y_lo, y_hi)),
            2 * half,
            _c(max(1.0, abs(y_lo - y_hi))),
            colour,
            opacity,
            colour,
            dash,
        )
    outline = [*coords_hi, *reversed(coords_lo)]
    return format_html(
        '<polygon class="{}" points="{}" fill="{}" fill-opacity="{}" stroke="{}" stroke-dasharray="{}"/>',
        cls,
        " ".join(f"{_c(a)},{_c(b)}" for a, b in outline),
        colour,
        opacity,
        colour,
        dash,
    )


def _lift_range(treatments: list[dict]) -> tuple[float, float]:
    """The y range: the lifts and fixed-horizon bounds of the later two thirds of the days (the first days'
    intervals are huge and would flatten the rest; they are cut at the edge); the always-valid band may add at
    most as much again."""
    core, wide = [], []
    for t in treatments:
        points = [p for p in t["points"] if p.get("rel_lift") is not None]
        for p in points[len(points) // 3 :] if len(points) >= 4 else points:
            core.append(p["rel_lift"])
            core += p.get("rel_lift_ci") or []
            wide += (p.get("sequential") or {}).get("rel_lift_ci") or []
    if not core:
        return -0.01, 0.01
    lo, hi = min([*core, 0.0]), max([*core, 0.0])
    span = max(hi - lo, 0.02)
    lo = max(min([lo, *wide]), lo - span)
    hi = min(max([hi, *wide]), hi + span)
    return lo, hi


def lift_timeseries_svg(timeseries: dict) -> SafeString:
    """Per treatment (one panel each): the cumulative relative lift by UTC day (line with a marker per day),
    the fixed-horizon interval (darker band) and the always-valid interval (lighter, dashed band), and zero.

    ``timeseries`` is ``readouts.selectors.readout_timeseries(readout=...)``. The always-valid band can be
    very wide early on; it is cut at the panel's edge (the tooltip of each day gives the full interval).
    """
    days = timeseries.get("days") or []
    metric = timeseries.get("metric", "")
    level = f"{(1 - float(timeseries.get('alpha') or 0.05)) * 100:g}%"
    title = f"Cumulative relative lift in {metric} by day, with {level} fixed-horizon and always-valid intervals"
    treatments = [t for t in timeseries.get("treatments", []) if _finite_points(t["points"])]
    if not days or not treatments:
        return format_html('<p class="muted chart-empty">{}: no estimate yet.</p>', title)
    index = {d: j for j, d in enumerate(days)}
    n = len(days)
    lo, hi = _lift_range(treatments)
    ticks = _ticks(lo, hi, max_ticks=5)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 0.01
    lo, hi = ticks[0], ticks[-1]
    left, right, panel_h, head_h, gap = 72, 24, 170, 24, 34
    plot_w = WIDTH - left - right
    inset = 24 if n > 1 else 0
    legend, legend_h = _legend(
        [
            _LegendItem("cumulative lift (one mark per day)", PALETTE[1], "", "circle"),
            _LegendItem(
                f"{level} fixed-horizon interval (valid at the planned sample only)", PALETTE[1], swatch="band"
            ),
            _LegendItem(f"{level} always-valid interval (valid whenever you look)", PALETTE[1], swatch="band-dashed"),
        ],
        top=4,
    )
    y0 = legend_h + 10

    def px(j: int) -> float:
        return left + inset + ((plot_w - 2 * inset) * j / (n - 1) if n > 1 else plot_w / 2)

    panels = []
    for k, t in enumerate(treatments):
        top = y0 + k * (head_h + panel_h + gap) + head_h

        def py(v: float, top: float = top) -> float:
            v = min(max(v, lo), hi)
            return top + panel_h - panel_h * (v - lo) / ((hi - lo) or 1)

        colour = PALETTE[(k + 1) % len(PALETTE)]
        pts = [(index.get(p["day"], j), p) for j, p in _finite_points(t["points"])]
        fixed = [(j, p["rel_lift_ci"]) for j, p in pts if p.get("rel_lift_ci")]
        seq = [(j, (p.get("sequential") or {}).get("rel_lift_ci")) for j, p in pts]
        seq = [(j, ci) for j, ci in seq if ci]
        bands = _band(
            [(px(j), py(ci[0])) for j, ci in seq],
            [(px(j), py(ci[1])) for j, ci in seq],
            colour,
            opacity="0.12",
            dashed=True,
            cls="band-sequential",
        )
        bands += _band(
            [(px(j), py(ci[0])) for j, ci in fixed],
            [(px(j), py(ci[1])) for j, ci in fixed],
            colour,
            opacity="0.35",
            dashed=False,
            cls="band-fixed",
        )
        coords = [(px(j), py(p["rel_lift"])) for j, p in pts]
        line = (
            format_html(
                '<polyline points="{}" fill="none" stroke="{}" stroke-width="2.5"/>',
                " ".join(f"{_c(a)},{_c(b)}" for a, b in coords),
                colour,
            )
            if len(coords) > 1
            else ""
        )
        marks = _join(
            format_html(
                "<g>{}<title>{}</title></g>", _marker("circle", a, b, colour, 4.5 if n <= 60 else 2.5), _point_title(p)
            )
            for (a, b), (_, p) in zip(coords, pts, strict=True)
        )
        grid = format_html_join(
            "",
            '<line x1="{0}" x2="{1}" y1="{2}" y2="{2}" class="{5}"/>'
            '<text x="{3}" y="{2}" text-anchor="end" dominant-baseline="middle" class="tick">{4}</text>',
            (
                (
                    left,
                    WIDTH - right,
                    _c(py(v)),
                    left - 8,
                    _pct_tick(v, step, signed=True),
                    "zero-line" if abs(v) < 1e-12 else "grid",
                )
                for v in ticks
            ),
        )
        x_labels = format_html_join(
            "",
            '<text x="{}" y="{}" text-anchor="middle" class="tick">{}</text>',
            ((_c(px(j)), top + panel_h + 18, _day_text(days[j])) for j in _date_labels(days)),
        )
        heading = format_html(
            '<text x="{}" y="{}" class="lbl panel-title">{} vs control</text>', left, _c(top - 8), t["variant"]
        )
        panels.append(
            format_html(
                '<g class="lift-panel" data-variant="{}">{}{}{}{}{}{}</g>',
                t["variant"],
                heading,
                grid,
                bands,
                line,
                marks,
                x_labels,
            )
        )
    height = y0 + len(treatments) * (head_h + panel_h + gap)
    return _svg("lift-timeseries-chart", title, height, legend + _join(panels))


def _point_title(p: dict) -> str:
    fixed = p.get("rel_lift_ci")
    seq = (p.get("sequential") or {}).get("rel_lift_ci")
    parts = [f"{_day_text(p['day'])}: lift {formatting.signed_pct(p['rel_lift'], 1)}"]
    if fixed:
        parts.append(f"fixed-horizon {formatting.signed_pct(fixed[0], 1)} to {formatting.signed_pct(fixed[1], 1)}")
    if seq:
        parts.append(f"always-valid {formatting.signed_pct(seq[0], 1)} to {formatting.signed_pct(seq[1], 1)}")
    return "; ".join(parts)
