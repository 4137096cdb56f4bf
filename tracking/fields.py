"""Strict DRF fields for the tracking API: wrong JSON types are 400s, never coerced, never 500s."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

PROPS_MAX_BYTES = 8 * 1024
PROPS_MAX_DEPTH = 5
COVARIATES_MAX_KEYS = 20
EVENT_ID_RE = re.compile(r"\A[A-Za-z0-9._:-]+\Z")
SLUG_RE = re.compile(r"\A[-a-zA-Z0-9_]+\Z")
# A user key neither starts nor ends with whitespace (so it is never blank): " u1" and "u1" would
# otherwise silently be two users. Python's \s is str.isspace(), the same set str.strip() removes.
USER_KEY_RE = re.compile(r"\A\S(?:[\s\S]*\S)?\Z")
USER_KEY_MESSAGE = "Must not be blank or start or end with whitespace."


def _encodable(text: str) -> bool:
    """Storable text: valid UTF-8 (no lone surrogates) and no NUL (PostgreSQL text cannot hold it)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class StrictCharField(serializers.CharField):
    default_error_messages = {
        "invalid": "Must be a string.",
        "unstorable": "Contains characters that cannot be stored.",
    }

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        if not _encodable(data):
            self.fail("unstorable")
        return super().to_internal_value(data)


class StrictChoiceField(serializers.ChoiceField):
    def to_internal_value(self, data):
        if not isinstance(data, str):  # never str() the input: a deeply nested list would recurse
            self.fail("invalid_choice", input=f"<{type(data).__name__}>")
        return super().to_internal_value(data)


@extend_schema_field(OpenApiTypes.NUMBER)
class StrictNumberField(serializers.Field):
    """A finite JSON number (not a boolean, not a string), stored as a float."""

    default_error_messages = {"invalid": "Must be a number.", "not_finite": "Must be a finite number."}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        try:
            value = float(data)
        except OverflowError:
            self.fail("not_finite")
        if not math.isfinite(value):
            self.fail("not_finite")
        return value

    def to_representation(self, value):
        return value


def finite_number(data: Any) -> float | None:
    """`data` as a float when it is a finite JSON number (not a boolean), else None."""
    if isinstance(data, bool) or not isinstance(data, int | float):
        return None
    try:
        value = float(data)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


@extend_schema_field(
    {
        "type": "object",
        "maxProperties": COVARIATES_MAX_KEYS,
        "additionalProperties": {"type": "number"},
        "description": (
            "Exposures only. The user's pre-exposure value per metric key (a slug of at most 100 characters), "
            f"at most {COVARIATES_MAX_KEYS} keys, finite numbers; used for CUPED. Stored with the user's first "
            "exposure only."
        ),
    }
)
class CovariatesField(serializers.Field):
    """A JSON object of metric key (slug, 1–100 chars) → finite number, at most COVARIATES_MAX_KEYS keys."""

    default_error_messages = {
        "invalid": "Must be a JSON object of metric key to number.",
        "too_many": f"At most {COVARIATES_MAX_KEYS} keys.",
        "bad_key": "Keys must be metric keys (letters, digits, '-' and '_'; at most 100 characters).",
        "bad_value": "Values must be finite numbers.",
    }

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            self.fail("invalid")
        if len(data) > COVARIATES_MAX_KEYS:
            self.fail("too_many")
        values: dict[str, float] = {}
        for key, raw in data.items():
            if not (len(key) <= 100 and SLUG_RE.match(key)):
                self.fail("bad_key")
            value = finite_number(raw)
            if value is None:
                self.fail("bad_value")
            values[key] = value
        return values

    def to_representation(self, value):
        return value


class StrictDateTimeField(serializers.DateTimeField):
    """An ISO 8601 string; a naive time is taken as UTC."""

    def to_internal_value(self, value):
        if not isinstance(value, str):
            self.fail("invalid", format="ISO 8601")
        try:
            parsed = super().to_internal_value(value)
            if parsed.tzinfo is None:  # pragma: no cover - DRF makes it aware with USE_TZ
                parsed = parsed.replace(tzinfo=dt.UTC)
            parsed.astimezone(dt.UTC)
        except (OverflowError, ValueError):
            self.fail("invalid", format="ISO 8601")
        return parsed


def props_problem(data: dict) -> str | None:
    """Why `props` cannot be stored ("too_deep", "unstorable"), or None. Iterative: no input can recurse.

    Depth counts containers: the props object is level 1, an object or array inside it level 2, and so
    on, at most PROPS_MAX_DEPTH levels. Stops at the first problem.
    """
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > PROPS_MAX_DEPTH:
                return "too_deep"
            if isinstance(value, dict):
                if not all(_encodable(key) for key in value):
                    return "unstorable"
                value = value.values()
            stack.extend((child, depth + 1) for child in value)
        elif isinstance(value, str) and not _encodable(value):
            return "unstorable"
    return None


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": True,
        "description": f"JSON object, at most {PROPS_MAX_BYTES} bytes as compact UTF-8 JSON and at most "
        f"{PROPS_MAX_DEPTH} levels of nested objects/arrays (the object itself is level 1).",
    }
)
class PropsField(serializers.Field):
    """A JSON object of at most 8 KB (compact UTF-8 encoding) and PROPS_MAX_DEPTH levels of nesting."""

    default_error_messages = {
        "invalid": "Must be a JSON object.",
        "too_large": f"Must be at most {PROPS_MAX_BYTES} bytes when encoded as JSON.",
        "too_deep": f"Must be nested at most {PROPS_MAX_DEPTH} levels deep (objects and arrays).",
        "unstorable": "Contains characters that cannot be stored.",
    }

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            self.fail("invalid")
        problem = props_problem(data)
        if problem:
            self.fail(problem)
        try:  # safe: at most PROPS_MAX_DEPTH levels
            encoded = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
        except ValueError:
            self.fail("unstorable")
        if len(encoded) > PROPS_MAX_BYTES:
            self.fail("too_large")
        return data

    def to_representation(self, value):
        return value


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": True,
        "description": f"The user's attributes for targeting (e.g. country, platform, app_version, plan): a JSON "
        f"object, at most {PROPS_MAX_BYTES} bytes as compact UTF-8 JSON and at most {PROPS_MAX_DEPTH} levels of "
        "nested objects/arrays. Never stored.",
    }
)
class AttributesField(PropsField):
    """User attributes for targeting: bounded exactly like `props`."""


@extend_schema_field(
    {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 100}, "maxItems": 200}
)
class SlugListField(serializers.Field):
    """A list of experiment slugs (strings of 1–100 storable characters), at most `max_items`; errors are flat
    messages naming the item (`Item 2: must be a string.`), like every other field's."""

    default_error_messages = {"invalid": "Must be a list of experiment slugs.", "too_many": "At most {n} items."}

    def __init__(self, *, max_items: int = 200, **kwargs):
        self.max_items = max_items
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, list):
            self.fail("invalid")
        if len(data) > self.max_items:
            self.fail("too_many", n=self.max_items)
        for index, item in enumerate(data):
            if not isinstance(item, str) or not 1 <= len(item) <= 100 or not _encodable(item):
                raise serializers.ValidationError(f"Item {index}: must be a slug of 1–100 characters.")
        return list(data)

    def to_representation(self, value):
        return value
