"""Stored verdict summaries (readouts/summaries.py): the experiment list reads each experiment's summary from a row
keyed by a fingerprint of its inputs, and never shows one whose inputs changed. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from experiments.models import Experiment, Variant
from readouts import rollups, summaries
from readouts.models import DataSource, ReadoutSnapshot, RollupWatermark, VerdictSummary
from readouts.verdicts import experiment_verdicts_get
from tracking.models import ServiceAPIKey, VariantConflict

pytestmark = pytest.mark.django_db


def _start(exp, *, days_ago: float = 2.0) -> None:
    """Running since ``days_ago`` (the status field is protected: set it directly, as the tests' set_status)."""
    Experiment.objects.filter(pk=exp.pk).update(started_at=timezone.now() - timedelta(days=days_ago))
    with connection.cursor() as cursor:
        table = connection.ops.quote_name(Experiment._meta.db_table)
        cursor.execute(f"UPDATE {table} SET status = %s WHERE id = %s", ["running", exp.pk])


@pytest.fixture
def reader(make_user, client):
    user = make_user("list-reader", groups=("ops",))
    client.force_login(user)
    return user


@pytest.fixture
def track():
    """track(exp, variant, users=n, converted=k, prefix=...): exposures and conversions through /api/track/batch."""
    _, key = ServiceAPIKey.objects.create_key(name="summaries")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")

    def _send(exp, variant, *, users, converted=0, prefix=None, metric=None):
        at = timezone.now() - timedelta(hours=1)
        prefix = prefix or f"{variant}-"
        items = []
        for i in range(users):
            base = {"experiment": exp.slug, "variant": variant, "user_key": f"{prefix}{i}"}
            items.append({**base, "event_type": "exposure", "occurred_at": (at + timedelta(seconds=i)).isoformat()})
            if i < converted:
                items.append({**base, "event_type": "conversion", "metric": metric or exp.primary_metric,
                              "occurred_at": (at + timedelta(seconds=i, minutes=1)).isoformat()})  # fmt: skip
        for start in range(0, len(items), 1000):
            response = api.post("/api/track/batch", {"events": items[start : start + 1000]}, format="json")
            assert response.status_code == 200, response.content
            assert not response.json().get("rejected"), response.json()["rejected"][:3]

    return _send


def _row(html: str, slug: str) -> str:
    return html.split(f'data-slug="{slug}"')[1].split("</tr>")[0]


def _label(html: str, slug: str) -> str:
    return _row(html, slug).split('data-verdict="')[1].split('"')[0]


def _writes(ctx) -> list[str]:
    return [q["sql"] for q in ctx.captured_queries if "readouts_verdictsummary" in q["sql"] and "INSERT" in q["sql"]]


# --- the fingerprint ---------------------------------------------------------------------------------------
def _fingerprint_now(exp) -> tuple[str, str]:
    """The experiment's fingerprint as the list computes it (plain rows) and as the writers do (models)."""
    qs = Experiment.objects.filter(pk=exp.pk)
    [listed] = summaries.listed_get(qs)
    variants, metrics = summaries._plans(qs)
    plain = summaries._fingerprint(listed.inputs, variants[exp.pk], metrics.get(exp.pk, []))
    [model] = summaries.with_inputs(qs)
    return plain, summaries.summary_fingerprint(model)


def test_summary_fingerprint__plain_rows_and_models__equal_and_every_input_counts(
    make_experiment, add_events, owner, settings
):
    from experiments import catalog
    from experiments.models import ExperimentMetric, Metric

    # Given a running experiment with a catalog metric row, JSON fields, a watermark and rollups
    exp = make_experiment("fp")
    metric = catalog.metric_save(metric=Metric(key="rev", name="Rev", kind="mean"), actor=owner, source="service")
    ExperimentMetric.objects.create(experiment=exp, key="purchase", role="primary", kind="binary")
    ExperimentMetric.objects.create(experiment=exp, metric=metric, key="rev", role="secondary", kind="mean")
    Experiment.objects.filter(pk=exp.pk).update(dimensions=["country"], targeting={"all": [{"attr": "x"}]})
    _start(exp)
    add_events(exp, "control", exposures=20, conversions=3)
    rollups.catch_up(experiment_id=exp.pk)
    seen = []

    def fingerprint() -> str:
        plain, model = _fingerprint_now(exp)
        assert plain == model  # the list's plain rows and the writers' models agree exactly
        seen.append(plain)
        return plain

    # When each input changes in turn, Then the fingerprint changes each time (and only then)
    fingerprint()
    assert fingerprint() == seen[0]  # nothing changed
    Experiment.objects.filter(pk=exp.pk).update(alpha=0.01)
    fingerprint()
    Experiment.objects.filter(pk=exp.pk).update(preregistration={"metrics": [], "note": "approved"})
    fingerprint()
    Variant.objects.filter(experiment=exp, key="treatment").update(weight=3)
    fingerprint()
    ExperimentMetric.objects.filter(experiment=exp, key="purchase").update(direction="decrease")
    fingerprint()
    metric.window_hours = 24
    catalog.metric_save(metric=metric, actor=owner)
    fingerprint()
    add_events(exp, "treatment", exposures=5, conversions=1)
    rollups.catch_up(experiment_id=exp.pk)  # the watermark moves
    fingerprint()
    wm = RollupWatermark.objects.get(experiment=exp)
    wm.save()  # a rebuild at the same ids (recompute_readouts) still bumps the rollups' version
    fingerprint()
    control, treatment = exp.variants.order_by("-is_control")
    VariantConflict.objects.create(experiment=exp, user_key="c1", event_type="exposure", metric="",
                                   assigned_variant=control, reported_variant=treatment,
                                   occurred_at=timezone.now())  # fmt: skip
    fingerprint()
    settings.SIGNALDASH_BAYES_PRIOR_SD = 0.5
    fingerprint()
    Experiment.objects.filter(pk=exp.pk).update(name="Renamed")
    fingerprint()
    assert len(set(seen)) == len(seen) - 1  # every change gave a new fingerprint; the repeat gave the same
    Experiment.objects.filter(pk=exp.pk).update(updated_at=timezone.now())  # not an input
    assert _fingerprint_now(exp)[0] == seen[-1]


# --- the list never shows a stale summary ----------------------------------------------------------------
def test_list__ingest_changes_verdict__list_shows_the_new_verdict_never_the_stored_one(
    client, reader, make_experiment, track
):
    # Given a running experiment with a flat result, read by the list once (its summary is stored)
    exp = make_experiment("turns-winner")
    _start(exp)
    track(exp, "control", users=300, converted=30)
    track(exp, "treatment", users=300, converted=31)
    rollups.catch_up(experiment_id=exp.pk)
    assert _label(client.get("/").content.decode(), exp.slug) == "inconclusive"
    stored = VerdictSummary.objects.get(experiment=exp)
    assert stored.data["verdicts"][0]["label"] == "inconclusive"
    # When new treatment users arrive through the tracking API and are caught up by a readout that stores no
    # summary (the readout time series), so the stored summary is now out of date
    track(exp, "treatment", users=300, converted=90, prefix="late-")
    assert client.get("/api/experiments/turns-winner/readout/timeseries").status_code == 200
    assert VerdictSummary.objects.get(experiment=exp).fingerprint == stored.fingerprint
    # Then the list shows the new verdict, the readout's, and stores it in place of the old one
    with CaptureQueriesContext(connection) as ctx:
        html = client.get("/").content.decode()
    [verdict] = experiment_verdicts_get(experiment=Experiment.objects.get(pk=exp.pk))
    assert verdict.label == "untrustworthy"  # 300 vs 600 exposed at 50/50 weights: a sample-ratio mismatch
    assert _label(html, exp.slug) == verdict.label and f"treatment: {verdict.headline}" in _row(html, exp.slug)
    assert "900" in _row(html, exp.slug)
    assert len(_writes(ctx)) == 1
    fresh = VerdictSummary.objects.get(experiment=exp)
    assert fresh.fingerprint != stored.fingerprint and fresh.data["verdicts"][0]["label"] == "untrustworthy"
    # And the next request reads it without writing
    with CaptureQueriesContext(connection) as ctx:
        assert _label(client.get("/").content.decode(), exp.slug) == "untrustworthy"
    assert _writes(ctx) == []


def test_readout_page__after_ingest__stores_the_summary_the_list_then_reads(client, reader, make_experiment, track):
    # Given a running experiment whose summary the list stored, then more users through the tracking API
    exp = make_experiment("page-writes")
    _start(exp)
    track(exp, "control", users=200, converted=20)
    track(exp, "treatment", users=200, converted=21)
    client.get("/")
    track(exp, "treatment", users=200, converted=20, prefix="more-")
    # When the readout page is opened (it catches up and computes the readout)
    assert client.get(f"/experiments/{exp.slug}/readout").status_code == 200
    # Then it stored the current summary: the list reads it without computing or writing, and agrees
    with CaptureQueriesContext(connection) as ctx:
        html = client.get("/").content.decode()
    assert _writes(ctx) == [] and not any('"readouts_rollup"' in q["sql"] for q in ctx.captured_queries)
    [verdict] = experiment_verdicts_get(experiment=Experiment.objects.get(pk=exp.pk))
    assert _label(html, exp.slug) == verdict.label == "untrustworthy" and "600" in _row(html, exp.slug)


def test_list__variant_weights_edited__summary_recomputed(client, reader, make_experiment, add_events):
    # Given a balanced experiment at 1:1 read by the list (inconclusive)
    exp = make_experiment("weights")
    _start(exp)
    add_events(exp, "control", exposures=400, conversions=40)
    add_events(exp, "treatment", exposures=400, conversions=41)
    rollups.catch_up(experiment_id=exp.pk)
    assert _label(client.get("/").content.decode(), exp.slug) == "inconclusive"
    # When the weights are edited to 3:1 (no new event, no catch-up)
    Variant.objects.filter(experiment=exp, key="treatment").update(weight=3)
    # Then 400 vs 400 exposed is now a sample-ratio mismatch on the list, as on the readout
    [verdict] = experiment_verdicts_get(experiment=Experiment.objects.get(pk=exp.pk))
    assert _label(client.get("/").content.decode(), exp.slug) == verdict.label == "untrustworthy"


def test_catch_up_rollups__stores_summaries__list_computes_nothing(client, reader, make_experiment, add_events):
    from io import StringIO

    from django.core.management import call_command

    # Given two running experiments with events not yet caught up
    for slug, conv in (("cron-a", 80), ("cron-b", 40)):
        exp = make_experiment(slug)
        _start(exp)
        add_events(exp, "control", exposures=400, conversions=40)
        add_events(exp, "treatment", exposures=400, conversions=conv)
    # When the cron command runs
    out = StringIO()
    call_command("catch_up_rollups", stdout=out)
    # Then it caught them up and stored both summaries; the list reads them without computing anything
    assert "2 verdict summaries recomputed." in out.getvalue()
    with CaptureQueriesContext(connection) as ctx:
        html = client.get("/").content.decode()
    assert _writes(ctx) == [] and not any('"readouts_rollup"' in q["sql"] for q in ctx.captured_queries)
    assert _label(html, "cron-a") == "won" and _label(html, "cron-b") == "inconclusive"
    call_command("catch_up_rollups", stdout=(again := StringIO()))
    assert "0 verdict summaries recomputed." in again.getvalue()


# --- experiments read like their readout page ----------------------------------------------------------------
def _snapshot(exp, source, *, control: tuple[int, int], treatment: tuple[int, int]) -> ReadoutSnapshot:
    day = (timezone.now() - timedelta(days=1)).date().isoformat()
    zero = {"total": 0.0, "total_sq": 0.0, "products": 0.0, "products_bin": 0.0, "late": 0, "unexposed": 0}
    sums = []
    for variant, (users, converted) in (("control", control), ("treatment", treatment)):
        sums.append({**zero, "kind": "exposure", "variant": variant, "metric": "", "day": day, "users": users,
                     "events": users})  # fmt: skip
        sums.append({**zero, "kind": "conversion", "variant": variant, "metric": exp.primary_metric, "day": day,
                     "users": converted, "events": converted, "total": float(converted),
                     "total_sq": float(converted)})  # fmt: skip
    return ReadoutSnapshot.objects.create(
        experiment=exp, data_source=source, status="ok", rows={"sums": sums, "health": {}},
        started_at=timezone.now(), finished_at=timezone.now(),
    )  # fmt: skip


def test_list__warehouse_experiment__keyed_on_its_latest_ok_snapshot(client, reader, make_experiment):
    # Given a warehouse experiment whose latest ok snapshot is flat, read by the list
    source = DataSource.objects.create(key="wh", name="Warehouse", engine="postgresql", url_env="WH_URL",
                                       exposure_sql="SELECT 1", events_sql="SELECT 1")  # fmt: skip
    exp = make_experiment("wh-exp")
    Experiment.objects.filter(pk=exp.pk).update(data_source=source)
    _start(exp)
    _snapshot(exp, source, control=(1000, 100), treatment=(1000, 102))
    assert _label(client.get("/").content.decode(), exp.slug) == "inconclusive"
    # When a refresh lands a new ok snapshot (a failed one after it changes nothing)
    _snapshot(exp, source, control=(1000, 100), treatment=(1000, 160))
    ReadoutSnapshot.objects.create(experiment=exp, data_source=source, status="failed", error="timeout")
    # Then the list reads the new snapshot's verdict, the readout's
    html = client.get("/").content.decode()
    [verdict] = experiment_verdicts_get(experiment=Experiment.objects.get(pk=exp.pk))
    assert _label(html, exp.slug) == verdict.label == "won" and "2,000" in _row(html, exp.slug)


def test_list__catalog_rule_metric__same_as_readout_and_recomputed_after_catch_up(
    client, reader, make_experiment, add_events, owner
):
    from experiments import catalog
    from experiments.models import ExperimentMetric, Metric

    # Given a running experiment whose primary metric is a catalog metric with a window (not rollup-shaped)
    metric = catalog.metric_save(
        metric=Metric(key="quick", name="Quick", kind="binary", event="purchase", window_hours=1),
        actor=owner,
        source="service",
    )
    exp = make_experiment("windowed", metric="quick")
    ExperimentMetric.objects.create(experiment=exp, metric=metric, key="quick", role="primary", kind="binary")
    _start(exp, days_ago=30)
    start = timezone.now() - timedelta(days=10)
    add_events(exp, "control", exposures=400, conversions=40, metric="purchase", start=start)
    add_events(exp, "treatment", exposures=400, conversions=42, metric="purchase", start=start)
    rollups.catch_up(experiment_id=exp.pk)
    assert summaries.needs_full_readout(Experiment.objects.prefetch_related("metrics").get(pk=exp.pk))
    assert _label(client.get("/").content.decode(), exp.slug) == "inconclusive"
    # When more users arrive (treatment users convert within the window, control users only after it), and
    # are caught up
    add_events(exp, "treatment", exposures=300, conversions=150, metric="purchase", prefix="wt-", start=start)
    add_events(exp, "control", exposures=300, conversions=150, metric="purchase", prefix="wc-", start=start,
               convert_after=2 * 3600)  # fmt: skip
    rollups.catch_up(experiment_id=exp.pk)
    # Then the list shows the readout's new verdict: 192 vs 40 converted within the window, a win (read
    # from the rollups' plain counts, 192 vs 190 would be inconclusive)
    html = client.get("/").content.decode()
    [verdict] = experiment_verdicts_get(experiment=Experiment.objects.get(pk=exp.pk))
    assert _label(html, exp.slug) == verdict.label == "won" and "1,400" in _row(html, exp.slug)


def test_list_csv__stored_summaries__same_bytes_as_computed_and_exact_readout_numbers(
    client, reader, make_experiment, add_events
):
    from readouts.selectors import readout_get

    # Given two running experiments with events, caught up
    for slug, conv in (("csv-a", 70), ("csv-b", 44)):
        exp = make_experiment(slug, variants=(("control", True, 1), ("t1", False, 1), ("t2", False, 1)))
        _start(exp)
        add_events(exp, "control", exposures=500, conversions=50)
        add_events(exp, "t1", exposures=500, conversions=conv)
        add_events(exp, "t2", exposures=500, conversions=53)
        rollups.catch_up(experiment_id=exp.pk)
    # When the CSV is exported twice: computed (and stored), then read from the stored summaries
    with CaptureQueriesContext(connection) as first_ctx:
        first = client.get("/?format=csv").content.decode()
    with CaptureQueriesContext(connection) as second_ctx:
        second = client.get("/?format=csv").content.decode()
    # Then the bytes are the same, the second computed nothing, and the numbers are the readout's exactly
    assert len(_writes(first_ctx)) == 1 and _writes(second_ctx) == []
    assert second == first
    lines = {line.split(",")[0]: line.split(",") for line in second.splitlines()[1:]}
    for slug in ("csv-a", "csv-b"):
        readout = readout_get(experiment=Experiment.objects.get(slug=slug))
        comparisons = next(r for r in readout.results if r.role == "primary").comparisons
        row = lines[slug]
        assert row[7] == "t1; t2"
        assert row[9] == "; ".join(repr(c.rel.rel_lift) for c in comparisons)
        assert row[12] == "; ".join(repr(c.p_value) for c in comparisons)
