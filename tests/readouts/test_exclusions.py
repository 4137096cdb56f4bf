"""Users exposed to several variants, on the internal side: left out of every metric and counted.

Independent reference: the same events sent to a second experiment without those users at all. The first
experiment's readout (rollup rows minus their contributions, rule metrics without them) must equal it.
"""

from __future__ import annotations

import pytest

from readouts.selectors import readout_get
from tests.readouts import warehouse_data
from tests.readouts.warehouse_helpers import assert_rows_equal, metric_rows, running_experiment, send_to_api, start_time

pytestmark = pytest.mark.django_db


def _for(items: list[dict], slug: str, *, without: set[str] = frozenset()) -> list[dict]:
    return [{**it, "experiment": slug} for it in items if it["user_key"] not in without]


def test_readout__users_exposed_to_two_variants__left_out_of_every_metric_and_counted(owner):
    # Given one dataset sent to two experiments: all of it to one, and without the users exposed to two
    # variants (and their events) to the other
    started = start_time()
    with_them = running_experiment(owner, "with-them", started=started, with_catalog=True)
    reference = running_experiment(owner, "reference", started=started, with_catalog=True)
    ds = warehouse_data.build(start=started, internal_key="x", warehouse_key="wh", users=200, seed=11)
    variant_of: dict[str, set] = {}
    for x in ds.exposures:
        if x["experiment_key"] == "wh" and x["variant_key"] in warehouse_data.VARIANTS:
            variant_of.setdefault(x["user_key"], set()).add(x["variant_key"])
    multiple = {u for u, vs in variant_of.items() if len(vs) > 1}
    assert len(multiple) == ds.multiple_exposure_users > 0
    rejected = send_to_api(_for(ds.api, "with-them"))
    assert rejected["variant_conflict"] == ds.conflicting_exposures
    send_to_api(_for(ds.api, "reference", without=multiple))

    # When both are read
    a, b = readout_get(experiment=with_them), readout_get(experiment=reference)

    # Then every planned metric's rows are equal (the users left out everywhere), and they are counted
    assert_rows_equal(metric_rows(a), metric_rows(b))
    assert a.health == {"multiple_exposures": len(multiple)} and b.health == {"multiple_exposures": 0}
    assert [v.exposures for v in a.selected.variants] == [v.exposures for v in b.selected.variants]
    for ra, rb in zip(a.results, b.results, strict=True):
        assert [v.summary.mean for v in ra.variants] == pytest.approx([v.summary.mean for v in rb.variants])
