"""The aggregate's sufficient statistics against an independent per-user computation in Python.

Randomized events (seeded): exposures over several days, conversions before and after exposure,
repeat conversions with event_id, conversions of never-exposed users, numeric values, covariates.
The reference builds every user's value per metric from the rows themselves (no SQL), then the test
checks the readout's per-variant n, sum, sum_squares, covariate sums and cross-products — at the end
and as cumulative sums at every day — and the statistics the readout JSON reports.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import timedelta

import pytest

from readouts import stats
from readouts.exports import readout_as_json
from readouts.selectors import _Totals, readout_get
from tests.readouts.conftest import T0

METRICS = {"purchase": "binary", "revenue": "mean"}


def _random_events(exp, seed: int, users: int = 240):
    """Events (and covariates) for ``exp``; returns the rows as plain tuples for the reference."""
    from experiments.models import ExperimentMetric
    from experiments.services import experiment_metric_save
    from tracking.models import Covariate, Event

    rng = random.Random(seed)
    owner = exp.owner
    for key, kind in METRICS.items():
        role = "primary" if key == "purchase" else "secondary"
        experiment_metric_save(metric=ExperimentMetric(experiment=exp, key=key, role=role, kind=kind), actor=owner)
    variants = {v.key: v for v in exp.variants.all()}
    events, covs, exposures, conversions = [], [], {}, []
    for i in range(users):
        user = f"u{i}"
        variant = variants[rng.choice(sorted(variants))]
        exposed_at = T0 + timedelta(days=rng.randrange(5), minutes=rng.randrange(600))
        if rng.random() < 0.9:  # 10% never exposed
            exposures[user] = (variant.pk, exposed_at)
            events.append(
                Event(experiment=exp, variant=variant, user_key=user, event_type="exposure", occurred_at=exposed_at)
            )
            for metric in METRICS:
                if rng.random() < 0.7:
                    x = round(rng.uniform(0, 50), 2)
                    covs.append(Covariate(experiment=exp, variant=variant, user_key=user, metric=metric, value=x))
        for metric in METRICS:
            for k in range(rng.choice([0, 0, 1, 1, 2, 3])):
                at = exposed_at + timedelta(hours=rng.randrange(-30, 90))
                value = round(rng.uniform(1, 100), 2) if metric == "revenue" else None
                # revenue: every purchase has an event_id; purchase: the first without (one per user), repeats with
                event_id = f"{user}-{metric}-{k}" if metric == "revenue" or k else None
                events.append(
                    Event(
                        experiment=exp,
                        variant=variant,
                        user_key=user,
                        event_type="conversion",
                        metric=metric,
                        value=value,
                        occurred_at=at,
                        event_id=event_id,
                    )
                )
                conversions.append((user, metric, at, value or 0.0))
    Event.objects.bulk_create(events, batch_size=1000)
    Covariate.objects.bulk_create(covs, batch_size=1000)
    cov = {(c.user_key, c.metric): c.value for c in covs}
    return exposures, conversions, cov


def _reference(exposures, conversions, cov, until=None):
    """Per variant and metric: SampleSums computed from per-user values."""
    values = defaultdict(float)
    converted = set()
    for user, metric, at, value in conversions:
        if user in exposures and exposures[user][1] <= at and (until is None or at.date() <= until):
            values[(user, metric)] += value
            converted.add((user, metric))
    out = {}
    for metric, kind in METRICS.items():
        for variant_id in {v for v, _ in exposures.values()}:
            users = [u for u, (v, at) in exposures.items() if v == variant_id and (until is None or at.date() <= until)]
            if kind == "binary":
                ys = [1.0 if (u, metric) in converted else 0.0 for u in users]
            else:
                ys = [values[(u, metric)] for u in users]
            xs = [cov.get((u, metric), 0.0) for u in users]
            out[(variant_id, metric)] = stats.SampleSums(
                n=len(users),
                sum=sum(ys),
                sum_squares=sum(y * y for y in ys),
                cov_sum=sum(xs),
                cov_sum_squares=sum(x * x for x in xs),
                sum_products=sum(x * y for x, y in zip(xs, ys, strict=True)),
                has_covariate=True,
            )
    return out


def _assert_sums(got: stats.SampleSums, want: stats.SampleSums) -> None:
    assert got.n == want.n
    for name in ("sum", "sum_squares", "cov_sum", "cov_sum_squares", "sum_products"):
        assert getattr(got, name) == pytest.approx(getattr(want, name), rel=1e-9, abs=1e-6), name


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_readout_sums__randomized_events__equal_per_user_reference(make_experiment, seed):
    # Given randomized events with late, repeat, never-exposed conversions and covariates
    exp = make_experiment(variants=(("control", True, 1), ("treatment", False, 1), ("t2", False, 2)))
    exposures, conversions, cov = _random_events(exp, seed)
    # When
    readout = readout_get(experiment=exp)
    # Then every variant's sums match the per-user computation
    want = _reference(exposures, conversions, cov)
    for result in readout.results:
        for v in result.variants:
            _assert_sums(v.sums, want[(v.id, result.key)])
    # and at every day the cumulative rows equal the reference cut at that day
    for day in sorted({r.day for r in readout.rows}):
        totals = _Totals.of(readout.rows, until=day)
        cut = _reference(exposures, conversions, cov, until=day)
        for (variant_id, metric), sums in cut.items():
            _assert_sums(totals.sums(variant_id, metric, METRICS[metric]), sums)


def test_readout_json__randomized_events__statistics_from_reference_sums(make_experiment):
    # Given
    exp = make_experiment()
    exposures, conversions, cov = _random_events(exp, seed=7, users=400)
    want = _reference(exposures, conversions, cov)
    control, treatment = exp.variants.get(key="control"), exp.variants.get(key="treatment")
    # When
    data = readout_as_json(readout_get(experiment=exp, metric="revenue"))
    # Then the reported numbers are the stats functions of the reference sums
    a, b = want[(control.pk, "revenue")], want[(treatment.pk, "revenue")]
    comparison = data["comparisons"][0]
    rel = stats.relative_lift(control=a, treatment=b, kind="mean", alpha=0.05)
    welch = stats.welch_diff(control=a, treatment=b, alpha=0.05)
    cuped = stats.cuped_lift(control=a, treatment=b, kind="mean", alpha=0.05)
    assert data["metric_kind"] == "mean" and data["metric_role"] == "secondary"
    assert comparison["rel_lift"] == pytest.approx(rel.rel_lift)
    assert comparison["rel_lift_ci"] == pytest.approx(rel.rel_lift_ci.as_list())
    assert comparison["diff"] == pytest.approx(welch.diff) and comparison["p_value"] == pytest.approx(welch.p_value)
    assert comparison["cuped"]["theta"] == pytest.approx(cuped.theta)
    assert comparison["cuped"]["rel_lift_ci"] == pytest.approx(cuped.rel_lift_ci.as_list())
    # and Holm runs over both planned metrics (primary + secondary) × one treatment
    assert data["correction"] == {"method": "holm", "family_size": 2}
    p_raw = [row["comparisons"][0]["p_value"] for row in data["scorecard"]]
    from statsmodels.stats.multitest import multipletests

    adjusted = multipletests(p_raw, method="holm")[1]
    assert [row["comparisons"][0]["p_value_adjusted"] for row in data["scorecard"]] == pytest.approx(list(adjusted))


def test_readout_get__no_covariates__cuped_null(make_experiment, add_events):
    # Given a legacy experiment (no metric rows, no covariates)
    exp = make_experiment()
    add_events(exp, "control", exposures=200, conversions=20)
    add_events(exp, "treatment", exposures=200, conversions=30)
    # When
    data = readout_as_json(readout_get(experiment=exp))
    # Then
    assert data["metric_kind"] == "binary" and data["metric_role"] == "primary" and data["direction"] == "increase"
    assert data["comparisons"][0]["cuped"] is None
    assert [row["metric"] for row in data["scorecard"]] == ["purchase"]


def test_readout_json__tuning_and_prior_settings__used_by_sequential_and_bayes(make_experiment, add_events, settings):
    # Given a sequential tuning and a proper prior set for the installation
    settings.SIGNALDASH_SEQUENTIAL_TUNING = 800.0
    settings.SIGNALDASH_BAYES_PRIOR_SD = 0.05
    exp = make_experiment()
    add_events(exp, "control", exposures=600, conversions=60)
    add_events(exp, "treatment", exposures=600, conversions=90)
    readout = readout_get(experiment=exp)
    a, b = readout.variants[0].sums, readout.variants[1].sums
    # When
    comparison = readout_as_json(readout)["comparisons"][0]
    # Then the always-valid interval and the Bayesian numbers are computed with them
    seq = stats.sequential_lift(control=a, treatment=b, kind="binary", alpha=0.05, tuning=800.0)
    bayes = stats.bayes_lift(control=a, treatment=b, kind="binary", direction="increase", alpha=0.05, prior_sd=0.05)
    flat = stats.bayes_lift(control=a, treatment=b, kind="binary", direction="increase", alpha=0.05)
    assert comparison["sequential"]["rel_lift_ci"] == pytest.approx(seq.rel_lift_ci.as_list())
    assert comparison["bayes"]["chance_to_beat"] == pytest.approx(bayes.chance_to_beat)
    assert comparison["bayes"]["rel_lift_ci"] != pytest.approx(flat.rel_lift_ci.as_list())  # the prior shrinks it
