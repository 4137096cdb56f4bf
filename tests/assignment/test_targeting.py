"""Targeting: every operator through POST /api/assign, agreeing with GrowthBook's own SDK evaluator, and
invalid conditions refused on save with the place of the problem."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from growthbook.core import evalCondition

from experiments import services
from experiments.models import Experiment
from experiments.targeting import targeting_problems
from tests.assignment.conftest import assign, rules_experiment
from tracking.models import Assignment

pytestmark = pytest.mark.django_db

# (condition, attributes, expected match) — expected written by hand from GrowthBook's documented semantics.
CASES = [
    ({"country": "DE"}, {"country": "DE"}, True),
    ({"country": "DE"}, {"country": "FR"}, False),
    ({"country": {"$eq": "DE"}}, {"country": "DE"}, True),
    ({"country": {"$ne": "DE"}}, {"country": "FR"}, True),
    ({"country": {"$ne": "DE"}}, {}, True),  # missing attribute is not equal
    ({"country": {"$in": ["DE", "FR"]}}, {"country": "FR"}, True),
    ({"country": {"$in": ["DE", "FR"]}}, {"country": "US"}, False),
    ({"country": {"$in": ["DE", "FR"]}}, {}, False),
    ({"country": {"$nin": ["DE", "FR"]}}, {"country": "US"}, True),
    ({"country": {"$nin": ["DE", "FR"]}}, {"country": "DE"}, False),
    ({"age": {"$gt": 30}}, {"age": 31}, True),
    ({"age": {"$gt": 30}}, {"age": 30}, False),
    ({"age": {"$gte": 30}}, {"age": 30}, True),
    ({"age": {"$lt": 30}}, {"age": 29.5}, True),
    ({"age": {"$lte": 30}}, {"age": 31}, False),
    ({"age": {"$gt": 30}}, {"age": "31"}, False),  # a string is not compared with a number
    ({"age": {"$gt": 30}}, {"age": "old"}, False),  # type mismatch: no match, no error
    ({"age": {"$gt": 30}}, {}, False),
    ({"age": {"$gt": 30}}, {"age": None}, False),
    ({"age": {"$gt": 30}}, {"age": [40]}, False),
    ({"plan": {"$exists": True}}, {"plan": "pro"}, True),
    ({"plan": {"$exists": True}}, {}, False),
    ({"plan": {"$exists": False}}, {}, True),
    ({"email": {"$regex": "@example\\.com$"}}, {"email": "a@example.com"}, True),
    ({"email": {"$regex": "@example\\.com$"}}, {"email": "a@other.org"}, False),
    ({"email": {"$regex": "@example"}}, {"email": 7}, False),  # not a string: no match, no error
    ({"country": {"$not": {"$in": ["DE"]}}}, {"country": "FR"}, True),
    ({"$not": {"country": "DE"}}, {"country": "DE"}, False),
    ({"app_version": {"$vgt": "2.9.1"}}, {"app_version": "2.10.0"}, True),
    ({"app_version": {"$vgte": "2.10.0"}}, {"app_version": "2.10.0"}, True),
    ({"app_version": {"$vlt": "2.10.0"}}, {"app_version": "2.9.1"}, True),
    ({"app_version": {"$vlte": "2.9.1"}}, {"app_version": "2.10.0"}, False),
    ({"app_version": {"$vgt": "2.9.1"}}, {}, False),
    ({"app_version": {"$vgt": "1.0.0"}}, {"app_version": "1.0.0-beta"}, False),  # pre-release below release
    ({"$and": [{"country": "DE"}, {"platform": "ios"}]}, {"country": "DE", "platform": "ios"}, True),
    ({"$and": [{"country": "DE"}, {"platform": "ios"}]}, {"country": "DE", "platform": "web"}, False),
    ({"$or": [{"country": "DE"}, {"plan": "pro"}]}, {"country": "US", "plan": "pro"}, True),
    ({"$or": [{"country": "DE"}, {"plan": "pro"}]}, {"country": "US"}, False),
    (
        {"$and": [{"$or": [{"country": "DE"}, {"country": "AT"}]}, {"$not": {"plan": "free"}}]},
        {"country": "AT", "plan": "pro"},
        True,
    ),
    (
        {"$and": [{"$or": [{"country": "DE"}, {"country": "AT"}]}, {"$not": {"plan": "free"}}]},
        {"country": "AT", "plan": "free"},
        False,
    ),
    ({"device.os": "ios"}, {"device": {"os": "ios"}}, True),  # dotted paths reach nested attributes
    ({"device.os": "ios"}, {"device": "ios"}, False),
    ({"beta": True}, {"beta": 1}, False),  # strict types: true is not 1
]


@pytest.mark.parametrize(("condition", "attributes", "expected"), CASES)
def test_assign__targeting_operator__follows_growthbook_evaluator(api, owner, condition, attributes, expected):
    # Given a running experiment targeted with the condition (valid on save)
    assert targeting_problems(condition) == []
    rules_experiment(owner, "t", targeting=condition)
    # When a user with these attributes is assigned
    response = assign(api, "t", "u1", attributes)
    # Then never an error; enrolled exactly when GrowthBook's SDK says the condition matches
    assert response.status_code == 200
    body = response.json()
    assert evalCondition(attributes, condition) is expected
    assert body["in_experiment"] is expected
    assert body["reason"] == ("assigned" if expected else "not_targeted")
    assert Assignment.objects.filter(user_key="u1").exists() is expected


def test_assign__not_targeted__variant_null_nothing_stored(api, owner):
    rules_experiment(owner, "t", targeting={"country": "DE"})
    body = assign(api, "t", "u1", {"country": "FR"}).json()
    assert body == {
        "variant": None,
        "assigned_at": None,
        "new": False,
        "in_experiment": False,
        "reason": "not_targeted",
    }
    assert not Assignment.objects.exists()


def test_assign__stored_user_attributes_change__keeps_variant(api, owner):
    # Given a user enrolled while their attributes matched
    rules_experiment(owner, "t", targeting={"country": "DE"})
    first = assign(api, "t", "u1", {"country": "DE"}).json()
    # When they come back with attributes that no longer match
    later = assign(api, "t", "u1", {"country": "FR"}).json()
    # Then the stored assignment wins
    assert later == {**first, "new": False}
    assert later["in_experiment"] is True


@pytest.mark.parametrize(
    ("condition", "where"),
    [
        ({"country": {"$in": "DE"}}, "country.$in: must be a list"),
        ({"$and": [{"country": "DE"}, {"age": {"$gt": True}}]}, "$and[1].age.$gt: must be a number or a string"),
        ({"$or": []}, "$or: must be a non-empty list"),
        ({"$or": [{"a": 1}, "x"]}, "$or[1]: must be a condition"),
        ({"country": {"$starts": "D"}}, "country.$starts: unknown operator"),
        ({"$nor": [{"a": 1}]}, "$nor: unknown operator here"),
        ({"email": {"$regex": "("}}, "email.$regex: not a valid regular expression"),
        ({"v": {"$vgt": "two"}}, "v.$vgt: must be a version string"),
        ({"plan": {"$exists": "yes"}}, "plan.$exists: must be true or false"),
        ({"plan": {"$eq": "a", "b": 1}}, "plan: mixes operators"),
        ({"country": {"$not": {"$in": 3}}}, "country.$not.$in: must be a list"),
        (["DE"], "(top): must be a JSON object"),
    ],
)
def test_experiment_save__invalid_targeting__refused_with_location(owner, condition, where):
    # Given a draft with an invalid condition
    experiment = Experiment(name="T", slug="t", owner=owner, hypothesis="h", targeting=condition)
    # When it is saved through the service
    with pytest.raises(ValidationError) as exc:
        services.experiment_save_plan(experiment=experiment, actor=owner)
    # Then the message on the targeting field points at the bad part
    messages = exc.value.message_dict["targeting"]
    assert any(where in m for m in messages), messages
    assert not Experiment.objects.filter(slug="t").exists()


def test_experiment_save__valid_targeting__saved(owner):
    condition = {"$and": [{"country": {"$in": ["DE"]}}, {"app_version": {"$vgte": "2.10.0"}}]}
    experiment = Experiment(name="T", slug="t", owner=owner, hypothesis="h", targeting=condition)
    services.experiment_save_plan(experiment=experiment, actor=owner)
    assert Experiment.objects.get(slug="t").targeting == condition
