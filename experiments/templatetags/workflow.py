from __future__ import annotations

import json
from datetime import timedelta

from django import template

register = template.Library()

TRANSITION_LABELS = {
    "create": "Created",
    "submit_for_review": "Submitted for review",
    "request_changes": "Changes requested",
    "approve_and_start": "Approved and started",
    "end_for_readout": "Ended for readout",
    "ship": "Shipped",
    "kill": "Killed",
}


@register.filter
def transition_label(name: str) -> str:
    return TRANSITION_LABELS.get(name, name.replace("_", " ").capitalize())


@register.filter
def pretty_json(value) -> str:
    """Indented JSON text (autoescaped by the template like any other string)."""
    return json.dumps(value, indent=2, sort_keys=True, default=str)


@register.filter
def age(value: timedelta) -> str:
    """A queue age as '3d 4h' / '5h 12m'."""
    minutes = int(value.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {minutes}m"
