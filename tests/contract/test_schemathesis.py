"""The OpenAPI schema is the contract: schemathesis 4 against a live server (issue 11, item 5).

A running experiment with two variants and a planned metric, a `track` key and a `read` key; generated
requests are steered (hooks below) so that experiment slugs, variant keys and metric keys are often
valid, and the cases reach ingest, dedup, assignment and the readout, not only validation. Fixed seed,
deterministic generation, bounded examples: the same cases on every run.

Checks: no 5xx, every status code documented, every content type documented, every body matches its
documented schema, and requests the schema calls invalid are refused with a 4xx.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from experiments.models import Experiment
from tests.tracking.conftest import make_experiment
from tracking.auth import api_key_cache_clear
from tracking.models import Event, ServiceAPIKey

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]

SEED = 20261111
MAX_EXAMPLES = 100  # per operation, fuzzing phase (examples and coverage phases add their own cases)
EXPERIMENT = "checkout-button"  # the slug of the schema's own examples
VARIANTS = ("control", "treatment")
METRIC = "purchase"
DIMENSION = "plan"
READOUT_PATH = "/api/experiments/{slug}/readout"


def negative_data_rejection_per_item(ctx, response, case):
    """`negative_data_rejection`, except where the contract refuses per item: a batch whose items break the
    schema is answered 200 with those items in `rejected` (documented), never a 400 for the whole batch."""
    if case.path == "/api/track/batch" and case.method == "POST" and response.status_code == 200:
        body = response.json()
        if isinstance(body, dict) and body.get("rejected"):
            return None
    return negative_data_rejection(ctx, response, case)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection_per_item,
]
CONFIG = {
    "seed": SEED,
    "generation": {
        "max-examples": MAX_EXAMPLES,
        "deterministic": True,
        "database": "none",  # no replay of stored examples: every run sends the same cases
        "with-security-parameters": False,
    },
    "phases": {"stateful": {"enabled": False}},
}


@dataclass
class ContractWorld:
    base_url: str
    track_key: str
    read_key: str
    cases: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)


@pytest.fixture
def contract_world(live_server, make_user, settings, request) -> Iterator[ContractWorld]:
    # Throttles out of the way: a 429 is documented, but it would end the run's useful part early.
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"api_key": "1000000/min", "readout": "1000000/min"},
    }
    api_key_cache_clear()  # keys of earlier transactional tests are gone with their flush
    experiment = make_experiment(make_user("contract-owner"), slug=EXPERIMENT, weights=[(v, 1) for v in VARIANTS])
    # A fixed hash salt: /api/assign's answers, and so which generated events conflict with them, are the
    # same on every run (a random salt made the number of stored events vary from run to run).
    Experiment.objects.filter(pk=experiment.pk).update(salt="contract-test")
    assert experiment.status == "running"
    _, track_key = ServiceAPIKey.objects.create_key(name="contract-track", scopes="track")
    _, read_key = ServiceAPIKey.objects.create_key(name="contract-read", scopes="read")
    world = ContractWorld(base_url=live_server.url, track_key=track_key, read_key=read_key)
    yield world
    # The generated cases reached the core logic, not only validation: events stored, readouts computed.
    _report(request, world)
    ok = Counter()
    for (op, code), n in world.statuses.items():
        ok[op] += n if code in (200, 201) else 0
    for op in (
        "POST /api/track",
        "POST /api/track/batch",
        "POST /api/assign",
        "POST /api/assign/all",
        "GET /api/assign/rules",
        f"GET {READOUT_PATH}",
    ):
        assert ok.get(op, 0) >= 3, f"too few successful {op} cases: {dict(world.statuses)}"
    # A floor, not a figure: PostgreSQL refuses more generated strings than SQLite (NUL bytes, say), and the
    # newer endpoints take a share of the cases; 18 are stored there with this seed, more on SQLite.
    assert Event.objects.filter(experiment=experiment).count() >= 10


def _report(request, world: ContractWorld) -> None:
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    lines = [f"schemathesis: {world.cases.total()} cases (seed {SEED}, max_examples {MAX_EXAMPLES})"]
    for op, n in sorted(world.cases.items()):
        codes = ", ".join(f"{code}: {k}" for (o, code), k in sorted(world.statuses.items()) if o == op)
        lines.append(f"  {op}: {n} cases ({codes})")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("\n" + "\n".join(lines))


# --- Steering: valid identifiers often, chosen from the generated value itself (deterministic) -------
def _pick(value: Any, *valid: str) -> Any:
    """A generated string becomes one of `valid` for 3 of 4 values (by its length), else stays as generated."""
    if not isinstance(value, str) or len(value) % 4 == 3:
        return value
    return valid[len(value) % len(valid)]


def _steer_event(item: Any) -> Any:
    if not isinstance(item, dict):
        return item
    item = dict(item)
    if "experiment" in item:
        item["experiment"] = _pick(item["experiment"], EXPERIMENT)
    if isinstance(item.get("experiments"), list):  # POST /api/assign/all
        item["experiments"] = [_pick(slug, EXPERIMENT) for slug in item["experiments"]]
    if "variant" in item:
        item["variant"] = _pick(item["variant"], *VARIANTS)
    if "metric" in item:
        item["metric"] = _pick(item["metric"], METRIC)
    if isinstance(item.get("occurred_at"), str) and len(item["occurred_at"]) % 4:
        item.pop("occurred_at")  # now: inside the running window (generated instants mostly are not)
    if isinstance(item.get("props"), dict) and len(item["props"]) % 2 == 0:
        item["props"] = {**item["props"], DIMENSION: "pro" if len(item) % 2 else "free"}
    return item


def _steer_body(body: Any) -> Any:
    if isinstance(body, dict) and isinstance(body.get("events"), list):
        return {**body, "events": [_steer_event(item) for item in body["events"]]}
    return _steer_event(body)


def _steer_query(query: dict[str, Any]) -> dict[str, Any]:
    query = dict(query)
    if "metric" in query:
        query["metric"] = _pick(query["metric"], METRIC)
    if "dimension" in query:
        query["dimension"] = _pick(query["dimension"], DIMENSION)
    return query


def steer_case(context, case):
    """Positive cases only: a negative case must stay invalid (schemathesis expects it refused)."""
    meta = case.meta
    if meta is not None and meta.generation.mode == GenerationMode.NEGATIVE:
        return case
    if isinstance(case.body, dict):
        case.body = _steer_body(case.body)
    if isinstance(case.path_parameters, dict) and "slug" in case.path_parameters:
        case.path_parameters = {**case.path_parameters, "slug": _pick(case.path_parameters["slug"], EXPERIMENT)}
    if isinstance(case.query, dict):
        case.query = _steer_query(case.query)
    return case


@pytest.fixture
def api_schema(contract_world, request):
    # schemathesis 4.32's pytest integration renames the test node through `_nodeid`, which pytest 9 no longer
    # has (it made node ids structured); give it the attribute it reads (only the reported name uses it).
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid
    schema = schemathesis.openapi.from_url(
        f"{contract_world.base_url}/api/schema/?format=json",
        headers={"Authorization": f"Bearer {contract_world.read_key}"},
        config=schemathesis.Config.from_dict(CONFIG),
        timeout=30,
    )
    schema.hook("map_case")(steer_case)
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_api__generated_cases__conform_to_the_schema(case, contract_world):
    # Given the key each operation needs (track: track and assign; read: the readout API)
    key = contract_world.read_key if case.path.startswith("/api/experiments/") else contract_world.track_key
    # When the generated request is sent to the live server; Then the response honours the schema
    response = case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, checks=CHECKS)
    contract_world.cases[f"{case.method} {case.path}"] += 1
    contract_world.statuses[(f"{case.method} {case.path}", response.status_code)] += 1
