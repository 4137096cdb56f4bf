"""Refreshing warehouse readouts: background task, button, command, failures that keep the numbers, no URL leaks."""

from __future__ import annotations

import io
import json
import logging
import zipfile

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from readouts.exports import readout_bundle
from readouts.models import DataSource, ReadoutSnapshot
from readouts.selectors import readout_get
from readouts.sources.refresh import snapshot_request, snapshot_run, source_test
from tests.readouts import warehouse_data
from tests.readouts.test_warehouse_duckdb import duckdb_source, write_lake
from tests.readouts.warehouse_helpers import running_experiment, start_time

pytestmark = pytest.mark.django_db(transaction=False)
SECRET = "s3cr3t-lake-7781"  # in the DuckDB file's path: the URL must never show up anywhere


@pytest.fixture
def lake(tmp_path, monkeypatch, owner):
    """A warehouse experiment on a DuckDB file whose path (the URL) holds SECRET."""
    started = start_time()
    ds = warehouse_data.build(start=started, internal_key="unused", warehouse_key="wh-exp", users=80)
    folder = tmp_path / SECRET
    folder.mkdir()
    url = write_lake(folder, ds, parquet=False)
    monkeypatch.setenv("SD_TEST_DUCKDB_URL", url)
    source = duckdb_source(folder, parquet=False)
    exp = running_experiment(owner, "wh-exp", started=started, data_source=source)
    return exp, source, url


def _refresh(exp) -> ReadoutSnapshot:
    return snapshot_run(snapshot=snapshot_request(experiment=exp, triggered_by="test")[0])


@pytest.mark.django_db(transaction=True)  # the worker commits and closes connections, as in production
def test_refresh_button__ops__queues_task_worker_runs_it_page_shows_age(client, make_user, lake):
    # Given an ops user on the readout page of a warehouse experiment
    exp, _, _ = lake
    client.force_login(make_user("opsy", groups=("ops",)))
    # When they press "Refresh results" twice before a worker runs
    first = client.post(f"/experiments/{exp.slug}/readout/refresh")
    second = client.post(f"/experiments/{exp.slug}/readout/refresh")
    # Then one snapshot is queued (the second request joined it) and the page says a refresh is queued
    assert first.status_code == 302 and second.status_code == 302
    assert ReadoutSnapshot.objects.filter(experiment=exp).count() == 1
    assert ReadoutSnapshot.objects.get(experiment=exp).status == "queued"
    assert b"data-snapshot-active" in client.get(f"/experiments/{exp.slug}/readout").content
    # When the django-tasks database worker processes its queue
    call_command("db_worker", "--batch", "--no-startup-delay", verbosity=0)
    # Then the snapshot is ok and the page shows its numbers and age, not stale
    snap = ReadoutSnapshot.objects.get(experiment=exp)
    assert snap.status == "ok", snap.error
    page = client.get(f"/experiments/{exp.slug}/readout")
    assert page.status_code == 200 and b"data-snapshot-age" in page.content and b"data-stale" not in page.content
    assert b"Refresh results" in page.content
    assert sum(v.exposures for v in readout_get(experiment=exp).variants) > 0


def test_refresh_button__reviewer__forbidden_and_nothing_queued(client, make_user, lake):
    exp, _, _ = lake
    client.force_login(make_user("rev", groups=("reviewer",)))
    assert client.post(f"/experiments/{exp.slug}/readout/refresh").status_code == 403
    assert not ReadoutSnapshot.objects.filter(experiment=exp).exists()
    assert b"Refresh results" not in client.get(f"/experiments/{exp.slug}/readout").content


@pytest.mark.django_db(transaction=True)
def test_refresh_command__all_running__queues_and_reports(lake):
    exp, _, _ = lake
    out = io.StringIO()
    call_command("refresh_readouts", "--all-running", "--no-wait", stdout=out)
    assert "Queued 1 refresh" in out.getvalue()
    call_command("db_worker", "--batch", "--no-startup-delay", verbosity=0)
    assert ReadoutSnapshot.objects.get(experiment=exp).status == "ok"
    with pytest.raises(CommandError, match="--experiment SLUG or --all-running"):
        call_command("refresh_readouts")


def test_snapshot__older_than_setting__marked_stale(client, make_user, lake, settings):
    exp, _, _ = lake
    assert _refresh(exp).status == "ok"
    settings.SIGNALDASH_SNAPSHOT_STALE_HOURS = 0
    client.force_login(make_user("opsy", groups=("ops",)))
    assert b"data-stale" in client.get(f"/experiments/{exp.slug}/readout").content


BAD_SOURCES = {
    "missing env var": ({"url_env": "SD_TEST_NOT_SET"}, "SD_TEST_NOT_SET is not set"),
    "missing column": ({"exposure_sql": "SELECT experiment_key, user_key, timestamp FROM exposures"}, "no column"),
    "write attempt": ({"events_sql": "INSERT INTO events SELECT * FROM events"}, "exactly one SELECT"),
    "timeout": (
        {
            "events_sql": "SELECT e.* FROM events e, range(100000) a, range(100000) b WHERE a.range + b.range = -1",
            "timeout_s": 1,
        },
        "timeout of 1 s",
    ),
    "engine down": ({"engine": "postgresql", "url_env": "SD_TEST_DOWN_URL"}, "Could not connect to PostgreSQL"),
    "wrong password": ({"engine": "postgresql", "url_env": "SD_TEST_BADPW_URL"}, "Could not connect to PostgreSQL"),
}


@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_refresh__bad_source__failed_snapshot_plain_message_previous_numbers_kept(
    case, lake, client, make_user, monkeypatch, caplog
):
    # Given a warehouse experiment with a good snapshot
    exp, source, url = lake
    assert _refresh(exp).status == "ok"
    before = readout_get(experiment=exp).rows
    # When its source goes bad and it is refreshed again
    changes, message = BAD_SOURCES[case]
    monkeypatch.setenv("SD_TEST_DOWN_URL", "postgresql://sd:" + SECRET + "@127.0.0.1:1/warehouse")
    # a closed port stands for a wrong password too: the server's answer never reaches the message unscrubbed
    monkeypatch.setenv("SD_TEST_BADPW_URL", "postgresql://sd:" + SECRET + "@127.0.0.1:9/warehouse")
    DataSource.objects.filter(pk=source.pk).update(**changes)
    exp.refresh_from_db()
    caplog.set_level(logging.INFO)
    failed = _refresh(exp)
    # Then the snapshot failed with a plain message, and the readout keeps the previous numbers
    assert failed.status == "failed" and message in failed.error, failed.error
    assert readout_get(experiment=exp).rows == before
    client.force_login(make_user("opsy", groups=("ops",)))
    page = client.get(f"/experiments/{exp.slug}/readout")
    assert page.status_code == 200 and b"data-snapshot-error" in page.content
    # and neither the URL nor its secret part shows anywhere
    _assert_no_secret(exp, page.content, caplog.text, url)


def test_refresh__passing__url_nowhere_in_db_logs_page_bundle(lake, client, make_user, caplog):
    exp, _, url = lake
    caplog.set_level(logging.DEBUG)
    assert _refresh(exp).status == "ok"
    client.force_login(make_user("opsy", groups=("ops",)))
    page = client.get(f"/experiments/{exp.slug}/readout")
    _assert_no_secret(exp, page.content, caplog.text, url)


def _assert_no_secret(exp, page: bytes, logs: str, url: str) -> None:
    out = io.StringIO()
    call_command("dumpdata", "readouts", "experiments", "django_tasks_database", stdout=out)
    bundle = readout_bundle(readout_get(experiment=exp))
    texts = {"db": out.getvalue(), "page": page.decode(), "logs": logs}
    with zipfile.ZipFile(io.BytesIO(bundle)) as z:
        texts["bundle"] = "\n".join(z.read(n).decode() for n in z.namelist())
    texts["api"] = json.dumps(readout_get(experiment=exp).queries[0].params)
    for where, text in texts.items():
        assert SECRET not in text and url not in text, where


def test_test_connection__good_and_bad_source__columns_or_exact_problem(lake, monkeypatch):
    exp, source, _ = lake
    ok = source_test(source=source)
    assert ok.ok and "experiment_key" in ok.message and "event_id" in ok.message
    source.events_sql = "SELECT user_key, event FROM events"
    bad = source_test(source=source)
    assert not bad.ok and "no column timestamp, value" in bad.message


def test_datasource_admin__superuser_only(client, make_user):
    client.force_login(make_user("opsy", groups=("ops",), is_staff=True))
    assert client.get("/admin/readouts/datasource/add/").status_code == 403
    client.force_login(make_user("root", is_superuser=True))
    assert client.get("/admin/readouts/datasource/add/").status_code == 200
