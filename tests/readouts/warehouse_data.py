"""One randomized dataset for the warehouse-equality tests, in two forms.

``lake`` rows go to a warehouse (DuckDB file/Parquet, PostgreSQL, Spark): exposures of the warehouse
experiment (repeat exposures, users exposed to two variants, rows with an unknown variant key,
another experiment's rows), conversion events of four event names (repeats with ``event_id`` delivered
twice, events before exposure, far after it, before the experiment started — the CUPED lookback — and
from users never exposed; funnel steps in and out of order; a ``channel`` for filters). ``api`` items are
what Signal Dash's own API receives for the internal experiment: every exposure of the experiment (the
API rejects the unknown variant keys and the second variant of a user exposed to two, as a variant
conflict) and the events minus what the internal side cannot be told (events of never-exposed users,
events before the start), each first exposure with its CUPED covariates computed here, independently of
any SQL, by the warehouse rule (the metric's per-user value in the lookback days before exposure).

``CATALOG`` is the catalog part of the plan (windows, delays, filters, counts, absolute and percentile caps,
a ratio and a funnel), planned on both experiments.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

METRICS = {"purchase": "binary", "revenue": "mean"}  # ad-hoc planned metrics (rollup-shaped, CUPED)
EVENTS = ("purchase", "revenue", "view", "cart")
# Catalog metrics planned on both experiments (experiments.Metric fields); a ratio names its parts by key.
CATALOG = {
    "bought_48h": {"kind": "binary", "event": "purchase", "delay_hours": 1, "window_hours": 48},
    "rev_web": {"kind": "mean", "event": "revenue", "window_hours": 72, "filter_prop": "channel",
                "filter_values": ["web"]},
    "orders": {"kind": "mean", "event": "revenue", "aggregation": "count", "delay_hours": -2},
    "rev_cap": {"kind": "mean", "event": "revenue", "cap": "absolute", "cap_value": 80},
    "rev_p90": {"kind": "mean", "event": "revenue", "cap": "percentile", "cap_value": 0.9},
    "rev_p75nz": {"kind": "mean", "event": "revenue", "cap": "percentile", "cap_value": 0.75,
                  "cap_ignore_zeros": True, "window_hours": 50},
    "rev_per_order": {"kind": "ratio", "numerator": "rev_p90", "denominator": "orders"},
    "checkout_funnel": {"kind": "funnel", "steps": ["view", "cart", "purchase"], "window_hours": 96,
                        "delay_hours": 0.5},
}  # fmt: skip
VARIANTS = ("control", "treatment")
# An extra exposure column (a dimension): 26 values of uneven size, so the breakdown shows the 20 largest, merges
# the rest into "(other)", and has users without a value ("(none)"); ties in size are broken by the value.
COUNTRIES = tuple(f"c{k:02d}" for k in range(26))
COUNTRY_WEIGHTS = tuple(30 - k for k in range(26))
LOOKBACK_DAYS = 14


@dataclass
class Dataset:
    exposures: list[dict] = field(default_factory=list)  # experiment_key, variant_key, user_key, timestamp, country
    events: list[dict] = field(default_factory=list)  # user_key, timestamp, event, value, event_id, channel
    api: list[dict] = field(default_factory=list)  # /api/track/batch items for the internal experiment
    unknown_variant_rows: int = 0
    multiple_exposure_users: int = 0
    conflicting_exposures: int = 0  # api items the API rejects as variant conflicts (the second variant)


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _covariate(events: list[dict], user: str, metric: str, exposed_at: datetime) -> float:
    lo = exposed_at - timedelta(days=LOOKBACK_DAYS)
    seen, out = set(), 0.0
    for e in events:
        if e["user_key"] != user or e["event"] != metric or not (lo <= e["timestamp"] < exposed_at):
            continue
        if e["event_id"] is not None:
            if e["event_id"] in seen:
                continue
            seen.add(e["event_id"])
        out = 1.0 if METRICS[metric] == "binary" else out + (e["value"] or 0.0)
    return out


def build(  # noqa: C901 - one generator, read top to bottom
    *, start: datetime, internal_key: str, warehouse_key: str, seed: int = 7, users: int = 300
) -> Dataset:
    rng = random.Random(seed)
    ds = Dataset()
    first: dict[str, tuple[str, datetime]] = {}
    for i in range(users):
        user = f"u{i:04d}"
        variant = rng.choice(VARIANTS)
        exposed_at = start + timedelta(days=rng.randrange(4), minutes=rng.randrange(1, 1400), seconds=rng.randrange(60))
        roll = rng.random()
        country = None if rng.random() < 0.06 else rng.choices(COUNTRIES, COUNTRY_WEIGHTS)[0]
        if roll < 0.08:  # never exposed: their events are ignored by the warehouse, never sent to the API
            exposed = False
        else:
            exposed = True
            ds.exposures.append({"variant_key": variant, "user_key": user, "timestamp": exposed_at, "country": country})
            if rng.random() < 0.15:  # repeat exposure, same variant, later (another country: the first one counts)
                later = exposed_at + timedelta(hours=rng.randrange(1, 30))
                ds.exposures.append({"variant_key": variant, "user_key": user, "timestamp": later, "country": "zz"})
            if roll > 0.95:  # also exposed to the other variant: excluded everywhere
                other = VARIANTS[1 - VARIANTS.index(variant)]
                x = {"variant_key": other, "user_key": user, "timestamp": exposed_at + timedelta(1), "country": country}
                ds.exposures.append(x)
                ds.multiple_exposure_users += 1
            first[user] = (variant, exposed_at)
        for metric in EVENTS:
            for k in range(rng.choice([0, 0, 1, 1, 2, 3])):
                hours = {"view": (-5, 30), "cart": (0, 60)}.get(metric, (-60, 100))
                at = exposed_at + timedelta(hours=rng.randrange(*hours), minutes=rng.randrange(60))
                value = round(rng.uniform(1, 100), 2) if metric == "revenue" else None
                event_id = f"{user}-{metric}-{k}" if metric == "revenue" or k else None
                e = {
                    "user_key": user,
                    "timestamp": at,
                    "event": metric,
                    "value": value,
                    "event_id": event_id,
                    "channel": rng.choice(["web", "app"]),
                }
                ds.events.append(e)
                if event_id is not None and rng.random() < 0.2:  # delivered twice
                    ds.events.append(dict(e))
        if exposed and rng.random() < 0.05:  # an unknown variant key on a stray row
            ds.exposures.append({"variant_key": "ghost", "user_key": user, "timestamp": exposed_at, "country": "zz"})
            ds.unknown_variant_rows += 1
    for j in range(20):  # another experiment's exposures, some before this one started
        ds.exposures.append(
            {
                "variant_key": "control",
                "user_key": f"o{j}",
                "timestamp": start - timedelta(days=2, hours=j),
                "country": "zz",
            }
        )
    for x in ds.exposures:
        x["experiment_key"] = warehouse_key if not x["user_key"].startswith("o") else "other-experiment"
    ds.exposures.sort(key=lambda x: x["timestamp"])
    ds.events.sort(key=lambda e: e["timestamp"])
    ds.api = _api_items(ds, first, start, internal_key)
    return ds


def _api_items(ds: Dataset, first: dict, start: datetime, key: str) -> list[dict]:
    items = []
    for x in ds.exposures:
        user = x["user_key"]
        if x["experiment_key"] == "other-experiment":
            continue
        item = {
            "experiment": key,
            "variant": x["variant_key"],
            "user_key": user,
            "event_type": "exposure",
            "occurred_at": _iso(x["timestamp"]),
        }
        item |= {"props": {"country": x["country"]}} if x["country"] is not None else {}
        if x["variant_key"] not in VARIANTS:
            pass  # rejected: unknown variant
        elif x["variant_key"] != first[user][0]:
            ds.conflicting_exposures += 1  # rejected: a variant conflict (the user is exposed to two variants)
        elif first[user][1] == x["timestamp"]:
            item["covariates"] = {m: _covariate(ds.events, user, m, x["timestamp"]) for m in METRICS}
        items.append(item)
    for e in ds.events:
        user = e["user_key"]
        if user not in first or e["timestamp"] < start:
            continue
        item = {
            "experiment": key,
            "variant": first[user][0],
            "user_key": user,
            "event_type": "conversion",
            "metric": e["event"],
            "occurred_at": _iso(e["timestamp"]),
            "props": {"channel": e["channel"]},
        }
        if e["value"] is not None:
            item["value"] = e["value"]
        if e["event_id"] is not None:
            item["event_id"] = e["event_id"]
        items.append(item)
    # the API receives events in time order (the first exposure is the first one stored)
    items.sort(key=lambda it: it["occurred_at"])
    return items
