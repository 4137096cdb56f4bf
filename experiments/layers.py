"""Presentation of layers and assignment plans: the server-side SVG of a layer's ranges and the review page's
sentences. Pure functions of model instances; no writes."""

from __future__ import annotations

import json

from django.utils.html import format_html, format_html_join

from experiments.models import Experiment, Layer

SVG_WIDTH = 640
ROW_HEIGHT = 26
AXIS_HEIGHT = 22
STATUS_FILL = {"running": "#2f7d32", "review": "#b58900", "draft": "#8a8a8a"}
OTHER_FILL = "#c9c9c9"


def layer_ranges_svg(layer: Layer, experiments: list[Experiment] | None = None) -> str:
    """One row per experiment of the layer (running first), its range drawn on [0, 1], as inline SVG."""
    rows = experiments if experiments is not None else list(layer.experiments.order_by("layer_start", "slug"))
    order = {"running": 0, "review": 1, "draft": 2}
    rows = sorted(rows, key=lambda e: (order.get(e.status, 3), e.layer_start or 0, e.slug))
    height = AXIS_HEIGHT + ROW_HEIGHT * max(len(rows), 1)
    ticks = format_html_join(
        "",
        '<line x1="{0}" y1="0" x2="{0}" y2="{1}" stroke="#ddd"/><text x="{0}" y="14" font-size="11" '
        'text-anchor="{2}">{3}</text>',
        (
            (round(t * SVG_WIDTH), height, "start" if t == 0 else "end" if t == 1 else "middle", f"{t:g}")
            for t in (0, 0.25, 0.5, 0.75, 1)
        ),
    )
    bars = format_html_join(
        "",
        '<g class="layer-range" data-experiment="{0}" data-status="{1}"><title>{2} ({0}, {1}): {3}–{4}</title>'
        '<rect x="{5}" y="{6}" width="{7}" height="{8}" fill="{9}" rx="3"/>'
        '<text x="{10}" y="{11}" font-size="12" fill="#fff">{0} · {1}</text></g>',
        (
            (
                e.slug,
                e.status,
                e.name,
                f"{e.layer_start:g}",
                f"{e.layer_end:g}",
                round(e.layer_start * SVG_WIDTH, 1),
                AXIS_HEIGHT + i * ROW_HEIGHT + 2,
                max(round((e.layer_end - e.layer_start) * SVG_WIDTH, 1), 1),
                ROW_HEIGHT - 4,
                STATUS_FILL.get(e.status, OTHER_FILL),
                round(e.layer_start * SVG_WIDTH, 1) + 4,
                AXIS_HEIGHT + i * ROW_HEIGHT + 17,
            )
            for i, e in enumerate(rows)
        ),
    )
    empty = (
        format_html('<text x="4" y="{}" font-size="12">No experiments on this layer yet.</text>', AXIS_HEIGHT + 16)
        if not rows
        else ""
    )
    return format_html(
        '<svg class="layer-ranges" xmlns="http://www.w3.org/2000/svg" width="{0}" height="{1}" '
        'viewBox="0 0 {0} {1}" role="img" aria-label="Ranges of layer {2}">{3}{4}{5}</svg>',
        SVG_WIDTH,
        height,
        layer.key,
        ticks,
        bars,
        empty,
    )


def _percent(value: float) -> str:
    return f"{value * 100:g}%"


def assignment_plan_sentences(plan: dict) -> list[str]:
    """The assignment part of a plan (`services._assignment_plan` shape) in words, for the review page."""
    coverage = plan.get("coverage", 1.0)
    targeting = plan.get("targeting") or {}
    layer = plan.get("layer")
    holdout = plan.get("holdout")
    sentences = [
        "Targeting: every user is eligible (no condition)."
        if not targeting
        else f"Targeting: only users whose attributes match {json.dumps(targeting, ensure_ascii=False)}.",
        "Coverage: all eligible users are enrolled."
        if coverage >= 1
        else f"Coverage: {_percent(coverage)} of eligible users are enrolled; the rest see the default experience.",
    ]
    if layer:
        share = layer["end"] - layer["start"]
        sentences.append(
            f"Layer: claims {_percent(layer['start'])} to {_percent(layer['end'])} of layer '{layer['key']}' "
            f"({_percent(share)} of its users), never shared with another running experiment of that layer."
        )
    else:
        sentences.append("Layer: none (not mutually exclusive with other experiments).")
    sentences.append(
        f"Holdout: users held out by '{holdout}' (its control group) are never enrolled."
        if holdout
        else "Holdout: none."
    )
    return sentences
