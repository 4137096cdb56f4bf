"""Server-side inline SVG charts (no JavaScript, no CDN). Every label goes through format_html (escaped)."""

from __future__ import annotations

import math

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from readouts.selectors import Readout

PALETTE = ["#667085", "#2f5bea", "#e04f16", "#067647", "#9e77ed", "#c11574", "#0e9384", "#b54708"]


def _c(value: float) -> str:
    """An SVG coordinate."""
    return f"{value:.1f}"


def _nice_max(value: float) -> float:
    """A round axis maximum at or above value (1, 2, 2.5 or 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    return next(step * magnitude for step in (1, 2, 2.5, 5, 10) if step * magnitude >= value)


def _pct_axis_max(value: float) -> float:
    for candidate in (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0):
        if value <= candidate:
            return candidate
    return 1.0


def rate_chart_svg(readout: Readout) -> SafeString:
    """Each variant's conversion rate (dot) with its 95% Wilson interval (whisker)."""
    label_w, width, row_h, top, bottom = 170, 660, 34, 10, 30
    plot_w = width - label_w - 70
    highs = [v.rate.ci.high for v in readout.variants if v.rate.ci]
    axis_max = _pct_axis_max(max(highs, default=0.0))
    height = top + row_h * max(1, len(readout.variants)) + bottom

    def x(rate: float) -> float:
        return label_w + plot_w * rate / axis_max

    rows = []
    for i, v in enumerate(readout.variants):
        cy = top + row_h * i + row_h / 2
        colour = PALETTE[i % len(PALETTE)]
        label = format_html(
            '<text x="{}" y="{}" text-anchor="end" dominant-baseline="middle" class="lbl">{}{}</text>',
            label_w - 8,
            cy,
            v.key,
            " (control)" if v.is_control else "",
        )
        if v.rate.rate is None:
            rows.append(
                label
                + format_html(
                    '<text x="{}" y="{}" dominant-baseline="middle" class="muted-svg">no exposures</text>',
                    label_w + 4,
                    cy,
                )
            )
            continue
        lo, hi, mid = _c(x(v.rate.ci.low)), _c(x(v.rate.ci.high)), _c(x(v.rate.rate))
        y, y0, y1 = _c(cy), _c(cy - 6), _c(cy + 6)
        rate, ci_low, ci_high = (f"{r * 100:.2f}" for r in (v.rate.rate, v.rate.ci.low, v.rate.ci.high))
        rows.append(
            label
            + format_html(
                '<g class="variant-rate" data-variant="{key}">'
                '<line x1="{lo}" x2="{hi}" y1="{y}" y2="{y}" stroke="{colour}" stroke-width="2"/>'
                '<line x1="{lo}" x2="{lo}" y1="{y0}" y2="{y1}" stroke="{colour}" stroke-width="2"/>'
                '<line x1="{hi}" x2="{hi}" y1="{y0}" y2="{y1}" stroke="{colour}" stroke-width="2"/>'
                '<circle cx="{mid}" cy="{y}" r="5" fill="{colour}">'
                "<title>{key}: {rate}% (95% CI {ci_low}% to {ci_high}%)</title></circle>"
                '<text x="{label_x}" y="{y}" dominant-baseline="middle" class="val">{rate}%</text></g>',
                key=v.key,
                lo=lo,
                hi=hi,
                mid=mid,
                y=y,
                y0=y0,
                y1=y1,
                colour=colour,
                rate=rate,
                ci_low=ci_low,
                ci_high=ci_high,
                label_x=_c(x(v.rate.ci.high) + 6),
            )
        )
    axis_y = top + row_h * max(1, len(readout.variants))
    ticks = format_html_join(
        "",
        '<line x1="{0}" x2="{0}" y1="{1}" y2="{2}" class="grid"/>'
        '<text x="{0}" y="{3}" text-anchor="middle" class="tick">{4}%</text>',
        ((_c(label_w + plot_w * k / 4), top, axis_y, axis_y + 16, f"{axis_max * 100 * k / 4:g}") for k in range(5)),
    )
    return format_html(
        '<svg class="chart rate-chart" role="img" viewBox="0 0 {} {}" width="100%" '
        'aria-label="Conversion rate per variant with 95% confidence intervals">'
        "<title>Conversion rate per variant with 95% confidence intervals</title>{}{}</svg>",
        width,
        height,
        ticks,
        mark_safe("".join(rows)),  # each row was built with format_html above
    )


def cumulative_chart_svg(readout: Readout, series: dict, *, kind: str) -> SafeString:
    """Cumulative exposed (kind='exposures') or converted users per variant by UTC day."""
    days = series["days"]
    title = "Cumulative exposed users by day" if kind == "exposures" else "Cumulative converted users by day"
    if not days:
        return format_html('<p class="muted">{}: no events yet.</p>', title)
    width, height, left, right, top, bottom = 660, 220, 56, 110, 12, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    values = series[kind]
    y_max = _nice_max(max((max(p) for p in values.values() if p), default=0))
    n = len(days)

    def px(i: int) -> float:
        return left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def py(v: float) -> float:
        return top + plot_h - plot_h * v / y_max

    lines = []
    for i, v in enumerate(readout.variants):
        pts = values.get(v.key, [])
        colour = PALETTE[i % len(PALETTE)]
        points = " ".join(f"{px(j):.1f},{py(val):.1f}" for j, val in enumerate(pts))
        lines.append(
            format_html(
                '<polyline points="{}" fill="none" stroke="{}" stroke-width="2"><title>{}: {}</title></polyline>'
                '<text x="{}" y="{}" class="legend" fill="{}">{} ({})</text>',
                points,
                colour,
                v.key,
                pts[-1] if pts else 0,
                width - right + 6,
                top + 14 + 16 * i,
                colour,
                v.key,
                pts[-1] if pts else 0,
            )
        )
    y_ticks = format_html_join(
        "",
        '<line x1="{0}" x2="{1}" y1="{2}" y2="{2}" class="grid"/>'
        '<text x="{3}" y="{2}" text-anchor="end" dominant-baseline="middle" class="tick">{4}</text>',
        ((left, left + plot_w, _c(py(y_max * k / 4)), left - 6, f"{y_max * k / 4:g}") for k in range(5)),
    )
    x_labels = format_html_join(
        "",
        '<text x="{}" y="{}" text-anchor="middle" class="tick">{}</text>',
        ((_c(px(j)), height - 12, d.strftime("%b %d")) for j, d in enumerate(days) if j in {0, n - 1, (n - 1) // 2}),
    )
    return format_html(
        '<svg class="chart cumulative-chart" role="img" viewBox="0 0 {} {}" width="100%" aria-label="{}">'
        "<title>{}</title>{}{}{}</svg>",
        width,
        height,
        title,
        title,
        y_ticks,
        x_labels,
        mark_safe("".join(lines)),  # each line was built with format_html above
    )
