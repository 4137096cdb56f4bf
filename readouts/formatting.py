"""The one home of number formatting for people (pages, Markdown, narrative, admin).

The API and exports keep exact numbers; everything a person reads goes through these functions so the
same quantity always reads the same way: rates in %, differences of rates in percentage points (pp),
relative lifts in % with a sign, p-values as "< 0.001" below a thousandth.
"""

from __future__ import annotations

MINUS = "\u2212"  # a true minus sign for people; the API keeps '-'


def _signed(text: str) -> str:
    return MINUS + text[1:] if text.startswith("-") else text


def pct(x: float | None, digits: int = 2) -> str:
    """A fraction as a percentage: 0.1234 → '12.34%'."""
    return "n/a" if x is None else _signed(f"{x * 100:.{digits}f}%")


def signed_pct(x: float | None, digits: int = 2) -> str:
    """A relative change (fraction) with its sign: 0.05 → '+5.00%'."""
    return "n/a" if x is None else _signed(f"{x * 100:+.{digits}f}%")


def pp(x: float | None, digits: int = 2, unit: str = "pp") -> str:
    """A difference of two rates (fraction) in percentage points: 0.012 → '+1.20 pp'."""
    return "n/a" if x is None else _signed(f"{x * 100:+.{digits}f} {unit}")


def ascii_minus(text: str) -> str:
    """Back to '-' (for text handed to a language model and read back by the narrative guard)."""
    return text.replace(MINUS, "-")


def number(x: float | None, digits: int = 2) -> str:
    """A plain quantity with thousands separators: 12345.678 → '12,345.68'."""
    return "n/a" if x is None else _signed(f"{x:,.{digits}f}")


def signed_number(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else _signed(f"{x:+,.{digits}f}")


def count(n: int | None) -> str:
    """A count of users or events: 12345 → '12,345'."""
    return "n/a" if n is None else f"{n:,}"


def p_value(p: float | None) -> str:
    """A p-value for people: '< 0.001' below a thousandth, otherwise three decimals."""
    if p is None:
        return "n/a"
    if p < 0.001:
        return "< 0.001"
    return f"{p:.3f}"


def p_equals(p: float | None) -> str:
    """A p-value after 'p' in a sentence: '< 0.001' or '= 0.004' (so 'p = < 0.001' never appears)."""
    text = p_value(p)
    return text if text.startswith("<") else f"= {text}"


def p_value_exact(p: float | None) -> str:
    """A p-value with its precision kept, for machines only (people read ``p_value``): '2.58e-06', '0.0123'."""
    if p is None:
        return "n/a"
    if p == 0:
        return "0 (below floating-point precision)"
    if p < 0.0001:
        return f"{p:.2e}"
    return f"{p:.4f}"


def effect(x: float | None, *, kind: str) -> str:
    """An absolute difference: pp for binary metrics (rates), a signed number for mean metrics."""
    return pp(x) if kind == "binary" else signed_number(x)


def level(x: float | None, *, kind: str) -> str:
    """A per-variant level: a rate in % for binary metrics, a mean for mean metrics."""
    return pct(x) if kind == "binary" else number(x)


CHECK_P_VALUES = ("srm", "covariate_imbalance")  # health checks whose value is a p-value
CHECK_SHARES = ("conversions_without_exposure", "variant_conflicts", "sample_progress")  # fractions


def check_value(code: str, value: float | int | None) -> str:
    """A health check's value (readouts.governance): p-values as '< 0.001', shares in %, counts with commas."""
    if value is None:
        return "—"
    if code in CHECK_P_VALUES:
        return p_value(value)
    if code in CHECK_SHARES:
        return pct(value)
    if isinstance(value, int):
        return count(value)
    return number(value, 4)
