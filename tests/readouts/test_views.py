"""Readout page, API (session or API key), CSV / bundle downloads, permissions, escaping, scenarios."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.apps import apps

from signaldash.ratelimit.queries import hit_statements

pytestmark = pytest.mark.django_db

XSS = "<script>alert(1)</script>"
HAS_CONFLICTS = "variantconflict" in {m._meta.model_name for m in apps.get_app_config("tracking").get_models()}


@pytest.fixture
def seeded(make_experiment, add_events):
    exp = make_experiment()
    add_events(exp, "control", exposures=300, conversions=30)
    add_events(exp, "treatment", exposures=310, conversions=45)
    return exp


@pytest.fixture
def member(client, make_user):
    user = make_user("member", groups=("reviewer",))
    client.force_login(user)
    return user


def test_readout_page__anonymous__redirects_to_login(client, seeded):
    response = client.get("/experiments/checkout/readout")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_readout_page__logged_in__table_comparison_charts_and_fallback_narrative(client, member, seeded):
    # When
    response = client.get("/experiments/checkout/readout")
    # Then
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="variants-table"' in html and 'data-variant="treatment"' in html
    assert "10.00%" in html and "14.52%" in html  # 30/300 and 45/310
    assert html.count('class="chart') >= 3  # rate and two cumulative charts (plus lift charts)
    assert 'id="scorecard"' in html and 'data-metric="purchase"' in html
    assert 'data-verdict="Inconclusive"' in html and 'id="next-step"' in html
    assert "Fixed-horizon view" in html
    assert "proves" not in html
    assert 'data-field="source">fallback<' in html


def test_readout_page__more_variants_and_metrics__constant_query_count(
    client, member, make_experiment, add_events, django_assert_max_num_queries
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    # Given a 2-arm experiment and a 6-arm one with several metrics
    small = make_experiment("small")
    add_events(small, "control", exposures=10, conversions=1)
    variants = [("control", True, 1)] + [(f"t{i}", False, 1) for i in range(5)]
    big = make_experiment("big", variants=variants)
    for key, _, _ in variants:
        add_events(big, key, exposures=30, conversions=5)
        add_events(big, key, exposures=30, conversions=7, metric="signup", prefix=f"{key}-s")
    # When
    with CaptureQueriesContext(connection) as small_q:
        assert client.get("/experiments/small/readout").status_code == 200
    with CaptureQueriesContext(connection) as big_q:
        assert client.get("/experiments/big/readout").status_code == 200
    # Then
    assert len(big_q.captured_queries) == len(small_q.captured_queries)
    with django_assert_max_num_queries(len(small_q.captured_queries)):
        client.get("/experiments/big/readout?metric=signup")


def test_readout_page__hostile_names__escaped_everywhere(client, member, make_experiment, add_events):
    from experiments.models import Variant

    # Given an experiment and a variant named like a script
    exp = make_experiment("xss", name=XSS)
    Variant.objects.filter(experiment=exp, key="treatment").update(name=XSS)
    add_events(exp, "control", exposures=50, conversions=5)
    add_events(exp, "treatment", exposures=50, conversions=9)
    # When
    html = client.get("/experiments/xss/readout").content.decode()
    # Then
    assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_readout_page__malformed_metric__400(client, member, seeded):
    assert client.get("/experiments/checkout/readout?metric=%3Cb%3E").status_code == 400


def test_readout_api__anonymous__401_json_not_redirect(client, seeded):
    response = client.get("/api/experiments/checkout/readout")
    assert response.status_code in (401, 403)
    assert response["Content-Type"].startswith("application/json")


def test_readout_api__session__contract_fields(client, member, seeded):
    # When
    response = client.get("/api/experiments/checkout/readout")
    # Then
    data = response.json()
    assert response.status_code == 200
    assert data["metric"] == "purchase"
    assert [v["key"] for v in data["variants"]] == ["control", "treatment"]
    control = data["variants"][0]
    assert set(control) >= {"key", "name", "is_control", "exposures", "conversions", "rate", "rate_ci"}
    assert (control["exposures"], control["conversions"], control["rate"]) == (300, 30, pytest.approx(0.1))
    (comp,) = data["comparisons"]
    assert set(comp) >= {"variant", "control", "diff", "diff_ci", "lift", "z", "p_value"}
    assert comp["diff"] == pytest.approx(45 / 310 - 0.1)
    assert comp["lift"] == pytest.approx((45 / 310 - 0.1) / 0.1 * 100)
    assert comp["z"] > 0
    assert set(data["srm"]) >= {"chi2", "p_value"}
    assert data["computed_at"]


def test_readout_api__bearer_api_key__200(client, seeded):
    from tracking.models import ServiceAPIKey

    # Given a service key with the read scope
    _, key = ServiceAPIKey.objects.create_key(name="warehouse", scopes="read")
    # When
    response = client.get("/api/experiments/checkout/readout", HTTP_AUTHORIZATION=f"Bearer {key}")
    # Then
    assert response.status_code == 200
    assert response.json()["variants"][1]["conversions"] == 45


def test_readout_api__revoked_or_bad_key__401(client, seeded):
    response = client.get("/api/experiments/checkout/readout", HTTP_AUTHORIZATION="Bearer nope.nope")
    assert response.status_code == 401


def test_readout_api__metric_param__selects_metric_and_rejects_malformed(client, member, seeded, add_events):
    # Given signup conversions for some control users
    from tracking.models import Event

    exp = seeded
    control = exp.variants.get(key="control")
    Event.objects.bulk_create(
        [
            Event(
                experiment=exp,
                variant=control,
                user_key=f"control-u{i}",
                event_type="conversion",
                metric="signup",
                occurred_at=Event.objects.get(
                    experiment=exp, user_key=f"control-u{i}", event_type="exposure"
                ).occurred_at,
            )
            for i in range(4)
        ]
    )
    # When
    ok = client.get("/api/experiments/checkout/readout?metric=signup").json()
    bad = client.get("/api/experiments/checkout/readout?metric=%27;drop")
    # Then
    assert ok["metric"] == "signup" and ok["variants"][0]["conversions"] == 4
    assert bad.status_code == 400


def test_readout_api__unknown_experiment__404(client, member):
    assert client.get("/api/experiments/nope/readout").status_code == 404


def test_readout_api__query_count__constant(member, client, seeded, django_assert_num_queries):
    # session + user lookups are Django's, then the user's and groups' permissions (view_experiment), the
    # throttle's counter upsert and purge (one statement on PostgreSQL); readout: experiment, variants,
    # metric plan, aggregate, [conflicts];
    # governance (readouts/governance.py): the experiment's registered dimensions, the view INSERT (a session
    # user is a person: peeking), distinct conflict users, recorded views by status/metric/dimension;
    # the verdict summary (readouts.summaries): the experiment's id, its catch-up (nothing new: one statement),
    # then the variants and metric rows prefetched with the experiment and its inputs; the summary is current
    # after the warm-up, so nothing is written
    client.get("/api/experiments/checkout/readout")  # warm up the session (and store the verdict summary)
    with django_assert_num_queries(2 + 2 + hit_statements() + 4 + (1 if HAS_CONFLICTS else 0) + 4 + 4):
        client.get("/api/experiments/checkout/readout")


def test_readout_csv__download__attachment_with_table(client, member, seeded):
    response = client.get("/experiments/checkout/readout.csv")
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="checkout-purchase-readout.csv"'
    lines = response.content.decode().splitlines()
    assert lines[1].startswith("purchase,primary,binary,increase,control,Control,true,1,300,30,0.1,")
    assert len(lines) == 3


def test_readout_bundle__download__zip_with_sql_and_params(client, member, seeded):
    response = client.get("/experiments/checkout/readout-bundle.zip")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as zf:
        assert {"summary.md", "readout.json", "variants.csv", "query.sql", "query_params.json"} <= set(zf.namelist())


def test_regenerate_permission__ops_group__granted_by_migration(make_user):
    ops = make_user("opsy", groups=("ops",))
    plain = make_user("plain")
    assert ops.has_perm("readouts.regenerate_narrative")
    assert not plain.has_perm("readouts.regenerate_narrative")


def test_regenerate__without_permission__403(client, member, seeded):
    response = client.post("/experiments/checkout/readout/narrative/regenerate", HTTP_ACCEPT="application/json")
    assert response.status_code == 403


SCENARIO_EXPECTATIONS = {
    "recs-carousel": "srm",
    "onboarding-tooltip": "small_sample",
    "referral-banner": "Lift undefined (control conversion rate is 0)",
    "search-ranking-v2": "conversion_without_exposure",
}
NOT_STARTED = "dark-mode-default"  # in review: no "missing exposures" warning before anyone could be exposed


def test_readout__demo_scenarios__expected_warnings_on_page_and_api(client, member):
    from experiments.demo_data import demo_seed

    # Given the lead's demo scenarios (seeded once: it takes a few seconds)
    from experiments.management.commands.seed_demo import analyze_event_tables

    demo_seed()
    analyze_event_tables()  # as `manage.py seed_demo` does: fresh table statistics for the planner
    for slug, expected in SCENARIO_EXPECTATIONS.items():
        # When
        html = client.get(f"/experiments/{slug}/readout").content.decode()
        # Then
        assert expected in html, slug
    assert "missing_exposures" not in client.get(f"/experiments/{NOT_STARTED}/readout").content.decode()
    data = client.get("/api/experiments/recs-carousel/readout").json()
    srm = next(w for w in data["warnings"] if w["code"] == "srm")
    assert srm["p_value"] == data["srm"]["p_value"] < 0.001
    assert data["srm"]["chi2"] > 10
    assert "small_sample" not in [w["code"] for w in data["warnings"]]
    referral = client.get("/api/experiments/referral-banner/readout").json()
    assert referral["comparisons"][0]["lift"] is None
