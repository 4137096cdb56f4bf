"""Catalog metrics on the readout: every per-user rule against an independent computation on randomized
events (repeat conversions by event_id, events just inside/outside windows and delays, negative delay,
filtered-out props, zero denominators, funnel steps out of order, ties in time). Runs on SQLite and
PostgreSQL (the PostgreSQL pass of make test)."""

from __future__ import annotations

import random
from datetime import timedelta

import numpy as np
import pytest

from experiments import catalog, services
from experiments.models import Metric
from readouts.exports import readout_as_json
from readouts.selectors import readout_get
from tests.readouts.conftest import T0
from tracking.models import Event

pytestmark = pytest.mark.django_db
US = timedelta(microseconds=1)
H = timedelta(hours=1)

# prop value sent -> its text as the filter reads it (None: absent / JSON null)
PROPS = [("web", "web"), ("app", "app"), (True, "true"), (1, "1"), (None, None), ("missing", None)]


@pytest.fixture
def plan(catalog_plan):
    """A draft with one metric of every kind and rule (catalog rows)."""
    return catalog_plan("rules")


def _offsets(rng: random.Random) -> list[timedelta]:
    """Conversion times relative to exposure, many on the rule boundaries."""
    edges = [
        -3 * H, -2 * H - US, -2 * H, -US, timedelta(0), 0.5 * H - US, 0.5 * H, H - US, H, 6 * H, 6 * H + US,
        25 * H, 25 * H + US, 46 * H, 46 * H + US, 72.5 * H, 72.5 * H + US, 100 * H,
    ]  # fmt: skip
    return [rng.choice(edges) if rng.random() < 0.6 else timedelta(seconds=rng.uniform(-7200, 400_000))
            for _ in range(rng.randint(0, 7))]  # fmt: skip


def _add_events(exp, seed: int) -> None:
    rng = random.Random(seed)
    variants = list(exp.variants.all())
    events, eid = [], 0
    for u in range(80):
        variant = variants[u % 2]
        user = f"u{u}"
        x = T0 + timedelta(seconds=rng.randint(0, 86_400), microseconds=rng.randint(0, 999_999))
        if rng.random() < 0.9:  # some users only convert, never exposed
            events.append(Event(experiment=exp, variant=variant, user_key=user, event_type="exposure", occurred_at=x))
        last = None
        for off in _offsets(rng):
            metric = rng.choice(["purchase", "purchase", "cart", "view", "other"])
            at = last if (last is not None and rng.random() < 0.2) else x + off  # ties in time
            last = at
            value, text = rng.choice(PROPS)
            props = {} if value == "missing" else {"channel": value}
            eid += 1
            repeat = events[-1].event_id if events and events[-1].event_id and rng.random() < 0.15 else None
            events.append(
                Event(experiment=exp, variant=variant, user_key=user, event_type="conversion", metric=metric,
                      value=round(rng.choice([0.0, rng.uniform(1, 40), rng.uniform(50, 400)]), 2),
                      occurred_at=at, props=props, event_id=repeat or f"e{seed}-{eid}")
            )  # fmt: skip
    Event.objects.bulk_create(events, ignore_conflicts=True)


# --- the independent computation (reads the stored events back; written without readouts code) --------
def _text(props: dict):
    """The prop's text by hand (True and 1 are equal dict keys in Python, so no lookup table)."""
    value = props.get("channel")
    for sent, text in PROPS:
        if type(sent) is type(value) and sent == value:
            return text
    return None


def _stored(exp):
    exposures = {e.user_key: e for e in Event.objects.filter(experiment=exp, event_type="exposure", metric="")}
    convs: dict[str, list] = {}
    for e in Event.objects.filter(experiment=exp, event_type="conversion").order_by("id"):
        convs.setdefault(e.user_key, []).append(e)
    return exposures, convs


def _is_counted(m: Metric, x, c, event=None) -> bool:
    lo = x.occurred_at + timedelta(hours=m.delay_hours)
    hi = None if m.window_hours is None else lo + timedelta(hours=m.window_hours)
    if c.metric != (event or m.event) or c.occurred_at < lo or (hi is not None and c.occurred_at > hi):
        return False
    return not m.filter_prop or _text(c.props) in m.filter_values


def _raw(m: Metric, exposures, convs) -> dict[str, tuple[float, bool]]:
    out = {}
    for user, x in exposures.items():
        counted = [c for c in convs.get(user, []) if _is_counted(m, x, c)]
        if m.kind == "binary":
            value = 1.0 if counted else 0.0
        elif m.aggregation == "count":
            value = float(len(counted))
        else:
            value = sum(c.value or 0.0 for c in counted)
        out[user] = (value, bool(counted))
    return out


def _values(m: Metric, exposures, convs):
    raw = _raw(m, exposures, convs)
    cap = None
    if m.cap == "absolute":
        cap = m.cap_value
    elif m.cap == "percentile":
        pool = [v for v, _ in raw.values() if not (m.cap_ignore_zeros and v == 0)]
        cap = float(np.quantile(pool, m.cap_value))
    if cap is not None:
        raw = {u: (min(v, cap), conv) for u, (v, conv) in raw.items()}
    return raw, cap


def _funnel_steps(m: Metric, exposures, convs) -> dict[str, int]:
    reached = {}
    for user, x in exposures.items():
        lo = x.occurred_at + timedelta(hours=m.delay_hours)
        hi = lo + timedelta(hours=m.window_hours)
        at, k = lo, 0
        for step in m.steps:
            times = [c.occurred_at for c in convs.get(user, []) if c.metric == step and at <= c.occurred_at <= hi]
            if not times:
                break
            at, k = min(times), k + 1
        reached[user] = k
    return reached


def _by_key(body: dict) -> dict:
    return {v["key"]: v for v in body["variants"]}


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_readout__catalog_metrics_on_random_events__equal_independent_computation(plan, seed):
    # Given randomized events around every rule boundary
    _add_events(plan, seed)
    exposures, convs = _stored(plan)
    variant_of = {u: x.variant.key for u, x in exposures.items()}
    # When / Then every binary and mean metric has the independent per-variant sums and cap
    for key in ("conv", "rev_p", "rev_pz", "rev_abs", "orders", "carts"):
        m = Metric.objects.get(key=key)
        values, cap = _values(m, exposures, convs)
        body = readout_as_json(readout_get(experiment=plan, metric=key))
        assert body["metric_kind"] == m.kind and body["definition"]["key"] == key
        assert body["definition"]["event"] == m.event
        assert body["cap_applied"] == (pytest.approx(cap, rel=1e-12) if cap is not None else None)
        for vkey, v in _by_key(body).items():
            mine = [values[u] for u in values if variant_of[u] == vkey]
            assert v["n"] == len(mine)
            assert v["conversions"] == sum(conv for _, conv in mine)
            assert v["sum"] == pytest.approx(sum(x for x, _ in mine), rel=1e-9, abs=1e-9)
            if m.kind == "mean":
                assert v["sum_squares"] == pytest.approx(sum(x * x for x, _ in mine), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_readout__ratio_metric_on_random_events__sums_equal_independent_computation(plan, seed):
    _add_events(plan, seed)
    exposures, convs = _stored(plan)
    variant_of = {u: x.variant.key for u, x in exposures.items()}
    num, num_cap = _values(Metric.objects.get(key="rev_p"), exposures, convs)
    den, _ = _values(Metric.objects.get(key="orders"), exposures, convs)
    body = readout_as_json(readout_get(experiment=plan, metric="rpo"))
    assert body["metric_kind"] == "ratio"
    assert body["definition"]["numerator"]["key"] == "rev_p" and body["definition"]["denominator"]["cap"] == "none"
    assert body["cap_applied"] == {"numerator": pytest.approx(num_cap), "denominator": None}
    for vkey, v in _by_key(body).items():
        users = [u for u in exposures if variant_of[u] == vkey]
        m = np.array([num[u][0] for u in users])
        d = np.array([den[u][0] for u in users])
        assert v["n"] == len(users)
        assert v["numerator_sum"] == pytest.approx(m.sum(), rel=1e-9, abs=1e-9)
        assert v["numerator_sum_squares"] == pytest.approx((m * m).sum(), rel=1e-9, abs=1e-9)
        assert v["denominator_sum"] == pytest.approx(d.sum(), rel=1e-9, abs=1e-9)
        assert v["denominator_sum_squares"] == pytest.approx((d * d).sum(), rel=1e-9, abs=1e-9)
        assert v["sum_products"] == pytest.approx((m * d).sum(), rel=1e-9, abs=1e-9)
        assert v["mean"] == (pytest.approx(m.sum() / d.sum(), rel=1e-12) if d.sum() else None)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_readout__funnel_on_random_events__steps_equal_independent_computation(plan, seed):
    _add_events(plan, seed)
    exposures, convs = _stored(plan)
    variant_of = {u: x.variant.key for u, x in exposures.items()}
    reached = _funnel_steps(Metric.objects.get(key="funnel"), exposures, convs)
    body = readout_as_json(readout_get(experiment=plan, metric="funnel"))
    assert body["metric_kind"] == "funnel"
    assert [s["event"] for s in body["steps"]] == ["view", "cart", "purchase"]
    for k, step in enumerate(body["steps"]):
        for v in step["variants"]:
            users = [u for u in exposures if variant_of[u] == v["key"]]
            assert v["n"] == len(users)
            assert v["reached"] == sum(1 for u in users if reached[u] > k)
            assert v["share"] == pytest.approx(v["reached"] / len(users))
        assert [c["variant"] for c in step["comparisons"]] == ["treatment"]
    last = body["steps"][-1]
    assert {v["key"]: v["conversions"] for v in body["variants"]} == {v["key"]: v["reached"] for v in last["variants"]}
    assert body["comparisons"][0]["p_value"] == last["comparisons"][0]["p_value"]


def test_readout__ratio_with_no_denominator_events__nulls_with_reason_not_500(plan, client, owner):
    # Given exposures only (every denominator is 0)
    variants = list(plan.variants.all())
    Event.objects.bulk_create(
        [
            Event(experiment=plan, variant=variants[i % 2], user_key=f"z{i}", event_type="exposure", occurred_at=T0)
            for i in range(20)
        ]  # fmt: skip
    )
    body = readout_as_json(readout_get(experiment=plan, metric="rpo"))
    assert all(v["mean"] is None for v in body["variants"])
    comparison = body["comparisons"][0]
    assert comparison["rel_lift"] is None and comparison["p_value"] is None
    assert "denominator sum is 0" in comparison["lift_note"]


def test_readout__catalog_edited_after_approval__readout_unchanged(plan, owner):
    from experiments.models import Experiment
    from tests.tracking.conftest import set_status

    # Given an approved (frozen) plan with events
    _add_events(plan, 5)
    Experiment.objects.filter(pk=plan.pk).update(preregistration=services.preregistration_build(plan))
    set_status(plan, "running")
    plan.refresh_from_db()
    before = {k: readout_as_json(readout_get(experiment=plan, metric=k)) for k in ("conv", "rev_p", "rpo", "funnel")}
    # When the catalog is edited (windows, caps, steps)
    for key, changes in {
        "conv": {"window_hours": 1.0, "filter_values": ["app"]},
        "rev_p": {"cap_value": 0.5},
        "orders": {"aggregation": "sum"},
        "funnel": {"steps": ["view", "purchase"]},
    }.items():
        m = Metric.objects.get(key=key)
        for field, value in changes.items():
            setattr(m, field, value)
        catalog.metric_save(metric=m, actor=owner)
    # Then the readout is computed from the approved definitions, exactly as before
    for key, body in before.items():
        after = readout_as_json(readout_get(experiment=plan, metric=key))
        for field in ("definition", "cap_applied", "variants", "steps"):
            assert after.get(field) == body.get(field), (key, field)
    assert Metric.objects.get(key="rev_p").changes.first().running_experiments == ["rules"]


def test_seed_demo__catalog_showcase__every_kind_on_its_readout(client):
    from django.contrib.auth import get_user_model

    from experiments.demo_data import demo_seed

    # Given the demo (its catalog is imported as metrics-as-code, the showcase experiment uses it)
    demo_seed()
    assert Metric.objects.get(key="revenue-p99").official
    client.force_login(get_user_model().objects.get(username="reviewer"))
    bodies = {
        key: client.get(f"/api/experiments/catalog-showcase/readout?metric={key}").json()
        for key in ("purchase-72h", "revenue-p99", "orders-per-user", "revenue-per-order", "shop-funnel")
    }
    # Then every kind shows with its definition
    assert {k: b["metric_kind"] for k, b in bodies.items()} == {
        "purchase-72h": "binary", "revenue-p99": "mean", "orders-per-user": "mean",
        "revenue-per-order": "ratio", "shop-funnel": "funnel",
    }  # fmt: skip
    assert bodies["purchase-72h"]["definition"]["window_hours"] == 72
    assert bodies["revenue-p99"]["cap_applied"] > 0
    assert all(v["mean"] > 0 for v in bodies["revenue-per-order"]["variants"])
    assert [s["event"] for s in bodies["shop-funnel"]["steps"]] == ["product_view", "add_to_cart", "purchase"]
    assert all(s["variants"][0]["reached"] > 0 for s in bodies["shop-funnel"]["steps"])
    page = client.get("/experiments/catalog-showcase/readout?metric=shop-funnel")
    assert page.status_code == 200


# --- dimension breakdowns of catalog metrics: the readout's per-user values, split by an exposure prop -------
TIERS = ["gold", "silver", "bronze", None]  # None: the exposure has no `tier` prop


def _tier_exposures(exp, seed: int) -> dict[str, str | None]:
    """Give each exposure a random `tier` prop (or none); the user → slice map the breakdown should find."""
    rng = random.Random(seed * 31)
    slice_of = {}
    for x in Event.objects.filter(experiment=exp, event_type="exposure"):
        tier = rng.choice(TIERS)
        x.props = {} if tier is None else {"tier": tier}
        x.save(update_fields=["props"])
        slice_of[x.user_key] = tier
    return slice_of


@pytest.mark.parametrize("seed", [1, 2])
def test_dimension__catalog_metrics__slices_equal_independent_per_user_values(plan, seed):
    from scipy import stats as sps
    from statsmodels.stats.proportion import proportions_ztest

    from readouts.dimensions import dimension_breakdown_get

    # Given randomized events and exposures spread over three tiers and users without one
    _add_events(plan, seed)
    slice_of = _tier_exposures(plan, seed)
    exposures, convs = _stored(plan)
    variant_of = {u: x.variant.key for u, x in exposures.items()}
    shown = lambda t: "(none)" if t is None else t  # noqa: E731
    for key in ("conv", "rev_p", "orders", "carts", "rpo", "funnel"):
        m = Metric.objects.get(key=key)
        # The independent per-user value (binary: converted, mean: capped value, funnel: reached every step,
        # ratio: (numerator, denominator)); caps over every exposed user, as in the readout
        if m.kind == "ratio":
            num, _ = _values(m.numerator, exposures, convs)
            den, _ = _values(m.denominator, exposures, convs)
            value = {u: (num[u][0], den[u][0]) for u in exposures}
        elif m.kind == "funnel":
            reached = _funnel_steps(m, exposures, convs)
            value = {u: float(reached[u] == len(m.steps)) for u in exposures}
        else:
            values, _ = _values(m, exposures, convs)
            value = {u: (float(conv) if m.kind == "binary" else v) for u, (v, conv) in values.items()}
        # When the selected metric is broken down by `tier`
        breakdown = dimension_breakdown_get(
            experiment=plan, readout=readout_get(experiment=plan, metric=key), key="tier"
        ).as_json()
        # Then every slice has the independent users, mean and (binary, mean) test
        sizes = {shown(t): sum(1 for u in exposures if slice_of[u] == t) for t in TIERS}
        want_order = sorted((t for t in sizes if t != "(none)" and sizes[t]), key=lambda t: (-sizes[t], t))
        assert [s["value"] for s in breakdown["slices"]] == [*want_order, "(none)"], key
        for s in breakdown["slices"]:
            arms = {v: [u for u in exposures if shown(slice_of[u]) == s["value"] and variant_of[u] == v]
                    for v in ("control", "treatment")}  # fmt: skip
            for v in s["variants"]:
                users = arms[v["key"]]
                assert v["n"] == len(users), key
                if m.kind == "ratio":
                    d = sum(value[u][1] for u in users)
                    want = sum(value[u][0] for u in users) / d if d else None
                else:
                    want = sum(value[u] for u in users) / len(users) if users else None
                assert v["mean"] == (pytest.approx(want, rel=1e-9, abs=1e-12) if want is not None else None), key
            (c,) = s["comparisons"]
            t, k = [value[u] for u in arms["treatment"]], [value[u] for u in arms["control"]]
            if m.kind in ("binary", "funnel") and 0 < sum(t) + sum(k) < len(t) + len(k):
                want_p = float(proportions_ztest([sum(t), sum(k)], [len(t), len(k)])[1])
                assert c["p_value"] == pytest.approx(want_p, rel=1e-6), key
            elif m.kind == "mean" and len(t) > 1 and len(k) > 1 and (np.var(t) > 0 or np.var(k) > 0):
                want_p = float(sps.ttest_ind(t, k, equal_var=False).pvalue)
                assert c["p_value"] == pytest.approx(want_p, rel=1e-6), key


@pytest.mark.parametrize("key", ["conv", "rev_p", "rpo", "funnel"])
def test_dimension__one_slice_for_everyone__equals_the_readout(plan, key, client, owner):
    from django.contrib.auth.models import Permission

    # Given users none of whom has the prop (one slice, `(none)`, holds every exposed user)
    _add_events(plan, 5)
    owner.user_permissions.add(*Permission.objects.filter(codename="view_experiment"))
    client.force_login(owner)
    # When the readout is read with ?dimension= over real HTTP (a ratio once answered 500)
    response = client.get(f"/api/experiments/{plan.slug}/readout", {"metric": key, "dimension": "nobody_has_it"})
    assert response.status_code == 200, response.content[:300]
    body = response.json()
    # Then the slice's means and p-values are the readout's own
    (only,) = body["dimension"]["slices"]
    assert only["value"] == "(none)"
    means = {v["key"]: v["mean"] for v in body["variants"]}
    assert {v["key"]: v["mean"] for v in only["variants"]} == pytest.approx(means, rel=1e-9)
    assert only["comparisons"][0]["p_value"] == pytest.approx(body["comparisons"][0]["p_value"], rel=1e-9)
