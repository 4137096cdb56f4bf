"""readouts.charts: server-side SVG that never looks broken (parsed, not eyeballed)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from readouts import charts
from readouts.selectors import readout_daily_series, readout_get, readout_timeseries

pytestmark = pytest.mark.django_db

LONG_KEY = "threshold-35-free-shipping-for-returning-customers-in-the-eu-xx"  # 63 characters


def _svg(markup) -> ET.Element:
    root = ET.fromstring(str(markup))  # well-formed XML, or this raises
    assert root.tag == "svg"
    return root


def _view_width(root: ET.Element) -> float:
    return float(root.get("viewBox").split()[2])


def _texts(root: ET.Element, cls: str) -> list[ET.Element]:
    return [t for t in root.iter("text") if cls in (t.get("class") or "").split()]


def _marks(root: ET.Element) -> list[ET.Element]:
    return [e for e in root.iter() if "mark" in (e.get("class") or "").split()]


def _charts_of(exp):
    readout = readout_get(experiment=exp)
    series = readout_daily_series(readout=readout)
    return readout, {
        "rate": charts.rate_chart_svg(readout),
        "exposures": charts.cumulative_chart_svg(readout, series, kind="exposures"),
        "conversions": charts.cumulative_chart_svg(readout, series, kind="conversions"),
        "effect": charts.effect_chart_svg(readout),
        "lift": charts.lift_timeseries_svg(readout_timeseries(readout=readout)),
    }


def test_charts__one_day_of_data__every_chart_has_visible_marks(ux_experiment, ux_events):
    # Given an experiment on its first day
    exp = ux_experiment("first-day")
    ux_events(exp, "control", users=300, converted=30)
    ux_events(exp, "treatment", users=300, converted=45)
    # When every chart is drawn
    readout, svgs = _charts_of(exp)
    # Then each is full width and has one mark per variant (or per treatment), not an invisible polyline
    for name, markup in svgs.items():
        root = _svg(markup)
        assert root.get("width") == "100%", name
        assert _marks(root), name
    assert len(_marks(_svg(svgs["rate"]))) == 2
    for kind in ("exposures", "conversions"):
        root = _svg(svgs[kind])
        assert len(_marks(root)) == 2  # one day × two variants
        assert not list(root.iter("polyline"))  # a single point is drawn as a marker, not a line
    lift = _svg(svgs["lift"])
    assert len(_marks(lift)) == 1
    bands = {r.get("class") for r in lift.iter("rect")} - {None}
    assert {"band-fixed", "band-sequential"} <= bands  # both intervals visible with one day
    assert float(next(r for r in lift.iter("rect") if r.get("class") == "band-fixed").get("height")) >= 1


def test_cumulative_chart__overlapping_series__differ_by_dash_and_marker(ux_experiment, ux_events):
    # Given a 50/50 test whose two exposure lines coincide, over three days
    exp = ux_experiment("overlap")
    ux_events(exp, "control", users=90, converted=9, days=3)
    ux_events(exp, "treatment", users=90, converted=9, days=3)
    readout = readout_get(experiment=exp)
    # When
    root = _svg(charts.cumulative_chart_svg(readout, readout_daily_series(readout=readout), kind="exposures"))
    # Then the lines have different dash patterns and marker shapes, so neither hides the other
    lines = list(root.iter("polyline"))
    assert len(lines) == 2
    assert lines[0].get("stroke-dasharray") != lines[1].get("stroke-dasharray")
    shapes = [{m.tag for m in _marks(g)} for g in root.iter("g") if g.get("class") == "series"]
    assert shapes[0] != shapes[1]
    assert len(_marks(root)) >= 6


def test_cumulative_chart__small_counts__integer_tick_labels(ux_experiment, ux_events):
    # Given 3 and 2 exposed users: a naive axis would show 0.75, 1.5, 2.25 users
    exp = ux_experiment("tiny")
    ux_events(exp, "control", users=3, converted=1)
    ux_events(exp, "treatment", users=2)
    readout = readout_get(experiment=exp)
    # When
    root = _svg(charts.cumulative_chart_svg(readout, readout_daily_series(readout=readout), kind="exposures"))
    # Then every y tick is a whole number, each at most once
    y_ticks = [t.text for t in _texts(root, "tick") if t.get("text-anchor") == "end"]
    assert y_ticks and all(re.fullmatch(r"\d[\d,]*", t) for t in y_ticks), y_ticks
    assert len(set(y_ticks)) == len(y_ticks)
    assert "3" in y_ticks


def test_rate_chart__percent_axis__round_percentages(ux_experiment, ux_events):
    # Given conversion rates around 10-15%
    exp = ux_experiment("rates")
    ux_events(exp, "control", users=300, converted=30)
    ux_events(exp, "treatment", users=310, converted=45)
    # When
    root = _svg(charts.rate_chart_svg(readout_get(experiment=exp)))
    # Then axis ticks are whole percentages and the values are shown as rates
    ticks = [t.text for t in _texts(root, "tick")]
    assert ticks and all(re.fullmatch(r"\d+%", t) for t in ticks), ticks
    assert [t.text for t in _texts(root, "val")] == ["10.00%", "14.52%"]


def test_charts__long_variant_keys__legend_and_labels_never_truncated(ux_experiment, ux_events):
    # Given four variants with long keys (the legend used to be cut off: "threshold-35 (10…")
    keys = ["control", *sorted([LONG_KEY, LONG_KEY[:-3] + "-b", LONG_KEY[:-3] + "-c"])]  # readout order
    exp = ux_experiment("long-keys", variants=[(k, i == 0, 1) for i, k in enumerate(keys)])
    for k in keys:
        ux_events(exp, k, users=1200, converted=120, days=2)
    readout, svgs = _charts_of(exp)
    for name in ("exposures", "conversions"):
        root = _svg(svgs[name])
        width = _view_width(root)
        legend = _texts(root, "legend")
        # Then every legend entry carries its whole label and fits inside the chart (wrapping to new rows)
        assert [t.text.split(":")[0].removesuffix(" (control)") for t in legend] == keys
        for t in legend:
            assert "…" not in t.text
            assert float(t.get("x")) + charts._text_width(t.text) <= width, t.text
        assert len({t.get("y") for t in legend}) >= 2  # wrapped
    rate = _svg(svgs["rate"])
    # And the rate chart's row labels wrap onto further lines instead of running off the left edge
    assert ["".join(t.itertext()).removesuffix(" (control)") for t in _texts(rate, "lbl")] == keys
    for span in rate.iter("tspan"):  # right-aligned lines start inside the chart
        assert float(span.get("x")) - charts._text_width(span.text) >= 0, span.text
    assert len(list(rate.iter("tspan"))) > len(keys)


def test_effect_chart__outcomes__marked_and_labelled_in_words(ux_experiment, ux_events):
    # Given a winner, a loser and a flat treatment
    exp = ux_experiment(
        "effects", variants=[("control", True, 1), ("winner", False, 1), ("loser", False, 1), ("flat", False, 1)]
    )
    ux_events(exp, "control", users=4000, converted=400)
    ux_events(exp, "winner", users=4000, converted=560)
    ux_events(exp, "loser", users=4000, converted=280)
    ux_events(exp, "flat", users=4000, converted=405)
    readout = readout_get(experiment=exp)
    # When
    root = _svg(charts.effect_chart_svg(readout))
    # Then each treatment is a dot with its interval, marked by outcome and named in words
    groups = {g.get("data-variant"): g for g in root.iter("g") if g.get("class") == "effect"}
    assert {k: g.get("data-outcome") for k, g in groups.items()} == {
        "winner": "better",
        "loser": "worse",
        "flat": "inconclusive",
    }
    words = {k: next(t.text for t in g.iter("text")) for k, g in groups.items()}
    assert words["winner"].endswith("· Better") and words["winner"].startswith("+40.0%")
    assert words["loser"].endswith("· Worse") and words["loser"].startswith("\u221230.0%")
    assert words["flat"].endswith("· Inconclusive")
    assert len({next(iter(_marks(g))).tag for g in groups.values()} | {"x"}) >= 2  # shapes differ by outcome
    assert [e for e in root.iter("line") if e.get("class") == "zero-line"]
    ticks = [t.text for t in _texts(root, "tick")]
    assert "0%" in ticks and all("-" not in t for t in ticks)  # true minus signs


def test_rate_chart__mean_metric__means_with_intervals(ux_experiment, ux_events):
    # Given a revenue (mean) metric
    exp = ux_experiment("revenue", metrics=[("revenue", "primary", "mean", "increase")], metric="revenue")
    ux_events(exp, "control", users=200, converted=100, value=lambda i: 40.0 + i % 7)
    ux_events(exp, "treatment", users=200, converted=120, value=lambda i: 42.0 + i % 5)
    readout = readout_get(experiment=exp)
    # When
    root = _svg(charts.rate_chart_svg(readout))
    # Then the chart shows each variant's mean revenue per exposed user (not a rate in %)
    assert "Mean revenue" in root.find("title").text
    values = [t.text for t in _texts(root, "val")]
    assert values == [f"{v.summary.mean:,.2f}" for v in readout.variants]
    assert all(not t.text.endswith("%") for t in _texts(root, "tick"))


def test_lift_timeseries__several_days__line_bands_and_legend(ux_experiment, ux_events):
    # Given five days of data
    exp = ux_experiment("lift-days")
    ux_events(exp, "control", users=2000, converted=200, days=5)
    ux_events(exp, "treatment", users=2000, converted=260, days=5)
    readout = readout_get(experiment=exp)
    # When
    root = _svg(charts.lift_timeseries_svg(readout_timeseries(readout=readout)))
    # Then: a line with a mark per day, both bands as areas, and a legend saying which band is which
    assert len(list(root.iter("polyline"))) == 1
    assert len(_marks(root)) >= 5
    assert {p.get("class") for p in root.iter("polygon")} >= {"band-fixed", "band-sequential"}
    legend = " ".join(t.text for t in _texts(root, "legend"))
    assert "fixed-horizon interval" in legend and "always-valid interval" in legend


def test_charts__hostile_labels__escaped():
    # Given a time series whose variant key and metric carry markup (never trusted)
    hostile = '<script>alert(1)</script>"&'
    ts = {
        "metric": hostile,
        "alpha": 0.05,
        "days": ["2026-11-02"],
        "treatments": [
            {
                "variant": hostile,
                "points": [
                    {
                        "day": "2026-11-02",
                        "rel_lift": 0.1,
                        "rel_lift_ci": [0.0, 0.2],
                        "sequential": {"rel_lift_ci": None},
                    }
                ],
            }
        ],
    }
    # When
    markup = str(charts.lift_timeseries_svg(ts))
    # Then the markup is escaped text, and the SVG still parses
    assert "<script>" not in markup and "&lt;script&gt;" in markup
    root = _svg(markup)
    assert any(hostile in (t.text or "") for t in root.iter("text"))


def test_charts__no_data__say_so_instead_of_an_empty_frame(ux_experiment):
    # Given an experiment nobody was exposed to yet
    exp = ux_experiment("empty")
    readout, svgs = _charts_of(exp)
    # Then the time charts are a sentence, and the rate chart says there are no users yet
    for name in ("exposures", "conversions", "lift"):
        assert str(svgs[name]).startswith('<p class="muted chart-empty">'), name
    assert "no exposed users yet" in str(svgs["rate"])
