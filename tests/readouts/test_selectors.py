"""The readout aggregate (distinct users, exposure before conversion), warnings and the decision record."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import timedelta

import pytest
from django.apps import apps
from django.db import connection
from django.test.utils import CaptureQueriesContext

from readouts.exports import readout_as_json, readout_csv, readout_decision_record
from readouts.selectors import readout_get
from tests.readouts.conftest import T0

pytestmark = pytest.mark.django_db

HAS_CONFLICTS = "variantconflict" in {m._meta.model_name for m in apps.get_app_config("tracking").get_models()}
# variants, the metric plan, the rollup state (= the aggregate's rows, readouts/rollups.py), [variant conflicts]
READOUT_QUERIES = 3 + (1 if HAS_CONFLICTS else 0)


def _event(exp, variant_key, user, kind, minutes, metric=""):
    from tracking.models import Event

    return Event(
        experiment=exp,
        variant=exp.variants.get(key=variant_key),
        user_key=user,
        event_type=kind,
        metric=metric,
        occurred_at=T0 + timedelta(minutes=minutes),
    )


def _by_key(data):
    return {v["key"]: v for v in data["variants"]}


def test_readout_get__conversion_timing__counts_only_conversions_at_or_after_exposure(make_experiment):
    from tracking.models import Event

    # Given users converting after, at the same instant as, and before their exposure, and one never exposed
    exp = make_experiment()
    Event.objects.bulk_create(
        [
            _event(exp, "control", "after", "exposure", 0),
            _event(exp, "control", "after", "conversion", 5, "purchase"),
            _event(exp, "control", "same", "exposure", 1),
            _event(exp, "control", "same", "conversion", 1, "purchase"),
            _event(exp, "treatment", "before", "exposure", 10),
            _event(exp, "treatment", "before", "conversion", 2, "purchase"),
            _event(exp, "treatment", "never", "conversion", 3, "purchase"),
            _event(exp, "treatment", "t2", "exposure", 4),
        ]
    )
    # When
    data = readout_as_json(readout_get(experiment=exp))
    # Then
    v = _by_key(data)
    assert (v["control"]["exposures"], v["control"]["conversions"]) == (2, 2)
    assert (v["treatment"]["exposures"], v["treatment"]["conversions"]) == (2, 0)
    cwe = next(w for w in data["warnings"] if w["code"] == "conversion_without_exposure")
    assert (cwe["count"], cwe["never_exposed"], cwe["before_exposure"]) == (2, 1, 1)


def test_readout_get__user_converting_on_several_metrics__counted_once_per_metric(make_experiment):
    from tracking.models import Event

    # Given one exposed user converting on two metrics and one user converting on the primary only
    exp = make_experiment()
    Event.objects.bulk_create(
        [
            _event(exp, "control", "u1", "exposure", 0),
            _event(exp, "control", "u1", "conversion", 1, "purchase"),
            _event(exp, "control", "u1", "conversion", 2, "signup"),
            _event(exp, "control", "u2", "exposure", 0),
            _event(exp, "control", "u2", "conversion", 3, "purchase"),
        ]
    )
    # When
    primary = readout_as_json(readout_get(experiment=exp))
    signup = readout_as_json(readout_get(experiment=exp, metric="signup"))
    # Then users, not events, are counted
    assert (_by_key(primary)["control"]["exposures"], _by_key(primary)["control"]["conversions"]) == (2, 2)
    assert (_by_key(signup)["control"]["exposures"], _by_key(signup)["control"]["conversions"]) == (2, 1)
    assert primary["metrics"] == ["purchase", "signup"]
    assert signup["metric"] == "signup"


def test_readout_get__duplicate_exposure__rejected_by_dedup_constraint_the_count_relies_on(make_experiment):
    from django.db import IntegrityError, transaction

    from tracking.models import Event

    # Given an exposed user (COUNT(*) in the aggregate equals distinct users only because of event_dedup)
    exp = make_experiment()
    Event.objects.bulk_create([_event(exp, "control", "u1", "exposure", 0)])
    # When / Then a second exposure row for the same user cannot exist
    with pytest.raises(IntegrityError), transaction.atomic():
        Event.objects.bulk_create([_event(exp, "treatment", "u1", "exposure", 5)])
    assert _by_key(readout_as_json(readout_get(experiment=exp)))["control"]["exposures"] == 1


def test_readout_get__more_variants_and_metrics__same_query_count(
    make_experiment, add_events, django_assert_num_queries
):
    # Given a small experiment and a large one (5 variants, 4 metrics)
    small = make_experiment("small")
    add_events(small, "control", exposures=5, conversions=2)
    variants = [("control", True, 1)] + [(f"t{i}", False, 1) for i in range(4)]
    big = make_experiment("big", variants=variants)
    for key, _, _ in variants:
        add_events(big, key, exposures=20, conversions=7)
    for metric in ("signup", "click", "refund"):
        from tracking.models import Event

        Event.objects.bulk_create([_event(big, "t1", f"t1-u{i}", "conversion", 30, metric) for i in range(3)])
    # When / Then the number of queries does not grow: the first readouts also catch the rollups up
    with CaptureQueriesContext(connection) as first_small:
        readout_get(experiment=small)
    with CaptureQueriesContext(connection) as first_big:
        readout_get(experiment=big)
    assert len(first_small.captured_queries) == len(first_big.captured_queries)
    with django_assert_num_queries(READOUT_QUERIES):
        readout_get(experiment=small)
    with django_assert_num_queries(READOUT_QUERIES):
        r = readout_get(experiment=big)
    assert len(r.comparisons) == 4
    assert set(r.metrics) == {"purchase", "signup", "click", "refund"}


def test_readout_get__warnings__srm_small_sample_and_missing_exposures(make_experiment, add_events):
    # Given a 50/50 experiment with a 1000 vs 700 split, and a third arm nobody saw
    exp = make_experiment(variants=(("control", True, 1), ("treatment", False, 1), ("ghost", False, 1)))
    add_events(exp, "control", exposures=1000, conversions=100)
    add_events(exp, "treatment", exposures=700, conversions=5)
    # When
    data = readout_as_json(readout_get(experiment=exp))
    # Then
    codes = [w["code"] for w in data["warnings"]]
    assert codes == ["srm", "missing_exposures", "small_sample"]
    srm = data["warnings"][0]
    assert srm["p_value"] == data["srm"]["p_value"] < 0.001
    assert data["warnings"][1]["variants"] == ["ghost"]
    assert data["warnings"][2]["variants"] == ["treatment"]
    ghost = next(c for c in data["comparisons"] if c["variant"] == "ghost")
    assert ghost["p_value"] is None and "no exposed users" in ghost["note"]


def test_readout_as_json__zero_control_conversions__lift_null_with_message(make_experiment, add_events):
    # Given a control with no conversions
    exp = make_experiment()
    add_events(exp, "control", exposures=500, conversions=0)
    add_events(exp, "treatment", exposures=500, conversions=20)
    # When
    data = readout_as_json(readout_get(experiment=exp))
    # Then the contract shapes hold
    (comp,) = data["comparisons"]
    assert comp["lift"] is None
    assert comp["lift_note"] == "Lift undefined (control conversion rate is 0)"
    assert comp["variant"] == "treatment" and comp["control"] == "control"
    assert comp["diff"] == pytest.approx(0.04)
    assert len(comp["diff_ci"]) == 2 and comp["p_value"] is not None
    assert _by_key(data)["treatment"]["rate"] == pytest.approx(0.04)
    assert len(_by_key(data)["treatment"]["rate_ci"]) == 2
    assert set(data) >= {"variants", "comparisons", "warnings", "srm", "metric", "computed_at"}
    json.dumps(data, allow_nan=False)


def test_readout_csv__formula_like_variant_name__neutralised(make_experiment, add_events):
    from experiments.models import Variant

    # Given a variant whose name looks like a spreadsheet formula
    exp = make_experiment()
    Variant.objects.filter(experiment=exp, key="treatment").update(name="=HYPERLINK(1)")
    add_events(exp, "control", exposures=3, conversions=1)
    # When
    text = readout_csv(readout_get(experiment=exp))
    # Then
    assert text.splitlines()[0].startswith("metric,role,kind,direction,variant,name,is_control,weight,exposures")
    assert "'=HYPERLINK(1)" in text


def test_readout_decision_record__experiment__json_and_zip_bundle(make_experiment, add_events):
    # Given
    exp = make_experiment()
    add_events(exp, "control", exposures=200, conversions=20)
    add_events(exp, "treatment", exposures=210, conversions=30)
    # When
    data, bundle = readout_decision_record(experiment=exp)
    # Then
    assert data["metric"] == "purchase" and len(data["variants"]) == 2
    with zipfile.ZipFile(io.BytesIO(bundle)) as zf:
        assert sorted(zf.namelist()) == ["query.sql", "query_params.json", "readout.json", "summary.md", "variants.csv"]
        assert json.loads(zf.read("readout.json"))["variants"] == data["variants"]
        assert "LEFT JOIN" in zf.read("query.sql").decode()
        params = json.loads(zf.read("query_params.json"))
        assert params[0]["params"]["experiment_id"] == exp.pk
        assert "Checkout" in zf.read("summary.md").decode()


def test_readout_daily_series__events_over_days__cumulative_per_variant_without_extra_query(
    make_experiment, django_assert_num_queries
):
    from readouts.selectors import readout_daily_series
    from tracking.models import Event

    # Given exposures on days 0 and 2 and conversions on days 1 and 2 (one of another metric)
    exp = make_experiment()
    day = 24 * 60
    Event.objects.bulk_create(
        [
            _event(exp, "control", "a", "exposure", 0),
            _event(exp, "control", "b", "exposure", 2 * day),
            _event(exp, "treatment", "c", "exposure", 1),
            _event(exp, "control", "a", "conversion", day, "purchase"),
            _event(exp, "control", "b", "conversion", 2 * day + 5, "purchase"),
            _event(exp, "treatment", "c", "conversion", 2 * day, "signup"),
        ]
    )
    readout = readout_get(experiment=exp, by_day=True)
    # When
    with django_assert_num_queries(0):
        series = readout_daily_series(readout=readout)
    # Then
    assert [d.isoformat() for d in series["days"]] == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert series["exposures"] == {"control": [1, 1, 2], "treatment": [1, 1, 1]}
    assert series["conversions"] == {"control": [0, 1, 2], "treatment": [0, 0, 0]}


@pytest.mark.skipif(not HAS_CONFLICTS, reason="tracking.VariantConflict not present")
def test_readout_get__rejected_variant_conflicts__variant_conflict_warning_with_count(make_experiment, add_events):
    from tracking.models import VariantConflict

    # Given two rejected conflicts in this experiment and one in another
    exp, other = make_experiment(), make_experiment("other")
    add_events(exp, "control", exposures=3)
    control, treatment = exp.variants.get(key="control"), exp.variants.get(key="treatment")
    VariantConflict.objects.bulk_create(
        [
            VariantConflict(
                experiment=e,
                user_key=f"u{i}",
                event_type="exposure",
                assigned_variant=e.variants.get(key="control") if e == other else control,
                reported_variant=e.variants.get(key="treatment") if e == other else treatment,
                occurred_at=T0,
            )
            for i, e in enumerate([exp, exp, other])
        ]
    )
    # When
    data = readout_as_json(readout_get(experiment=exp))
    # Then
    warning = next(w for w in data["warnings"] if w["code"] == "variant_conflict")
    assert warning["count"] == 2 and "2 event(s) were rejected" in warning["message"]
    assert data["data_quality"]["variant_conflicts"] == 2


def test_readout_get__by_day_query__same_numbers_as_totals_query(make_experiment):
    import random

    from tracking.models import Event

    # Given randomised events over ten days, on two metrics, some before exposure and some unexposed
    rng = random.Random(7)
    exp = make_experiment(variants=(("control", True, 1), ("b", False, 1), ("c", False, 2)))
    events = []
    for i in range(400):
        key = rng.choice(["control", "b", "c"])
        exposed_at = rng.randrange(0, 10 * 24 * 60)
        if rng.random() < 0.9:
            events.append(_event(exp, key, f"u{i}", "exposure", exposed_at))
        for metric in ("purchase", "signup"):
            if rng.random() < 0.3:
                events.append(_event(exp, key, f"u{i}", "conversion", exposed_at + rng.randrange(-600, 3000), metric))
    Event.objects.bulk_create(events)
    for metric in ("purchase", "signup"):
        # When
        totals = readout_as_json(readout_get(experiment=exp, metric=metric))
        by_day = readout_as_json(readout_get(experiment=exp, metric=metric, by_day=True))
        # Then
        for data in (totals, by_day):
            data.pop("computed_at")
        assert totals == by_day
