"""Dimension breakdowns against an independent per-slice computation (plain Python + statsmodels/scipy), including
`(other)` and `(none)`; runs on SQLite and on PostgreSQL (the slice is extracted per vendor)."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportions_ztest

from tests.governance.conftest import conversion, exposure, send

pytestmark = pytest.mark.django_db

URL = "/api/experiments/{slug}/readout"
METRICS = [("purchase", "primary", "binary", "increase"), ("revenue", "secondary", "mean", "increase")]


def _population(api, experiment, seed=7):
    """Users with a `country` prop (a boolean, then 24 countries, by decreasing size), JSON null, or no prop."""
    rng = random.Random(seed)
    users, events = [], []
    values = [True] + [f"c{i:02d}" for i in range(24)] + [None, "absent"]
    for j, value in enumerate(values):
        for i in range(max(4, 60 - 2 * j)):
            variant = "control" if i % 2 == 0 else "green"
            key = f"u{j}-{i}"
            props = {} if value == "absent" else {"country": value, "other": 1}
            rate = 0.2 if variant == "control" else 0.35
            converted = rng.random() < rate
            revenue = round(rng.uniform(1, 50), 2) if rng.random() < 0.5 else 0.0
            events.append(exposure(experiment, variant, key, props=props))
            if converted:
                events.append(conversion(experiment, variant, key, "purchase"))
            if revenue:
                events.append(conversion(experiment, variant, key, "revenue", value=revenue, event_id=f"r-{key}-a"))
                events.append(conversion(experiment, variant, key, "revenue", value=1.5, event_id=f"r-{key}-b"))
            text = None if value in (None, "absent") else ("true" if value is True else value)
            total = revenue + 1.5 if revenue else 0.0
            users.append({"variant": variant, "slice": text, "purchase": float(converted), "revenue": total})
    send(api, events)
    return users


def _expected(users, metric: str, kind: str) -> dict:
    """Independent: group users by shown slice, then per variant n and mean; per slice the test and Holm."""
    size = defaultdict(int)
    for u in users:
        if u["slice"] is not None:
            size[u["slice"]] += 1
    top = sorted(size, key=lambda v: (-size[v], v))[:20]
    groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"control": [], "green": []})
    for u in users:
        shown = "(none)" if u["slice"] is None else (u["slice"] if u["slice"] in top else "(other)")
        groups[shown][u["variant"]].append(u[metric])
    order = [*top, *[v for v in ("(other)", "(none)") if v in groups]]
    out, raw = {}, []
    for value in order:
        c, t = groups[value]["control"], groups[value]["green"]
        mc, mt = sum(c) / len(c), sum(t) / len(t)
        if kind == "binary":
            count = [sum(t), sum(c)]
            p = None if sum(count) in (0, len(c) + len(t)) else float(proportions_ztest(count, [len(t), len(c)])[1])
        else:
            p = float(sps.ttest_ind(t, c, equal_var=False).pvalue)
        raw.append(p)
        out[value] = {"n": {"control": len(c), "green": len(t)}, "mean": {"control": mc, "green": mt}, "p": p}
        out[value]["rel_lift"] = (mt - mc) / mc if mc else None
    present = [p for p in raw if p is not None]
    adjusted = iter(multipletests(present, method="holm")[1])
    for value, p in zip(order, raw, strict=True):
        out[value]["p_adj"] = None if p is None else float(next(adjusted))
    return {"order": order, "slices": out}


@pytest.fixture
def population(running, api):
    experiment = running("dims", metrics=METRICS, dimensions=["country"])
    return experiment, _population(api, experiment)


@pytest.mark.parametrize(("metric", "kind"), [("purchase", "binary"), ("revenue", "mean")])
def test_dimension__slices__match_independent_computation(population, api, metric, kind):
    # Given users spread over 26 slice values (24 countries, true, JSON null) plus users without the prop
    experiment, users = population
    # When the breakdown by `country` is read
    body = api.get(URL.format(slug=experiment.slug), {"metric": metric, "dimension": "country"}).json()
    dim = body["dimension"]
    expected = _expected(users, metric, kind)
    # Then the 20 largest values come first, then (other) and (none), each matching the independent numbers
    assert (dim["key"], dim["registered"]) == ("country", True)
    assert [s["value"] for s in dim["slices"]] == expected["order"]
    assert expected["order"][-2:] == ["(other)", "(none)"] and "true" in expected["order"]
    for s in dim["slices"]:
        want = expected["slices"][s["value"]]
        assert {v["key"]: v["n"] for v in s["variants"]} == want["n"]
        for v in s["variants"]:
            assert v["mean"] == pytest.approx(want["mean"][v["key"]])
        (c,) = s["comparisons"]
        assert c["variant"] == "green"
        assert c["rel_lift"] == pytest.approx(want["rel_lift"])
        assert c["p_value"] == pytest.approx(want["p"], rel=1e-6)
        assert c["p_value_adjusted"] == pytest.approx(want["p_adj"], rel=1e-6)
        assert c["chance_to_beat"] is not None


def test_dimension__users_exposed_to_two_variants__left_out_of_every_slice(population, api):
    # Given users of several slices who are later exposed under the other variant too (an exposure conflict)
    experiment, users = population
    conflicted = {f"u{j}-{i}" for j in (0, 1, 2, 25, 26) for i in (0, 1, 3)}
    seconds = []
    for key in sorted(conflicted):
        i = int(key.split("-")[1])
        seconds.append(exposure(experiment, "green" if i % 2 == 0 else "control", key))
    rejected = send(api, seconds)
    assert len(rejected) == len(conflicted)
    kept = [u for n, u in enumerate(users) if _keys(experiment)[n] not in conflicted]
    # When the breakdown is read
    body = api.get(URL.format(slug=experiment.slug), {"metric": "revenue", "dimension": "country"}).json()
    expected = _expected(kept, "revenue", "mean")
    # Then the slices count only the users exposed to one variant, as the readout's metrics do
    assert [s["value"] for s in body["dimension"]["slices"]] == expected["order"]
    for s in body["dimension"]["slices"]:
        want = expected["slices"][s["value"]]
        assert {v["key"]: v["n"] for v in s["variants"]} == want["n"]
        for v in s["variants"]:
            assert v["mean"] == pytest.approx(want["mean"][v["key"]])
    assert sum(v["n"] for s in body["dimension"]["slices"] for v in s["variants"]) == len(kept)
    assert sum(v["n"] for v in body["variants"]) == len(kept)


def _keys(experiment) -> list[str]:
    """The user keys in the order ``_population`` builds its users."""
    return [f"u{j}-{i}" for j in range(27) for i in range(max(4, 60 - 2 * j))]


def test_dimension__not_registered__exploratory_and_no_chance_to_beat(population, api, client, ops):
    experiment, _ = population
    body = api.get(URL.format(slug=experiment.slug), {"dimension": "other"}).json()
    assert body["dimension"]["registered"] is False
    assert all(c["chance_to_beat"] is None for s in body["dimension"]["slices"] for c in s["comparisons"])
    assert [d["code"] for d in body["deviations"]].count("exploratory_dimension") == 1
    # And on the page it is labelled exploratory
    client.force_login(ops)
    page = client.get(f"/experiments/{experiment.slug}/readout", {"dimension": "other"})
    assert page.status_code == 200


@pytest.mark.parametrize("bad", ["x' OR 1=1 --", "a" * 65, "coun try", '"]$', "ü"])
def test_dimension__malformed_key__400_and_no_query(population, api, bad):
    experiment, _ = population
    response = api.get(URL.format(slug=experiment.slug), {"dimension": bad})
    assert response.status_code == 400 and "dimension" in response.content.decode()


def test_dimension__one_query_per_breakdown(population, api, django_assert_num_queries):
    experiment, _ = population
    url = URL.format(slug=experiment.slug)
    api.get(url)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as plain:
        api.get(url)
    with django_assert_num_queries(len(plain.captured_queries) + 1):
        api.get(url, {"dimension": "country"})


def test_governance_partial__exploratory_breakdown__renders_checks_deviations_and_slices(population, ops):
    # Given the page context the readout view builds (readouts/views.py readout_page)
    from django.template.loader import render_to_string

    from readouts.governance import readout_governance_for_view
    from readouts.selectors import readout_get

    experiment, _ = population
    readout = readout_get(experiment=experiment)
    governance, breakdown = readout_governance_for_view(readout=readout, user=ops, source="page", dimension="other")
    # When the partial the lead includes in readout.html is rendered
    html = render_to_string(
        "readouts/_governance.html",
        {"readout": readout, "governance": governance, "dimension": breakdown, "dimension_key": "other"},
    )
    # Then it shows every check, the exploratory label, and no chance-to-beat column
    assert all(f'data-code="{code}"' in html for code in ("srm", "peeking", "sample_progress"))
    assert "exploratory — not pre-registered" in html and "Chance to beat" not in html
    assert 'data-slice="1"' in html
