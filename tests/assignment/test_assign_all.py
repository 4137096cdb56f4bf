"""POST /api/assign/all, GET /api/assign/rules (ETag), holdouts and the published test vectors."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from experiments.models import Experiment, Layer
from tests.assignment.conftest import assign, assign_all, evaluation_counts, rules_experiment
from tests.assignment.vectors import ALGORITHM, PATH, RULES, case_answers
from tests.tracking.conftest import set_status
from tracking.assignment import evaluate, rule_from_json
from tracking.models import Assignment

pytestmark = pytest.mark.django_db


def experiments_from_rules(owner, rules=RULES) -> None:
    """The published rules as running experiments in the database (holdouts first)."""
    layers: dict[str, Layer] = {}
    made: dict[str, Experiment] = {}
    for rule in sorted(rules, key=lambda r: r["holdout"] is not None):
        fields = {"coverage": rule["coverage"], "targeting": rule["targeting"]}
        if rule["layer"]:
            key = rule["layer"]["key"]
            if key not in layers:
                layers[key] = Layer.objects.create(key=key, name=key.title())
                Layer.objects.filter(pk=layers[key].pk).update(salt=rule["layer"]["salt"])
            fields.update(layer=layers[key], layer_start=rule["layer"]["start"], layer_end=rule["layer"]["end"])
        if rule["holdout"]:
            fields["holdout"] = made[rule["holdout"]]
        weights = [(v["key"], v["weight"]) for v in sorted(rule["variants"], key=lambda v: not v["is_control"])]
        made[rule["experiment"]] = rules_experiment(owner, rule["experiment"], weights=weights, **fields)
        Experiment.objects.filter(pk=made[rule["experiment"]].pk).update(salt=rule["salt"])


def test_vectors__file__has_1000_cases_and_matches_implementation():
    # Given the published vectors
    data = json.loads(PATH.read_text(encoding="utf-8"))
    assert data["algorithm"] == ALGORITHM
    assert len(data["cases"]) >= 1000
    rules = {r["experiment"]: rule_from_json(r) for r in data["rules"]["experiments"]}
    # Then every case's expected answer is what the implementation gives, from the file's own rules
    for case in data["cases"]:
        memo: dict = {}
        got = [
            {
                "experiment": s,
                **_answer(
                    evaluate(rules[s], user_key=case["user_key"], attributes=case["attributes"], rules=rules, memo=memo)
                ),
            }
            for s in sorted(rules)
        ]
        assert got == case["expected"], case["user_key"]
        assert case_answers(case["user_key"], case["attributes"]) == case["expected"]


def _answer(answer):
    return {"variant": answer.variant, "reason": answer.reason}


def test_vectors__through_http__rules_endpoint_and_assign_all_agree(api, owner):
    # Given the vectors' rules as running experiments
    experiments_from_rules(owner)
    # When the rules are fetched, they are the published rules of the file
    published = api.get("/api/assign/rules").json()
    assert published == {"algorithm": ALGORITHM, "experiments": sorted(RULES, key=lambda r: r["experiment"])}
    # And assign/all answers the expected answer for the file's cases
    data = json.loads(PATH.read_text(encoding="utf-8"))
    for case in data["cases"][:150]:
        body = assign_all(api, case["user_key"], case["attributes"]).json()
        got = [{k: a[k] for k in ("experiment", "variant", "reason")} for a in body["assignments"]]
        assert got == case["expected"], case["user_key"]


def test_assign_all__equals_single_answers(api, owner):
    experiments_from_rules(owner)
    attrs = [{"country": "DE", "plan": "pro", "app_version": "2.10.0", "platform": "ios", "age": 30}, {"age": 12}, {}]
    for i in range(60):
        user, attributes = f"user-{i}", attrs[i % 3]
        # all first, then each single (the stored answers win: same variant, new False)
        everything = assign_all(api, user, attributes).json()["assignments"]
        for item in everything:
            single = assign(api, item["experiment"], user, attributes).json()
            assert (single["variant"], single["in_experiment"], single["reason"]) == (
                item["variant"],
                item["in_experiment"],
                item["reason"],
            )
        # single first for another user, then all
        other = f"other-{i}"
        singles = {s: assign(api, s, other, attributes).json() for s in sorted(r["experiment"] for r in RULES)}
        for item in assign_all(api, other, attributes).json()["assignments"]:
            assert (singles[item["experiment"]]["variant"], singles[item["experiment"]]["reason"]) == (
                item["variant"],
                item["reason"],
            )


def test_assign_all__listed_experiments__only_those_not_running_left_out(api, owner):
    rules_experiment(owner, "a")
    rules_experiment(owner, "b")
    rules_experiment(owner, "draft-one", status="draft")
    body = assign_all(api, "u1", experiments=["b", "draft-one", "nope"]).json()
    assert [a["experiment"] for a in body["assignments"]] == ["b"]


def _queries(api, user: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert assign_all(api, user, {"country": "DE"}).status_code == 200
    return len(ctx.captured_queries)


def test_assign_all__query_count__fixed_whatever_the_number_of_experiments(api, owner, settings):
    settings.SIGNALDASH_EXPERIMENT_CACHE_S = 0  # every request reads the rules (the cache only removes 2)
    # Given one experiment of each kind (layer, holdout, coverage, targeting)
    experiments_from_rules(owner)
    _queries(api, "warm-up")  # the API key is verified once per process and cached
    few_new, few_repeat = _queries(api, "a1"), _queries(api, "a1")
    # When 44 more running experiments are added
    for i in range(44):
        rules_experiment(owner, f"extra-{i}", coverage=0.5, targeting={"country": {"$in": ["DE"]}})
    many_new, many_repeat = _queries(api, "b1"), _queries(api, "b1")
    # Then the number of queries does not change. Pinned: rules 2, stored rows 1, then on PostgreSQL the record
    # statement (enrolments, counters, still running) 1; on SQLite the transaction's savepoint pair (in tests),
    # statuses 1, insert + read back 2 (new users only), counters 1.
    assert (few_new, few_repeat) == (many_new, many_repeat)
    assert (many_new, many_repeat) == ((4, 4) if connection.vendor == "postgresql" else (9, 7))


def test_holdout__held_out_users_never_enrolled_and_stored_in_holdout(api, owner, layer):
    # Given a 5%/95% holdout and an experiment that names it
    holdout = rules_experiment(owner, "holdout", weights=(("held-out", 5), ("general", 95)))
    target = rules_experiment(owner, "exp", holdout=holdout)
    # When 1,000 users are assigned to the experiment
    answers = {f"u{i}": assign(api, "exp", f"u{i}").json() for i in range(1000)}
    # Then every user is stored in the holdout experiment, and the held-out ones are never enrolled
    held = set(
        Assignment.objects.filter(experiment=holdout, variant__key="held-out").values_list("user_key", flat=True)
    )
    assert Assignment.objects.filter(experiment=holdout).count() == 1000
    assert 20 < len(held) < 90  # ~5% (binomial: 50 ± 7)
    for user, body in answers.items():
        if user in held:
            assert body == {**body, "variant": None, "in_experiment": False, "reason": "in_holdout"}
        else:
            assert body["in_experiment"] is True
    assert not Assignment.objects.filter(experiment=target, user_key__in=held).exists()
    counts = evaluation_counts(target)
    assert counts == {"in_holdout": len(held), "assigned": 1000 - len(held)}


def test_holdout__readout_counts_held_out_users(api, owner, client, make_user):
    # Given held-out users who were shown the holdout's experience and tracked like any experiment's users
    holdout = rules_experiment(owner, "holdout", weights=(("held-out", 1), ("general", 1)))
    rules_experiment(owner, "exp", holdout=holdout)
    for i in range(40):
        assign(api, "exp", f"u{i}")
    for user, variant in Assignment.objects.filter(experiment=holdout).values_list("user_key", "variant__key"):
        body = {"experiment": "holdout", "variant": variant, "user_key": user, "event_type": "exposure"}
        assert api.post("/api/track", data=json.dumps(body), content_type="application/json").status_code == 201
    # When the holdout experiment's readout is read
    from readouts.selectors import readout_get

    readout = readout_get(experiment=holdout)
    exposed = {row.key: row.exposures for row in readout.selected.variants}
    # Then it counts both groups, the held-out ones included
    held = Assignment.objects.filter(experiment=holdout, variant__key="held-out").count()
    assert exposed["held-out"] == held and exposed["general"] == 40 - held


def test_rules__etag__304_and_changes_only_with_running_rules(api, owner):
    # Given one running experiment
    rules_experiment(owner, "a", coverage=0.5)
    first = api.get("/api/assign/rules")
    etag = first["ETag"]
    assert first.status_code == 200 and etag.startswith('"')
    # When asked again with If-None-Match: 304, same ETag
    again = api.get("/api/assign/rules", HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304 and again["ETag"] == etag
    # When a draft changes, an assignment is made, events arrive: the rules (and the ETag) stay
    draft = rules_experiment(owner, "draft", status="draft")
    Experiment.objects.filter(pk=draft.pk).update(coverage=0.2)
    assign(api, "a", "u1")
    assert api.get("/api/assign/rules")["ETag"] == etag
    # When another experiment starts running, the ETag changes; when it ends, it is back
    set_status(draft, "running")
    started = api.get("/api/assign/rules")
    assert started.status_code == 200 and started["ETag"] != etag
    assert api.get("/api/assign/rules", HTTP_IF_NONE_MATCH=etag).status_code == 200
    set_status(draft, "readout")
    assert api.get("/api/assign/rules")["ETag"] == etag


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_key": "u1", "attributes": "x"}, "attributes"),
        ({"user_key": "u1", "attributes": {"a": [[[[[1]]]]]}}, "attributes"),
        ({"user_key": "u1", "attributes": {"k": "v" * 9000}}, "attributes"),
        ({"user_key": "u1", "experiments": "a"}, "experiments"),
        ({"user_key": "u1", "experiments": [1]}, "experiments"),
        ({"user_key": "u1", "experiments": ["a"] * 201}, "experiments"),
        ({"user_key": "u1", "colour": "red"}, "colour"),
        ({"attributes": {}}, "user_key"),
    ],
)
def test_assign_all__bad_input__400_with_field(api, owner, body, field):
    rules_experiment(owner, "a")
    response = api.post("/api/assign/all", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 400
    assert field in response.json()["errors"]
