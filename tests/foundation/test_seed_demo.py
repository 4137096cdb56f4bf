"""`manage.py seed_demo` loads every scenario through the real workflow and is idempotent.

The demo is seeded once for the module (it takes seconds): `seeded` opens a transaction around all
tests here, each test runs in a savepoint inside it, and the whole seed is rolled back at the end.
"""

from __future__ import annotations

import io
import json
import sys

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection, transaction

from experiments import services
from experiments.demo_data import SCENARIOS_PATH
from experiments.models import AuditLog, Decision, Experiment, Variant
from tracking.models import Assignment, Event

pytestmark = pytest.mark.django_db

SCENARIOS = {s["slug"]: s for s in json.loads(SCENARIOS_PATH.read_text())["experiments"]}


def _seed() -> str:
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def _counts() -> dict[str, int]:
    return {
        "experiments": Experiment.objects.count(),
        "variants": Variant.objects.count(),
        "events": Event.objects.count(),
        "assignments": Assignment.objects.count(),
        "audit": AuditLog.objects.count(),
        "decisions": Decision.objects.count(),
        "users": get_user_model().objects.count(),
    }


@pytest.fixture(scope="module")
def seeded(django_db_setup, django_db_blocker):
    """The output of the first `seed_demo` on an empty database; the seed is visible to every test here."""
    with django_db_blocker.unblock():
        outer = transaction.atomic()
        outer.__enter__()
        try:
            output = _seed()
            # Fire the deferred foreign-key checks of the seed once, here: a test's savepoint rollback would
            # otherwise bring them back, and every test's teardown would check all of them again.
            connection.check_constraints()
        except BaseException:
            outer.__exit__(*sys.exc_info())
            raise
    yield output
    with django_db_blocker.unblock():
        transaction.set_rollback(True)
        outer.__exit__(None, None, None)


def test_seed_demo__first_run__creates_users_scenarios_and_prints_passwords_once(seeded):
    # When the demo is seeded on an empty database
    output = seeded
    # Then the three demo users exist with their roles, and their passwords are printed
    users = {u.username: u for u in get_user_model().objects.all()}
    assert set(users) == {"ops", "reviewer", "admin"}
    assert users["ops"].is_staff and users["ops"].groups.filter(name="ops").exists()
    assert users["reviewer"].groups.filter(name="reviewer").exists()
    assert users["admin"].is_superuser
    for name in ("ops", "reviewer", "admin"):
        line = next(line for line in output.splitlines() if line.strip().startswith(name + " "))
        assert users[name].check_password(line.split()[-1])
    # And every scenario reached its status through the real workflow, with the events it describes
    _assert_scenarios_reached_their_status_through_the_workflow()
    _assert_event_counts_match_the_scenario_file()


def test_seed_demo__second_run__changes_nothing(seeded):
    # Given a seeded database
    before = _counts()
    # When seeding again
    output = _seed()
    # Then nothing changed and no password is printed again
    assert _counts() == before
    assert "nothing changed" in output
    assert "Demo logins" not in output


def _assert_scenarios_reached_their_status_through_the_workflow():
    statuses = dict(Experiment.objects.values_list("slug", "status"))
    # the scenarios, plus the warehouse-native demo experiment on the Parquet lake (readouts/sources/demo.py)
    assert statuses == {**{slug: s["status"] for slug, s in SCENARIOS.items()}, "warehouse-checkout": "running"}
    assert set(statuses.values()) == {"draft", "review", "running", "readout", "shipped", "killed"}
    # every experiment has an audit trail: created, then (unless still a draft) submitted
    for slug, status in statuses.items():
        transitions = list(
            AuditLog.objects.filter(experiment__slug=slug).order_by("at", "id").values_list("transition", flat=True)
        )
        if status != "draft":
            assert transitions[:2] == ["create", "submit_for_review"]
    # decided experiments carry a decision with the rationale and a readout snapshot
    for decision in Decision.objects.select_related("experiment"):
        assert decision.outcome == decision.experiment.status
        assert decision.rationale == SCENARIOS[decision.experiment.slug]["decision"]
        assert decision.readout_snapshot.get("variants")


def _assert_event_counts_match_the_scenario_file():
    for slug, spec in SCENARIOS.items():
        for v in spec["variants"]:
            exposures = Event.objects.filter(experiment__slug=slug, variant__key=v["key"], event_type="exposure")
            assert exposures.count() == v.get("users", 0), (slug, v["key"])
            for metric, n in v.get("conversions", {}).items():
                conversions = Event.objects.filter(
                    experiment__slug=slug, variant__key=v["key"], event_type="conversion", metric=metric
                ).exclude(user_key__contains="-orphan-")
                late = spec.get("late_conversions", {}).get(metric, 0)
                assert conversions.count() == n + late, (slug, v["key"], metric)


def test_seed_demo__scenarios__readouts_show_the_warnings_they_were_built_for(seeded, client):
    # Given the seeded demo, and the reviewer logged in
    client.force_login(get_user_model().objects.get(username="reviewer"))

    def codes(slug: str) -> set[str]:
        response = client.get(f"/api/experiments/{slug}/readout")
        assert response.status_code == 200, response.content
        return {w["code"] for w in response.json()["warnings"]}

    # Then each scenario's readout carries the warning it exists to demonstrate
    assert "srm" in codes("recs-carousel")
    assert "small_sample" in codes("onboarding-tooltip")
    assert "conversion_without_exposure" in codes("search-ranking-v2")
    assert "srm" not in codes("free-shipping-threshold")
    assert codes("checkout-one-page").isdisjoint({"srm", "small_sample", "missing_exposures"})
    # And the clear winner is significant while the flat test is not
    winner = client.get("/api/experiments/checkout-one-page/readout").json()["comparisons"][0]
    flat = client.get("/api/experiments/search-ranking-v2/readout").json()["comparisons"][0]
    assert winner["p_value"] < 0.001 and winner["lift"] == pytest.approx(30.0)
    assert flat["p_value"] > 0.05
    # And the zero-control scenario says lift is undefined, on the page a person reads
    referral = client.get("/api/experiments/referral-banner/readout").json()["comparisons"][0]
    assert referral["lift"] is None
    page = client.get("/experiments/referral-banner/readout")
    assert "Lift undefined (control conversion rate is 0)" in page.content.decode()


def _normalise(text: str) -> str:
    return text.replace("\u2212", "-")


def _pp(x: float) -> str:
    return f"{x:+.1f}"


def test_seed_demo__decisions__rationale_claims_match_the_frozen_snapshot(seeded):
    # Given every seeded decision (shipped and killed)
    decisions = list(Decision.objects.select_related("experiment"))
    assert {d.experiment.slug for d in decisions} == {s for s, spec in SCENARIOS.items() if "decision" in spec}
    for decision in decisions:
        spec = SCENARIOS[decision.experiment.slug]
        claims, rationale, snapshot = spec["claims"], _normalise(decision.rationale), decision.readout_snapshot
        assert snapshot["metric"] == claims["metric"]
        c = next(c for c in snapshot["comparisons"] if c["variant"] == claims["variant"])
        rates = {v["key"]: v["mean"] for v in snapshot["variants"]}
        # Then each number the rationale states is the snapshot's number, rounded as written
        assert round(c["diff"] * 100, 1) == claims["diff_pp"], decision
        assert f"{abs(claims['diff_pp']):.1f} points" in rationale
        assert [round(x * 100, 1) for x in c["diff_ci"]] == claims["diff_ci_pp"]
        low, high = claims["diff_ci_pp"]
        assert f"95% CI {_pp(low)} to {_pp(high)} pp" in rationale
        assert [round(rates[claims["variant"]] * 100, 1), round(rates[c["control"]] * 100, 1)] == claims["rates_pct"]
        assert "{:.1f}% vs {:.1f}%".format(*claims["rates_pct"]) in rationale
        assert f"p = {claims['p']}" in rationale
        assert round(c["p_value"], len(claims["p"]) - 2) == float(claims["p"])
        # And the verdict it implies is the snapshot's: significant and better/worse, or not significant
        assert c["outcome"] == claims["outcome"]
        if claims["outcome"] == "inconclusive":
            assert "not significant" in rationale and low < 0 < high
        else:
            assert low * high > 0  # the interval excludes zero
        guardrails = [m for m in snapshot["scorecard"] if m["role"] == "guardrail"]
        if "guardrails" in claims:  # "refunds flat"
            assert guardrails and all(
                x["outcome"] == claims["guardrails"] for m in guardrails for x in m["comparisons"]
            )
        # And an override is recorded exactly when the scenario ships over a blocking problem
        assert decision.override_reason == spec.get("override_reason", "")
        override = (
            AuditLog.objects.get(experiment=decision.experiment, transition="ship").extra.get("override")
            if (decision.outcome == "shipped")
            else None
        )
        if "override" in claims:
            assert override == {"reason": spec["override_reason"], "problems": claims["override"]}
        else:
            assert override is None


def test_seed_demo__timeline__rows_carry_the_scenarios_dates(seeded):
    from datetime import timedelta

    from django.utils import timezone

    # Given the seeded demo (seeded moments ago)
    now = timezone.now()
    # Then no audit row or decision carries the seeding time: each happened on its scenario's dates
    assert not AuditLog.objects.filter(at__gt=now - timedelta(minutes=5)).exists()
    assert not Decision.objects.filter(decided_at__gt=now - timedelta(minutes=5)).exists()
    for slug, spec in SCENARIOS.items():
        exp = Experiment.objects.get(slug=slug)
        rows = {a.transition: a.at for a in AuditLog.objects.filter(experiment=exp)}
        if spec["status"] in ("running", "readout", "shipped", "killed"):
            ran = (exp.ended_at or now) - exp.started_at
            assert abs(ran - timedelta(days=spec["days"])) < timedelta(hours=1), slug
            assert rows["create"] < rows["submit_for_review"] < rows["approve_and_start"] == exp.started_at
        if spec["status"] in ("readout", "shipped", "killed"):
            assert rows["end_for_readout"] == exp.ended_at
            assert abs(now - exp.ended_at - timedelta(days=spec["ended_days_ago"])) < timedelta(hours=1), slug
        if "decision" in spec:
            assert exp.ended_at < exp.decision.decided_at < now
            assert exp.decision.readout_snapshot["computed_at"] == exp.decision.decided_at.isoformat()


def test_seed_demo__guardrail_scenario__ship_blocked_with_the_problems(seeded):
    # Given the scenarios built to be blocked (left in readout)
    blocked = {slug: spec for slug, spec in SCENARIOS.items() if "blocked_by" in spec}
    assert blocked
    ops = get_user_model().objects.get(username="ops")
    for slug, spec in blocked.items():
        exp = Experiment.objects.get(slug=slug)
        assert exp.status == "readout"
        # When ops tries to ship without an override
        with pytest.raises(services.WorkflowError) as refused, transaction.atomic():
            services.experiment_ship(experiment=exp, actor=ops, rationale="Ship it.")
        # Then the ship is refused for exactly the problems the scenario exists to show
        assert refused.value.code == "ship_blocked"
        assert refused.value.problems == spec["blocked_by"]


def test_seed_demo__revenue_metric__covariates_make_cuped_reduce_variance(seeded, client):
    # Given a running and a finished experiment with a revenue (mean) metric and a guardrail
    client.force_login(get_user_model().objects.get(username="reviewer"))
    for slug, status in (("checkout-one-page", "readout"), ("search-ranking-v2", "running")):
        assert SCENARIOS[slug]["status"] == status
        data = client.get(f"/api/experiments/{slug}/readout?metric=revenue").json()
        # Then the scorecard has the revenue and guardrail metrics, and CUPED narrows the revenue interval
        roles = {m["metric"]: m["role"] for m in data["scorecard"]}
        assert roles["revenue"] == "secondary" and "guardrail" in roles.values()
        assert data["metric_kind"] == "mean"
        cuped = data["comparisons"][0]["cuped"]
        assert cuped["variance_reduction"] > 0.2, slug
        width = data["comparisons"][0]["rel_lift_ci"][1] - data["comparisons"][0]["rel_lift_ci"][0]
        assert cuped["rel_lift_ci"][1] - cuped["rel_lift_ci"][0] < width
    # And repeat purchases were sent with event_ids (more revenue events than buyers)
    revenue_events = Event.objects.filter(experiment__slug="checkout-one-page", metric="revenue")
    assert revenue_events.exclude(event_id=None).count() == revenue_events.count()
    assert revenue_events.count() > revenue_events.values("user_key").distinct().count()


@pytest.mark.postgres_only
def test_seed_demo__postgresql__event_tables_analyzed_for_the_planner(seeded):
    # Given the seeded demo: the planner knows the event tables are not empty (ANALYZE ran after the bulk
    # load; never-analyzed tables have reltuples -1 and readouts were planned for empty tables: seconds)
    from tracking.models import Assignment, Event

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, reltuples FROM pg_class WHERE relname IN (%s, %s)",
            [Event._meta.db_table, Assignment._meta.db_table],
        )
        estimates = dict(cursor.fetchall())
    assert estimates[Event._meta.db_table] >= Event.objects.count() * 0.5
    assert estimates[Assignment._meta.db_table] > 0


def test_seed_demo__warehouse_experiment__broken_down_by_the_lakes_extra_columns(seeded, client):
    # Given the warehouse-native demo experiment (its exposures, with platform and country, live in the Parquet lake)
    client.force_login(get_user_model().objects.get(username="reviewer"))
    # When it is broken down by platform (pre-registered) on the API and on the page
    response = client.get("/api/experiments/warehouse-checkout/readout", {"dimension": "platform"})
    page = client.get("/experiments/warehouse-checkout/readout", {"dimension": "platform"})
    # Then both show the lake's slices, computed in the warehouse, with every exposed user in one of them
    assert response.status_code == 200 and page.status_code == 200
    body = response.json()
    dimension = body["dimension"]
    assert "unavailable" not in dimension and dimension["registered"] is True
    assert {s["value"] for s in dimension["slices"]} == {"web", "ios", "android"}
    exposed = {v["key"]: v["n"] for v in body["variants"]}
    for key, n in exposed.items():
        assert sum(v["n"] for s in dimension["slices"] for v in s["variants"] if v["key"] == key) == n
    html = page.content.decode()
    assert 'data-slice="web"' in html and "data-dimension-unavailable" not in html
    assert "<code>platform</code>, <code>country</code>" in html  # what it can be broken down by
    # and a column the lake does not have says so, naming the ones it has
    missing = client.get("/api/experiments/warehouse-checkout/readout", {"dimension": "browser"}).json()["dimension"]
    assert missing["slices"] == [] and "platform, country" in missing["unavailable"]
    # and country (not pre-registered) has its users without a value as "(none)"
    country = client.get("/api/experiments/warehouse-checkout/readout", {"dimension": "country"}).json()["dimension"]
    assert country["registered"] is False and "(none)" in {s["value"] for s in country["slices"]}
