"""Template filters over ``readouts.formatting`` (the one home of number formatting for people)."""

from __future__ import annotations

from django import template

from readouts import formatting

register = template.Library()


@register.filter
def pct(value, digits: int = 2) -> str:
    return formatting.pct(value, digits)


@register.filter
def signed_pct(value, digits: int = 2) -> str:
    return formatting.signed_pct(value, digits)


@register.filter
def pp(value) -> str:
    return formatting.pp(value)


@register.filter
def lift(value) -> str:
    """A lift given in percent (the legacy ``lift`` field): 3.5 → '+3.50%'."""
    return "n/a" if value is None else formatting.signed_pct(value / 100.0)


@register.filter
def pvalue(value) -> str:
    return formatting.p_value(value)


@register.filter
def num(value, digits: int = 3) -> str:
    return formatting.number(value, digits)


@register.filter
def count(value) -> str:
    return formatting.count(value)


@register.filter
def effect(value, kind: str = "binary") -> str:
    return formatting.effect(value, kind=kind)


@register.filter
def level(value, kind: str = "binary") -> str:
    return formatting.level(value, kind=kind)


@register.filter
def chance(value) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


OUTCOME_COLOUR = {"better": "#067647", "worse": "#b42318", "inconclusive": "#667085"}


@register.simple_tag
def interval_bar(comparison, scale: float):
    """A small SVG: the relative-lift interval as a bar and the estimate as a dot, against a zero line.

    ``scale`` is the largest |bound| on the scorecard, so every row shares one axis. SVG attributes
    only (no inline style), so the page's Content-Security-Policy holds.
    """
    from django.utils.html import format_html

    width, height, pad = 160, 18, 6
    rel, ci = comparison.rel.rel_lift, comparison.rel.rel_lift_ci
    scale = scale or 1.0

    def x(v: float) -> str:  # formatted here: format_html escapes its arguments to strings first
        return f"{pad + (width - 2 * pad) * (0.5 + max(-1.0, min(1.0, v / scale)) / 2):.1f}"

    colour = OUTCOME_COLOUR.get(comparison.outcome, "#667085")
    zero = format_html(
        '<line x1="{0}" x2="{0}" y1="1" y2="{1}" stroke="#98a2b3" stroke-dasharray="2 2"/>', x(0), height - 1
    )
    if rel is None or ci is None:
        body = format_html('<text x="{}" y="13" font-size="11" fill="#667085">n/a</text>', x(-0.9 * scale))
    else:
        body = format_html(
            '<line x1="{}" x2="{}" y1="9" y2="9" stroke="{}" stroke-width="4" stroke-linecap="round"/>'
            '<circle cx="{}" cy="9" r="4" fill="#fff" stroke="{}" stroke-width="2"/>',
            x(ci.low),
            x(ci.high),
            colour,
            x(rel),
            colour,
        )
    return format_html(
        '<svg class="interval-bar" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{label}">'
        "{zero}{body}</svg>",
        w=width,
        h=height,
        label=f"relative lift interval, {comparison.outcome}",
        zero=zero,
        body=body,
    )


@register.filter
def warning_label(code: str) -> str:
    """A warning code in words ("conversion_without_exposure" → "Conversions without exposure")."""
    from readouts.labels import warning_label as label

    return label(code)


@register.filter
def check_value(check) -> str:
    """A health check's value as on the rest of the page: p-values '< 0.001', shares in %, counts with commas."""
    return formatting.check_value(check.code, check.value)
