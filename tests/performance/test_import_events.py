"""manage.py import_events: the API's validation, dedup and counting; rejects written; reruns change nothing."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from readouts import queries, rollups
from tracking.models import Assignment, Covariate, Event

pytestmark = pytest.mark.django_db

AT = "2026-11-02T10:00:00Z"


def _run(path, capsys) -> str:
    call_command("import_events", str(path), "--allow-before-start")
    return capsys.readouterr().out


def test_import_events__jsonl__counts_rejects_and_rerun_changes_nothing(running, tmp_path, capsys):
    # Given a JSONL file: valid events, an in-file repeat, an invalid row, an unknown variant, broken JSON
    rows = [
        {"experiment": "checkout", "variant": "control", "user_key": "u1", "event_type": "exposure",
         "occurred_at": AT, "covariates": {"purchase": 3.5}},
        {"experiment": "checkout", "variant": "control", "user_key": "u1", "event_type": "conversion",
         "metric": "purchase", "value": 12.5, "occurred_at": AT, "event_id": "o-1"},
        {"experiment": "checkout", "variant": "control", "user_key": "u1", "event_type": "conversion",
         "metric": "purchase", "value": 12.5, "occurred_at": AT, "event_id": "o-1"},
        {"experiment": "checkout", "variant": "control", "user_key": " bad", "event_type": "exposure"},
        {"experiment": "checkout", "variant": "nope", "user_key": "u2", "event_type": "exposure", "occurred_at": AT},
    ]  # fmt: skip
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    # When it is imported
    out = _run(path, capsys)
    # Then the summary counts every row, and the rejects file says why for each rejected one
    assert "events.jsonl: 2 accepted, 1 duplicate, 3 rejected" in out
    rejects = [json.loads(line) for line in (tmp_path / "events.jsonl.rejected.jsonl").read_text().splitlines()]
    assert [(r["line"], r["error"]) for r in rejects] == [(4, "invalid"), (6, "unreadable"), (5, "unknown_variant")]
    assert "user_key" in rejects[0]["detail"]
    assert (Event.objects.count(), Assignment.objects.count(), Covariate.objects.count()) == (2, 1, 1)
    # And a rerun stores nothing new
    out = _run(path, capsys)
    assert "events.jsonl: 0 accepted, 3 duplicate, 3 rejected" in out
    assert Event.objects.count() == 2
    # And the readout counts the imported events like API events
    full = queries.readout_aggregate(queries.readout_aggregate_query(experiment_id=running.pk))
    assert rollups.rows_differences(full, rollups.readout_rows(experiment_id=running.pk)) == []


def test_import_events__csv__values_and_json_columns(running, tmp_path, capsys):
    # Given a CSV with empty cells (absent fields), numbers and a JSON props column
    path = tmp_path / "events.csv"
    path.write_text(
        "experiment,variant,user_key,event_type,metric,value,occurred_at,props,event_id\n"
        f'checkout,treatment,u7,exposure,,,{AT},"{{""page"": ""home""}}",\n'
        f"checkout,treatment,u7,conversion,purchase,3,{AT},,o-7\n"
        f"checkout,treatment,u8,conversion,purchase,abc,{AT},,\n"
    )
    # When imported
    out = _run(path, capsys)
    # Then two events are stored with their values, and the non-numeric value is rejected by the validator
    assert "events.csv: 2 accepted, 0 duplicate, 1 rejected" in out
    assert Event.objects.get(event_type="exposure").props == {"page": "home"}
    assert Event.objects.get(event_type="conversion").value == 3.0


def test_import_events__postgresql__events_travel_by_copy_and_a_second_batch_reuses_the_staging_table(
    running, tmp_path, capsys, monkeypatch
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tracking.management.commands import import_events

    if connection.vendor != "postgresql":
        pytest.skip("COPY is the PostgreSQL path; SQLite uses the multi-row insert")
    # Given a file of 3 users (exposure + conversion each) imported in batches of 4 rows
    monkeypatch.setattr(import_events, "BATCH", 4)
    rows = [
        {"experiment": "checkout", "variant": v, "user_key": f"c{n}", "event_type": t, "occurred_at": AT}
        | ({"metric": "purchase", "value": 2.0} if t == "conversion" else {})
        for n, v in enumerate(["control", "treatment", "control"])
        for t in ("exposure", "conversion")
    ]
    path = tmp_path / "copy.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    # When imported
    with CaptureQueriesContext(connection) as queries_seen:
        out = _run(path, capsys)
    # Then every event is stored through the staging table (one INSERT … SELECT per batch), none otherwise
    assert "copy.jsonl: 6 accepted, 0 duplicate, 0 rejected" in out
    moves = [q["sql"] for q in queries_seen if "FROM tracking_event_staging" in q["sql"]]
    direct = [q["sql"] for q in queries_seen if q["sql"].startswith('INSERT INTO "tracking_event" (')
              and "staging" not in q["sql"]]  # fmt: skip
    assert (len(moves), direct) == (2, [])
    assert sorted(Event.objects.values_list("user_key", "event_type")) == sorted(
        (r["user_key"], r["event_type"]) for r in rows
    )
    assert sorted(Assignment.objects.values_list("user_key", "variant__key")) == [
        ("c0", "control"), ("c1", "treatment"), ("c2", "control")
    ]  # fmt: skip
    # And a rerun is all duplicates (the staging table is empty at each commit)
    assert "copy.jsonl: 0 accepted, 6 duplicate, 0 rejected" in _run(path, capsys)
    assert Event.objects.count() == 6
