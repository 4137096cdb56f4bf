"""A metric's frozen definition: what the readout computes, independent of where the events live.

This is the one shape that travels between the metric catalog (``experiments.Metric``), an
experiment's approved plan (the pre-registration stores ``MetricDefinition.to_dict()`` per planned
metric), and every source of numbers (the internal aggregate and rollups, and the warehouse query
builder in ``readouts/sources/``). It is pure: no Django imports, so stats-side code and engines
can use it freely. ``docs/metrics.md`` states the per-user rules these fields drive.

Field names equal the ``experiments.Metric`` model's and the ``/api/metrics`` objects' (a contract);
ratio parts are full definitions here (each part with its own window, filter and cap), while the API
object names them by key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KINDS = ("binary", "mean", "ratio", "funnel")
DIRECTIONS = ("increase", "decrease")
AGGREGATIONS = ("sum", "count")
CAPS = ("none", "absolute", "percentile")


@dataclass(frozen=True)
class MetricDefinition:
    key: str
    kind: str = "binary"
    direction: str = "increase"
    name: str = ""
    # The conversion ``metric`` name services send; "" for ratio and funnel (their parts/steps carry events).
    event: str = ""
    aggregation: str = "sum"
    window_hours: float | None = None
    delay_hours: float = 0.0
    cap: str = "none"
    cap_value: float | None = None
    cap_ignore_zeros: bool = False
    filter_prop: str = ""
    filter_values: tuple[str, ...] = ()
    numerator: MetricDefinition | None = None
    denominator: MetricDefinition | None = None
    steps: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def adhoc(cls, *, key: str, kind: str = "binary", direction: str = "increase") -> MetricDefinition:
        """An experiment metric row without a catalog metric: binary or mean on the event named ``key``."""
        return cls(key=key, kind=kind, direction=direction, name=key, event=key)

    def events(self) -> tuple[str, ...]:
        """Every conversion event name this metric reads (a ratio's parts, each funnel step), in order."""
        if self.kind == "ratio":
            parts = [p for p in (self.numerator, self.denominator) if p is not None]
            return tuple(dict.fromkeys(e for p in parts for e in p.events()))
        if self.kind == "funnel":
            return tuple(dict.fromkeys(self.steps))
        return (self.event,) if self.event else ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "kind": self.kind,
            "direction": self.direction,
            "event": self.event,
            "aggregation": self.aggregation,
            "window_hours": self.window_hours,
            "delay_hours": self.delay_hours,
            "cap": self.cap,
            "cap_value": self.cap_value,
            "cap_ignore_zeros": self.cap_ignore_zeros,
            "filter_prop": self.filter_prop,
            "filter_values": list(self.filter_values),
            "numerator": self.numerator.to_dict() if self.numerator else None,
            "denominator": self.denominator.to_dict() if self.denominator else None,
            "steps": list(self.steps),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetricDefinition:
        def part(value: Any) -> MetricDefinition | None:
            return cls.from_dict(value) if isinstance(value, dict) else None

        return cls(
            key=data["key"],
            name=data.get("name", "") or "",
            kind=data.get("kind", "binary"),
            direction=data.get("direction", "increase"),
            event=data.get("event", "") or "",
            aggregation=data.get("aggregation", "sum") or "sum",
            window_hours=data.get("window_hours"),
            delay_hours=float(data.get("delay_hours") or 0.0),
            cap=data.get("cap", "none") or "none",
            cap_value=data.get("cap_value"),
            cap_ignore_zeros=bool(data.get("cap_ignore_zeros", False)),
            filter_prop=data.get("filter_prop", "") or "",
            filter_values=tuple(str(v) for v in data.get("filter_values") or ()),
            numerator=part(data.get("numerator")),
            denominator=part(data.get("denominator")),
            steps=tuple(data.get("steps") or ()),
        )
