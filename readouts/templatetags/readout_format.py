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
