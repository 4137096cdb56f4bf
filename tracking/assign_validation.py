"""A fast path for the plainly valid `/api/assign` and `/api/assign/all` body; anything else goes to the DRF
serializer (`AssignApi.InputSerializer`, `AssignAllApi.InputSerializer`).

Building and running a serializer costs about as much per request as one of the two statements an assignment
needs. Most bodies are plain: a short ASCII user key, a slug, small attributes. `plain_assign` accepts exactly
such bodies and returns what the serializer's `validated_data` would hold; it returns None for anything it is
not sure about (including every invalid body), so error messages always come from the serializer. A property
test (tests/assignment/test_assign_validation.py) checks that it never disagrees.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from tracking.fields import USER_KEY_RE, AttributesField, SlugListField

_SINGLE_KEYS = frozenset({"experiment", "user_key", "attributes"})
_ALL_KEYS = frozenset({"user_key", "attributes", "experiments"})
_ATTRIBUTES = AttributesField(required=False, allow_null=True)
_SLUGS = SlugListField(max_items=200, required=False, allow_null=True)  # tracking.api.ASSIGN_ALL_MAX_EXPERIMENTS
_ABSENT = object()


def _plain_text(value: object, max_length: int) -> bool:
    return type(value) is str and 0 < len(value) <= max_length and value.isascii() and "\x00" not in value


def _plain_field(field: serializers.Field, value: object) -> tuple[bool, Any]:
    """(plain, the value validated by the field itself); a value the field refuses is not plain."""
    if value is None:
        return True, None
    try:
        return True, field.to_internal_value(value)
    except serializers.ValidationError:
        return False, None


def plain_assign(data: object, *, single: bool) -> dict[str, Any] | None:
    """The validated body of a plainly valid request (`single`: `/api/assign`, else `/api/assign/all`), else None."""
    if type(data) is not dict or not (_SINGLE_KEYS if single else _ALL_KEYS).issuperset(data):
        return None
    user_key = data.get("user_key")
    if not _plain_text(user_key, 255) or not USER_KEY_RE.match(user_key):
        return None
    validated: dict[str, Any] = {}
    if single:
        if not _plain_text(data.get("experiment"), 100):
            return None
        validated["experiment"] = data["experiment"]
    validated["user_key"] = user_key
    for name, field in (("attributes", _ATTRIBUTES), ("experiments", None if single else _SLUGS)):
        value = data.get(name, _ABSENT)
        if field is None or value is _ABSENT:
            continue
        plain, validated[name] = _plain_field(field, value)
        if not plain:
            return None
    return validated
