"""Recording answers (tracking.services._record_*): an answer only for an experiment still running, even from the
per-worker rules cache; a row committed concurrently wins; the plain response bodies are the serializers' output."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime

import psycopg
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from tests.assignment.conftest import assign, assign_all, evaluation_counts, rules_experiment
from tests.tracking.conftest import set_status
from tracking.api import AssignAllApi, AssignApi, assign_all_body, assign_body
from tracking.hashing import assign_variant
from tracking.models import EVALUATION_COUNT_SHARDS, Assignment, AssignmentEvaluationCount
from tracking.selectors import assignment_evaluations_get
from tracking.services import AssignmentResult


@pytest.mark.django_db
def test_assign__ended_in_another_process_while_cached__409_left_out_and_not_counted(api, owner):
    # Given two running experiments whose rules this worker has cached, and a user stored in one of them
    ending = rules_experiment(owner, "ending")
    staying = rules_experiment(owner, "staying", targeting={"country": "DE"})
    assert assign(api, "ending", "u1").json()["in_experiment"]
    assert assign(api, "staying", "u2").json()["reason"] == "not_targeted"
    before_ending, before_staying = evaluation_counts(ending), evaluation_counts(staying)
    # When both end elsewhere (no save signal in this process: the cache still says running)
    set_status(ending, "readout")
    set_status(staying, "readout")
    # Then a stored user, a not-targeted user and a new user all get 409 (never a cached answer) ...
    for slug, user in (("ending", "u1"), ("staying", "u2"), ("ending", "u3")):
        response = assign(api, slug, user)
        assert (response.status_code, response.json()) == (409, {"error": "experiment_not_running"}), (slug, user)
    # ... assign/all leaves them out, nothing is stored or counted after the end
    assert assign_all(api, "u1").json() == {"assignments": []}
    assert assign_all(api, "u4", experiments=["ending", "staying"]).json() == {"assignments": []}
    assert Assignment.objects.filter(user_key__in=["u3", "u4"]).count() == 0
    assert (evaluation_counts(ending), evaluation_counts(staying)) == (before_ending, before_staying)


@pytest.mark.django_db
def test_assign__cached_rules__same_answers_and_fewer_queries(api, owner, settings):
    # Given running experiments (one with a holdout)
    holdout = rules_experiment(owner, "holdout", weights=(("held-out", 1), ("general", 4)))
    rules_experiment(owner, "with-holdout", holdout=holdout, coverage=0.5)
    # When the same users are assigned with the rules cache off, then on
    settings.SIGNALDASH_EXPERIMENT_CACHE_S = 0
    uncached = [assign(api, "with-holdout", f"u{i}").json() for i in range(40)]
    settings.SIGNALDASH_EXPERIMENT_CACHE_S = 5
    assign(api, "with-holdout", "warm-up")
    with CaptureQueriesContext(connection) as ctx:
        cached = [assign(api, "with-holdout", f"u{i}").json() for i in range(40)]
    # Then the answers are the stored ones, and a cached request reads no rules: the stored rows, then the record
    # statement (SQLite: statuses, then counters)
    assert [{**a, "new": False} for a in uncached] == cached
    sql = [q["sql"] for q in ctx.captured_queries]
    assert not [q for q in sql if "experiments_variant" in q]
    assignment = [q for q in sql if "tracking_assignment" in q]
    assert len(assignment) == 40 * 2


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_assign__row_committed_during_the_record_statement__stored_row_wins(api, owner):
    # Given another connection that stores u1's first exposure in the non-hash variant and has not committed yet
    experiment = rules_experiment(owner, "race")
    hashed = assign_variant("salt-race", "u1", [("control", 1), ("treatment", 1)])
    other_key = "treatment" if hashed == "control" else "control"
    other_variant = experiment.variants.get(key=other_key)
    settings = connection.settings_dict
    dsn = f"host={settings['HOST']} port={settings['PORT']} user={settings['USER']} dbname={settings['NAME']}"
    answers: list = []
    with psycopg.connect(dsn) as other:
        other.execute(
            "INSERT INTO tracking_assignment (experiment_id, user_key, variant_id, assigned_at, source) "
            "VALUES (%s, 'u1', %s, %s, 'upstream')",
            [experiment.pk, other_variant.pk, datetime(2026, 1, 1, tzinfo=UTC)],
        )

        # When u1 is assigned meanwhile (its statement waits on the uncommitted row), then the other commits
        def request() -> None:
            try:
                answers.append(assign(api, "race", "u1").json())
            finally:
                connection.close()  # this thread's own connection

        worker = threading.Thread(target=request)
        worker.start()
        with psycopg.connect(dsn, autocommit=True) as watcher:
            deadline = time.monotonic() + 60
            while not watcher.execute(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%%stored_now%%'"
            ).fetchone():
                assert time.monotonic() < deadline, "the record statement never waited on the row"
                time.sleep(0.01)
        other.commit()
    worker.join(timeout=60)
    # Then the answer is the committed row's variant, not new, and only that row is stored
    assert answers and answers[0]["variant"] == other_key
    assert (answers[0]["new"], answers[0]["assigned_at"]) == (False, "2026-01-01T00:00:00Z")
    assert list(Assignment.objects.values_list("variant__key", "source")) == [(other_key, "upstream")]


AT = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
RESULTS = [
    AssignmentResult("a", "control", "assigned", AT, True),
    AssignmentResult("b", "treatment", "assigned", AT.replace(microsecond=0), False),
    AssignmentResult("c", None, "not_targeted", None, False),
    AssignmentResult("d", None, "in_holdout", None, False),
    AssignmentResult("e", None, "outside_layer_range", None, False),
    AssignmentResult("f", None, "outside_coverage", None, False),
]


@pytest.mark.parametrize("result", RESULTS, ids=[r.experiment for r in RESULTS])
def test_assign_body__every_kind_of_answer__equals_output_serializer(result):
    serialized = AssignApi.OutputSerializer(
        {
            "variant": result.variant,
            "assigned_at": result.assigned_at,
            "new": result.new,
            "in_experiment": result.in_experiment,
            "reason": result.reason,
        }
    ).data
    assert json.dumps(assign_body(result)) == json.dumps(serialized)


def test_assign_all_body__answers__equals_output_serializer():
    items = [
        {"experiment": r.experiment, "variant": r.variant, "in_experiment": r.in_experiment, "reason": r.reason,
         "new": r.new}
        for r in RESULTS
    ]  # fmt: skip
    for results, rows in ((RESULTS, items), ([], [])):
        serialized = AssignAllApi.OutputSerializer({"assignments": rows}).data
        assert json.dumps(assign_all_body(results)) == json.dumps(serialized)


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_counts__concurrent_connections__each_in_its_shard_and_summed(owner, api_key):
    # Given an experiment targeted at DE and 4 clients, each on its own database connection
    experiment = rules_experiment(owner, "sharded", targeting={"country": "DE"})
    pids: list[int] = []

    def client_run(index: int) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key[1]}")
        try:
            for n in range(20):
                country = "DE" if n % 4 else "FR"
                assert assign(client, "sharded", f"c{index}-{n}", {"country": country}).status_code == 200
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                pids.append(cursor.fetchone()[0])
        finally:
            connection.close()

    # When they assign 80 users at once
    threads = [threading.Thread(target=client_run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    # Then each connection counted in its own shard, and the sums are the evaluations: 60 assigned, 20 not targeted
    assert len(pids) == 4
    shards = set(AssignmentEvaluationCount.objects.filter(experiment=experiment).values_list("shard", flat=True))
    assert shards == {pid % EVALUATION_COUNT_SHARDS for pid in pids}
    assert evaluation_counts(experiment) == {"assigned": 60, "not_targeted": 20}
    assert assignment_evaluations_get(experiment_id=experiment.pk).by_reason == {"assigned": 60, "not_targeted": 20}
