"""Number formatting for the readout page (fractions as %, differences as percentage points)."""

from __future__ import annotations

from django import template

from readouts.selectors import format_p

register = template.Library()


@register.filter
def pct(value, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value * 100:.{digits}f}%"


@register.filter
def pp(value) -> str:
    return "n/a" if value is None else f"{value * 100:+.2f} pp"


@register.filter
def lift(value) -> str:
    return "n/a" if value is None else f"{value:+.2f}%"


@register.filter
def pvalue(value) -> str:
    return format_p(value)


@register.filter
def num(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
