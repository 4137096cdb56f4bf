"""Property: the fast path for assign bodies (tracking.assign_validation.plain_assign) never disagrees with the
serializers: whatever it accepts, the serializer accepts with the same validated data; it refuses every invalid
body (so the 400's message is always the serializer's)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracking.api import AssignAllApi, AssignApi
from tracking.assign_validation import plain_assign

PROPERTY = settings(max_examples=600, deadline=None)

any_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=12)
plain_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), min_size=0, max_size=12)
long_text = st.integers(min_value=95, max_value=260).map(lambda n: "k" * n)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text | plain_text
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(plain_text, inner, max_size=3), max_leaves=10
)
deep = st.integers(min_value=1, max_value=8).map(lambda n: _nested(n))
big = st.integers(min_value=8000, max_value=8300).map(lambda n: {"blob": "x" * n})


def _nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def field(valid):
    return st.one_of(valid, json_values)


text = plain_text | any_text | long_text | st.sampled_from(["u1", " u1", "u1 ", "checkout", "a\x00b", ""])
attributes = st.dictionaries(plain_text | any_text, json_values, max_size=4) | deep | big
slugs = st.lists(text, max_size=4) | st.integers(min_value=199, max_value=202).map(lambda n: ["s"] * n)
single_body = st.fixed_dictionaries(
    {},
    optional={
        "experiment": field(text),
        "user_key": field(text),
        "attributes": field(attributes),
        "experiments": field(slugs),
        "other": json_values,
    },
)


def _agrees(serializer_class, body, single: bool) -> None:
    fast = plain_assign(body, single=single)
    serializer = serializer_class(data=body)
    valid = serializer.is_valid()
    if fast is not None:
        assert valid, (body, serializer.errors)
        assert fast == dict(serializer.validated_data)


@given(body=single_body | json_values)
@PROPERTY
def test_plain_assign__any_body__agrees_with_assign_serializer(body):
    _agrees(AssignApi.InputSerializer, body, single=True)


@given(body=single_body | json_values)
@PROPERTY
def test_plain_assign__any_body__agrees_with_assign_all_serializer(body):
    _agrees(AssignAllApi.InputSerializer, body, single=False)


@pytest.mark.parametrize(
    ("body", "single"),
    [
        ({"experiment": "checkout", "user_key": "user-42"}, True),
        ({"experiment": "checkout", "user_key": "user-42", "attributes": {"country": "DE", "v": [1, {"a": 2}]}}, True),
        ({"experiment": "checkout", "user_key": "u", "attributes": None}, True),
        ({"user_key": "user-42", "attributes": {"country": "DE", "app_version": "2.10.0"}}, False),
        ({"user_key": "user-42", "experiments": ["a", "b"], "attributes": {}}, False),
        ({"user_key": "user-42", "experiments": None}, False),
    ],
)
def test_plain_assign__common_bodies__fast_path_taken_with_serializer_data(body, single):
    serializer_class = AssignApi.InputSerializer if single else AssignAllApi.InputSerializer
    fast = plain_assign(body, single=single)
    assert fast is not None
    serializer = serializer_class(data=body)
    assert serializer.is_valid()
    assert fast == dict(serializer.validated_data)
