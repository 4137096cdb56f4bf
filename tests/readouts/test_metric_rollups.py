"""Rule-metric rollups (readouts.metric_rollups) equal a full recompute (catalog_metrics.compute, itself tested
against an independent computation in test_catalog_metrics) after any sequence of ingests, for every kind:
windows, delays (negative too), filters, count, absolute and percentile caps (zeros ignored or not, negative
values), ratio (a percentile-capped part and plain parts), funnel. Late exposures, repeated event_ids and
second exposures arrive in random batches. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import math
import random
from datetime import timedelta

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from experiments import services
from experiments.selectors import experiment_metric_definitions
from readouts import catalog_metrics, metric_rollups, rollups
from readouts.definitions import MetricDefinition
from readouts.models import MetricRollup, MetricUserValue
from tests.readouts.conftest import T0
from tracking.models import Event

pytestmark = pytest.mark.django_db
H = timedelta(hours=1)
US = timedelta(microseconds=1)
PROPS = [{"channel": "web"}, {"channel": "app"}, {"channel": True}, {"channel": 1}, {"channel": None}, {}]


@pytest.fixture
def plan(catalog_plan):
    """A draft with one metric of every kind and rule."""
    return catalog_plan("rollrules", extra_ratio=True)


def _events(exp, rng: random.Random, users: int) -> list[Event]:
    """Every event of a random population, in no particular order (the batches shuffle them)."""
    variants = list(exp.variants.all())
    edges = [-3 * H, -2 * H - US, -2 * H, -US, timedelta(0), 0.5 * H, H - US, H, 6 * H, 6 * H + US, 25 * H,
             25 * H + US, 46 * H, 46 * H + US, 72.5 * H, 72.5 * H + US, 100 * H]  # fmt: skip
    out, eid = [], 0
    for u in range(users):
        variant, user = variants[u % 2], f"u{u}"
        x = T0 + timedelta(seconds=rng.randint(0, 3 * 86_400), microseconds=rng.randint(0, 999_999))
        if rng.random() < 0.9:
            out.append(Event(experiment=exp, variant=variant, user_key=user, event_type="exposure", occurred_at=x))
            if rng.random() < 0.1:  # a second exposure: the first stored one wins
                out.append(Event(experiment=exp, variant=variant, user_key=user, event_type="exposure",
                                 occurred_at=x - H))  # fmt: skip
        last = None
        for _ in range(rng.randint(0, 7)):
            off = rng.choice(edges) if rng.random() < 0.6 else timedelta(seconds=rng.uniform(-7200, 400_000))
            at = last if (last is not None and rng.random() < 0.2) else x + off
            last = at
            eid += 1
            repeat = rng.random() < 0.1 and eid > 1
            value = rng.choice([0.0, round(rng.uniform(1, 40), 2), round(rng.uniform(50, 400), 2),
                                round(rng.uniform(-30, -1), 2)])  # fmt: skip
            out.append(
                Event(experiment=exp, variant=variant, user_key=user, event_type="conversion",
                      metric=rng.choice(["purchase", "purchase", "cart", "view", "other"]), value=value,
                      occurred_at=at, props=rng.choice(PROPS), event_id=f"e{eid - 1 if repeat else eid}")
            )  # fmt: skip
    return out


def _ingest_in_batches(exp, rng: random.Random, users: int, batches: int):
    """Yield after each batch of a random ingest order (late exposures, repeats, second exposures)."""
    events = _events(exp, rng, users)
    rng.shuffle(events)
    cuts = sorted(rng.sample(range(1, len(events)), batches - 1)) if len(events) > batches else []
    for lo, hi in zip([0, *cuts], [*cuts, len(events)], strict=True):
        Event.objects.bulk_create(events[lo:hi], ignore_conflicts=True)
        yield


def _exposures(exp) -> dict[int, int]:
    rows = rollups.readout_rows(experiment_id=exp.pk)
    out: dict[int, int] = {}
    for r in rows:
        if r.kind == "exposure":
            out[r.variant_id] = out.get(r.variant_id, 0) + r.users
    return out


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def _differences(expected: dict, actual: dict) -> list[str]:
    out = []
    assert set(expected) == set(actual)
    for key, e in expected.items():
        a = actual[key]
        out += [f"{key} rows: {d}" for d in rollups.rows_differences(e.rows, a.rows)]
        if isinstance(e.cap_applied, dict) or isinstance(a.cap_applied, dict):
            if not (isinstance(e.cap_applied, dict) and isinstance(a.cap_applied, dict)) or not all(
                _close(e.cap_applied[p], a.cap_applied[p]) for p in ("numerator", "denominator")
            ):
                out.append(f"{key} cap: {e.cap_applied} != {a.cap_applied}")
        elif not _close(e.cap_applied, a.cap_applied):
            out.append(f"{key} cap: {e.cap_applied} != {a.cap_applied}")
        if set(e.ratio) != set(a.ratio):
            out.append(f"{key} ratio variants: {set(e.ratio)} != {set(a.ratio)}")
        for v, r in e.ratio.items():
            s = a.ratio.get(v)
            if s is None or s.n != r.n or not all(
                _close(getattr(r, f), getattr(s, f)) for f in metric_rollups.RATIO_FIELDS[1:]
            ) or (r.numerator_kind, r.denominator_kind) != (s.numerator_kind, s.denominator_kind):  # fmt: skip
                out.append(f"{key} ratio {v}: {r} != {s}")
        if [event for event, _ in e.steps] != [event for event, _ in a.steps]:
            out.append(f"{key} steps: {e.steps} != {a.steps}")
        for (event, er), (_, ar) in zip(e.steps, a.steps, strict=False):
            out += [f"{key} step {event}: {d}" for d in rollups.rows_differences(er, ar)]
    return out


def _assert_equal_to_full_recompute(exp, definitions: list[MetricDefinition]) -> None:
    expected = catalog_metrics.compute(experiment_id=exp.pk, definitions=definitions)
    actual = metric_rollups.computed(experiment_id=exp.pk, definitions=definitions, exposures=_exposures(exp))
    assert _differences(expected, actual) == []


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_metric_rollups__random_ingest_sequences__equal_full_recompute_for_every_kind(plan, seed):
    # Given a plan with one metric of every kind and a random population ingested in random batches
    rng = random.Random(seed)
    definitions = list(experiment_metric_definitions(plan).values())
    kinds = {(d.kind, d.cap) for d in definitions}
    assert {("binary", "none"), ("mean", "percentile"), ("mean", "absolute"), ("ratio", "none"),
            ("funnel", "none")} <= kinds  # fmt: skip
    modes = []
    for _ in _ingest_in_batches(plan, rng, users=70, batches=6):
        # When the readout reads the rollups after each batch (catch-up first)
        modes.append(metric_rollups.catch_up(experiment_id=plan.pk, definitions=definitions).mode)
        # Then they equal the full recompute from the events, every kind, every variant and day
        _assert_equal_to_full_recompute(plan, definitions)
    assert modes[0] == "full" and set(modes[1:]) == {"incremental"}
    assert metric_rollups.catch_up(experiment_id=plan.pk, definitions=definitions).mode == "none"


def test_metric_rollups__edited_definition__own_rollups_never_mixed(plan):
    # Given rollups built for the plan's definitions
    rng = random.Random(7)
    batches = _ingest_in_batches(plan, rng, users=60, batches=3)
    next(batches)
    definitions = list(experiment_metric_definitions(plan).values())
    _assert_equal_to_full_recompute(plan, definitions)
    # When an edited version of a metric (another window, cap) is read next to the original
    rev_p = next(d for d in definitions if d.key == "rev_p")
    edited = MetricDefinition.from_dict({**rev_p.to_dict(), "cap_value": 0.5, "window_hours": 30.0})
    assert metric_rollups.fingerprint(edited) != metric_rollups.fingerprint(rev_p)
    for _ in batches:
        _assert_equal_to_full_recompute(plan, [edited])
        # Then both equal their own full recompute after further ingests
        _assert_equal_to_full_recompute(plan, definitions)
    assert MetricRollup.objects.filter(experiment=plan).values("definition").distinct().count() >= 1


def test_metric_rollups__renamed_metric__same_rules_same_fingerprint():
    # Given a definition and the same rules under another key, name and direction
    d = MetricDefinition(key="rev", name="Revenue", kind="mean", event="purchase", cap="percentile", cap_value=0.9)
    same = MetricDefinition(key="revenue", name="Rev", direction="decrease", kind="mean", event="purchase",
                            cap="percentile", cap_value=0.9)  # fmt: skip
    # Then they share rollups (a number written 72 or 72.0 too); another rule does not
    assert metric_rollups.fingerprint(d) == metric_rollups.fingerprint(same)
    assert metric_rollups.fingerprint(MetricDefinition.from_dict({**d.to_dict(), "window_hours": 72})) == (
        metric_rollups.fingerprint(MetricDefinition.from_dict({**d.to_dict(), "window_hours": 72.0}))
    )
    assert metric_rollups.fingerprint(d) != metric_rollups.fingerprint(MetricDefinition.from_dict(
        {**d.to_dict(), "cap_ignore_zeros": True}))  # fmt: skip


@pytest.mark.parametrize("seed", range(6))
def test_percentile_cap__random_values_with_zeros_and_negatives__equals_numpy_quantile(make_experiment, seed):
    # Given stored per-user values (some negative, many users at 0 without a row) for a definition
    rng = random.Random(seed)
    exp = make_experiment(f"pct{seed}")
    values = [rng.choice([0.0, rng.uniform(-5, 5), rng.uniform(0, 1000), 3.0]) for _ in range(rng.randint(1, 60))]
    MetricUserValue.objects.bulk_create(
        [
            MetricUserValue(experiment=exp, definition="f", user_key=f"u{i}", variant_id=1, value=v)
            for i, v in enumerate(values)
            if v
        ]  # fmt: skip
    )
    q = rng.choice([0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 1.0, rng.random()])
    for ignore_zeros in (False, True):
        # When the cap is read from the table
        cap = metric_rollups.percentile_cap(experiment_id=exp.pk, definition="f", column="value", q=q,
                                            exposed=len(values), ignore_zeros=ignore_zeros)  # fmt: skip
        # Then it equals numpy's quantile of every exposed user's value
        data = [v for v in values if not (ignore_zeros and v == 0)]
        expected = float(np.quantile(np.asarray(data), q)) if data else None
        assert cap == expected


# --- the readout reads them --------------------------------------------------------------------------------
IGNORED = {"computed_at", "generated_at"}


def _json_differences(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a if k not in IGNORED for d in _json_differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} != {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _json_differences(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float | int) and not isinstance(b, bool):
        return [] if math.isclose(a, b, rel_tol=1e-7, abs_tol=1e-9) else [f"{path}: {a!r} != {b!r}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_readout__rule_metrics_from_rollups__equals_python_path_for_every_metric(plan, settings):
    # Given random ingest batches on a plan with every kind
    from readouts.exports import readout_as_json
    from readouts.selectors import readout_get

    keys = list(experiment_metric_definitions(plan))
    for _ in _ingest_in_batches(plan, random.Random(11), users=60, batches=3):
        for key in keys:
            # When the readout JSON is read from the rollups and from the events
            settings.SIGNALDASH_METRIC_ROLLUPS = True
            fast = readout_as_json(readout_get(experiment=plan, metric=key))
            settings.SIGNALDASH_METRIC_ROLLUPS = False
            reference = readout_as_json(readout_get(experiment=plan, metric=key))
            # Then they are the same readout
            assert _json_differences(reference, fast) == [], key


def test_readout__rule_metrics_from_rollups__query_count_independent_of_data(plan, django_assert_max_num_queries):
    # Given a readout of the rule-metric plan, caught up
    from readouts.selectors import readout_get

    batches = _ingest_in_batches(plan, random.Random(5), users=80, batches=2)
    next(batches)
    readout_get(experiment=plan, metric="rpo")

    with CaptureQueriesContext(connection) as small:
        readout_get(experiment=plan, metric="rpo")
    # When twice as many users' events arrive and the readout has caught up
    next(batches)
    readout_get(experiment=plan, metric="rpo")
    # Then a current readout makes the same number of queries (no per-user or per-event work)
    with CaptureQueriesContext(connection) as large:
        readout_get(experiment=plan, metric="rpo")
    # Then a current readout's queries do not grow with the data: a fixed set, plus per percentile cap at
    # most one ordered index read (none when the quantile falls among the users at 0) and one read of the
    # users above the cap (none without a cap)
    caps = 3  # rev_p, rev_pz, rpo's numerator
    assert len(large.captured_queries) <= len(small.captured_queries) + 2 * caps
    with django_assert_max_num_queries(len(small.captured_queries) + 2 * caps):
        readout_get(experiment=plan, metric="rev_p")


def test_catch_up_rollups__running_rule_plan__builds_metric_rollups(plan):
    # Given a running experiment with rule metrics and events no readout has read yet
    import io

    from django.core.management import call_command

    from experiments.models import Experiment
    from tests.tracking.conftest import set_status

    next(_ingest_in_batches(plan, random.Random(3), users=40, batches=1))
    Experiment.objects.filter(pk=plan.pk).update(preregistration=services.preregistration_build(plan))  # frozen
    set_status(plan, "running")
    plan.refresh_from_db()
    # When the cron command runs
    out = io.StringIO()
    call_command("catch_up_rollups", stdout=out)
    # Then it built every rule metric's rollups, and they equal the full recompute
    assert "rule metrics full" in out.getvalue()
    definitions = list(experiment_metric_definitions(plan).values())
    assert metric_rollups.catch_up(experiment_id=plan.pk, definitions=definitions).mode == "none"
    _assert_equal_to_full_recompute(plan, definitions)


def test_metric_rollups__caps_below_zero__equal_full_recompute(make_experiment):
    # Given definitions whose percentile caps fall below 0 (mostly refunds), a ratio with two capped parts
    exp = make_experiment("negcaps")
    low = MetricDefinition(key="low", kind="mean", event="purchase", cap="percentile", cap_value=0.05,
                           cap_ignore_zeros=True)  # fmt: skip
    carts = MetricDefinition(key="carts", kind="mean", event="cart", cap="percentile", cap_value=0.2)
    definitions = [low, MetricDefinition(key="ratio", kind="ratio", numerator=low, denominator=carts), carts]
    rng = random.Random(13)
    for _ in _ingest_in_batches(exp, rng, users=70, batches=4):
        # When the rollups are read after each batch
        computed = metric_rollups.computed(experiment_id=exp.pk, definitions=definitions, exposures=_exposures(exp))
        # Then they equal the full recompute
        _assert_equal_to_full_recompute(exp, definitions)
    assert computed["low"].cap_applied < 0  # the case under test did happen


def test_recompute_readouts__rule_plan__verifies_and_rebuilds_rule_rollups(plan):
    # Given rule rollups caught up after two batches, and a stale leftover of an edited definition
    import io

    from django.core.management import call_command

    batches = _ingest_in_batches(plan, random.Random(9), users=40, batches=2)
    next(batches)
    definitions = list(experiment_metric_definitions(plan).values())
    metric_rollups.catch_up(experiment_id=plan.pk, definitions=definitions)
    next(batches)
    rev_p = next(d for d in definitions if d.key == "rev_p")
    stale = MetricDefinition.from_dict({**rev_p.to_dict(), "cap_value": 0.5})
    metric_rollups.catch_up(experiment_id=plan.pk, definitions=[stale])
    # When the command verifies and rebuilds
    out = io.StringIO()
    call_command("recompute_readouts", "--experiment", plan.slug, "--verify", stdout=out)
    # Then the rule metrics equalled the events, were rebuilt, still equal them, and the leftover is gone
    assert f"{plan.slug}: rule metrics equal the events" in out.getvalue()
    assert f"{plan.slug}: rule metrics rebuilt (9)" in out.getvalue()
    _assert_equal_to_full_recompute(plan, definitions)
    prints = {metric_rollups.fingerprint(d) for d in definitions if not catalog_metrics.rollup_shaped(d)}
    assert set(MetricRollup.objects.filter(experiment=plan).values_list("definition", flat=True)) <= prints
    assert metric_rollups.fingerprint(stale) not in prints


def test_computed_differences__changed_value__reported():
    # Given a computed result and a copy with one row, one cap and one ratio sum changed
    from dataclasses import replace
    from datetime import date

    from readouts import queries, stats

    row = queries.SumsRow("conversion", 1, "m", date(2026, 11, 1), 3, 10.0, 40.0, 0.0, 0.0, 4, 0, 0)
    ratio = stats.RatioSums(5, 10.0, 40.0, 4.0, 6.0, 12.0)
    a = {"m": catalog_metrics.Computed(rows=[row], cap_applied=2.0, ratio={1: ratio})}
    b = {"m": catalog_metrics.Computed(rows=[replace(row, total=10.5)], cap_applied=2.5,
                                       ratio={1: replace(ratio, sum_products=13.0)})}  # fmt: skip
    # Then each difference is reported, and none for equal results
    differences = metric_rollups.computed_differences(a, b)
    assert len(differences) == 3 and "total" in differences[0] and "cap_applied" in differences[1]
    assert "ratio variant 1" in differences[2]
    assert metric_rollups.computed_differences(a, a) == []
