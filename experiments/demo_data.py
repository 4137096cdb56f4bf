"""Demo data: users and the scenarios in fixtures/demo_scenarios.json.

Idempotent: users and experiments are looked up by username / slug and left alone when present;
events go through the tracking service (`events_ingest`: atomic dedup, first-exposure assignment),
so the demo data is exactly what the API would have stored, and a second run changes nothing.
Plans (metrics, power-plan fields) and statuses go through the experiment services, so the audit trail,
the pre-registration and the decisions are real.

Every scenario happens on its own dates: each step runs under a scenario clock (``_scenario_clock``: Django's
``timezone.now`` returns the step's moment), so audit rows, ``started_at``/``ended_at``, decisions and the
readouts frozen with them carry the story's dates, not the seeding time.
"""

from __future__ import annotations

import json
import random
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from unittest import mock

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from experiments import services
from experiments.models import POWER_PLAN_FIELDS, Experiment, ExperimentMetric, Metric, Variant
from tracking.services import EventIn, Outcome, events_ingest

SCENARIOS_PATH = Path(settings.BASE_DIR) / "fixtures" / "demo_scenarios.json"
DEMO_USERS = (
    # username, groups, is_staff, is_superuser
    ("ops", ("ops",), True, False),
    ("reviewer", ("reviewer",), False, False),
    ("admin", (), True, True),
)
# The order in which a scenario walks the workflow to reach its target status.
PATH_TO = {
    "draft": [],
    "review": ["submit"],
    "running": ["submit", "approve"],
    "readout": ["submit", "approve", "end"],
    "shipped": ["submit", "approve", "end", "ship"],
    "killed": ["submit", "approve", "end", "kill"],
}
FINISHED = {"readout", "shipped", "killed"}
PLAN_FIELDS = POWER_PLAN_FIELDS
_BATCH = 1000  # the tracking API's batch size


@dataclass
class SeedResult:
    created_users: dict[str, str] = field(default_factory=dict)  # username -> password (printed once)
    created_experiments: list[str] = field(default_factory=list)
    events_inserted: int = 0


@dataclass(frozen=True)
class Timeline:
    """When each step of a scenario happened."""

    created: datetime
    submitted: datetime
    started: datetime  # approved and started; events begin
    ended: datetime  # events end (running: a few minutes ago; finished: ended for readout)
    decided: datetime

    @classmethod
    def of(cls, spec: dict, now: datetime) -> Timeline:
        days = timedelta(days=spec.get("days", 7))
        if spec["status"] in FINISHED:
            ended = now - timedelta(days=spec.get("ended_days_ago", 1))
            started = ended - days
        elif spec["status"] == "running":
            ended = now - timedelta(minutes=10)
            started = now - days
        else:  # draft / review: waiting since `waiting_days`
            started = ended = now
            submitted = now - timedelta(days=spec.get("waiting_days", 1), hours=2)
            return cls(submitted - timedelta(days=1), submitted, started, ended, ended)
        submitted = started - timedelta(days=2, hours=3)
        decided = min(ended + timedelta(hours=20), now - timedelta(minutes=30))
        return cls(submitted - timedelta(days=1, hours=4), submitted, started, ended, decided)


@contextmanager
def _scenario_clock(at: datetime) -> Iterator[None]:
    """Django's ``timezone.now`` (auto_now_add, transitions, readouts) returns ``at`` inside this block."""
    with mock.patch("django.utils.timezone.now", return_value=at):
        yield


def demo_users_ensure(*, reset_passwords: bool = False) -> dict[str, str]:
    user_model = get_user_model()
    passwords: dict[str, str] = {}
    for username, groups, is_staff, is_superuser in DEMO_USERS:
        user = user_model.objects.filter(username=username).first()
        if user is None or reset_passwords:
            password = secrets.token_urlsafe(12)
            if user is None:
                user = user_model(username=username, email=f"{username}@signaldash.local")
            user.is_staff = is_staff
            user.is_superuser = is_superuser
            user.set_password(password)
            user.save()
            passwords[username] = password
        for name in groups:
            user.groups.add(Group.objects.get_or_create(name=name)[0])
    return passwords


# --- events ---------------------------------------------------------------------------------------------
def _weighted_pick(rng: random.Random, users: list[str], weight: dict[str, float], count: int) -> set[str]:
    """``count`` users drawn without replacement with probability proportional to ``weight`` (Efraimidis–Spirakis)."""
    keyed = sorted(users, key=lambda u: rng.random() ** (1.0 / weight[u]), reverse=True)
    return set(keyed[:count])


class _ScenarioEvents:
    """Deterministic events for one scenario (seeded RNG; exact counts from the scenario file)."""

    def __init__(self, slug: str, spec: dict, timeline: Timeline) -> None:
        self.slug, self.spec = slug, spec
        self.rng = random.Random(f"signaldash-demo:{slug}")
        self.start = timeline.started + timedelta(minutes=10)
        self.end = timeline.ended - timedelta(minutes=1)
        self.span = max(3600, int((self.end - self.start).total_seconds()) - 3600)
        self.revenue = spec.get("revenue")
        self.rows: list[EventIn] = []

    def event(self, variant: str, user_key: str, event_type: str, at: datetime, **extra) -> EventIn:
        return EventIn(
            experiment=self.slug, variant=variant, user_key=user_key, event_type=event_type, occurred_at=at, **extra
        )

    def after(self, exposed_at: datetime) -> datetime:
        room = int((self.end - exposed_at).total_seconds()) - 60
        return min(exposed_at + timedelta(seconds=self.rng.randrange(60, max(61, room))), self.end)

    def build(self) -> list[EventIn]:
        for vspec in self.spec["variants"]:
            self.variant(vspec)
        control = next(v["key"] for v in self.spec["variants"] if v["is_control"])
        for metric, count in self.spec.get("unexposed_conversions", {}).items():
            self.rows += [
                self.event(
                    control,
                    f"{self.slug}-orphan-{i:04d}",
                    "conversion",
                    self.end - timedelta(hours=i + 1),
                    metric=metric,
                )
                for i in range(count)
            ]
        return self.rows

    def variant(self, vspec: dict) -> None:
        rng, vkey = self.rng, vspec["key"]
        exposed = [f"{self.slug}-{vkey}-u{i:05d}" for i in range(vspec.get("users", 0))]
        exposed_at = {u: self.start + timedelta(seconds=rng.randrange(self.span)) for u in exposed}
        # A user's pre-exposure spend: the covariate of the revenue metric, and what drives their orders.
        spend = {u: round(rng.lognormvariate(3.4, 0.7), 2) for u in exposed}
        for u, t in exposed_at.items():
            covariates = {self.revenue["metric"]: spend[u]} if self.revenue else {}
            props = {"platform": rng.choice(["web", "ios", "android"])}
            self.rows.append(self.event(vkey, u, "exposure", t, props=props, covariates=covariates))
        converted: dict[str, set[str]] = {}
        nested = self.spec.get("nested", {})
        for metric, count in vspec.get("conversions", {}).items():
            pool = sorted(converted[nested[metric]]) if metric in nested else exposed
            if self.revenue and metric == self.revenue["buyers"]:
                weights = {u: spend[u] ** 2 for u in exposed}
                converted[metric] = _weighted_pick(rng, exposed, weights, count)  # big spenders buy more often
            else:
                converted[metric] = set(rng.sample(pool, count))
            for u in sorted(converted[metric]):
                self.rows.append(self.event(vkey, u, "conversion", self.after(exposed_at[u]), metric=metric))
        if self.revenue:
            self.orders(
                vkey,
                sorted(converted.get(self.revenue["buyers"], ())),
                exposed_at,
                spend,
                vspec.get("order_multiplier", 1.0),
            )
        # Conversions recorded *before* the user's exposure: stored, but not counted by the readout.
        for metric, count in self.spec.get("late_conversions", {}).items():
            candidates = [u for u in exposed if u not in converted.get(metric, set())][:count]
            self.rows += [
                self.event(vkey, u, "conversion", exposed_at[u] - timedelta(minutes=5), metric=metric)
                for u in candidates
            ]

    def orders(self, vkey: str, buyers: list[str], exposed_at: dict, spend: dict, multiplier: float) -> None:
        """Each buyer's orders (some order twice): value events of the mean metric, one event_id per order."""
        rng, metric = self.rng, self.revenue["metric"]
        scale = self.revenue["order_value"] / 40.0  # lognormvariate(3.4, 0.7) has a mean of about 38
        for u in buyers:
            n_orders = 2 if rng.random() < self.revenue.get("repeat_share", 0.0) else 1
            for k in range(n_orders):
                value = round(spend[u] * scale * multiplier * rng.uniform(0.85, 1.15) + rng.uniform(1, 5), 2)
                self.rows.append(
                    self.event(
                        vkey,
                        u,
                        "conversion",
                        self.after(exposed_at[u]),
                        metric=metric,
                        value=value,
                        event_id=f"order-{u}-{k + 1}",
                    )
                )


def _insert_events(experiment: Experiment, spec: dict, timeline: Timeline) -> int:
    """Store the scenario's events through the tracking service (dedup, first-exposure assignment)."""
    rows = _ScenarioEvents(experiment.slug, spec, timeline).build()
    created = 0
    for i in range(0, len(rows), _BATCH):
        results = events_ingest(events=rows[i : i + _BATCH])
        created += sum(r.outcome is Outcome.CREATED for r in results)
    return created


# --- the workflow, on the scenario's dates ----------------------------------------------------------------
def _create(spec: dict, users: dict, timeline: Timeline) -> Experiment:
    ops = users["ops"]
    plan = spec.get("plan", {})
    with _scenario_clock(timeline.created):
        experiment = services.experiment_save_plan(
            experiment=Experiment(
                name=spec["name"],
                slug=spec["slug"],
                hypothesis=spec["hypothesis"],
                primary_metric=spec["primary_metric"],
                owner=ops,
                **{k: plan[k] for k in PLAN_FIELDS if k in plan},
            ),
            actor=ops,
        )
        for v in spec["variants"]:
            services.variant_save(
                variant=Variant(
                    experiment=experiment, key=v["key"], name=v["name"], is_control=v["is_control"], weight=v["weight"]
                ),
                actor=ops,
            )
        for m in spec.get("metrics", []):
            m = dict(m)
            if "catalog" in m:
                m["metric"] = Metric.objects.get(key=m.pop("catalog"))
            services.experiment_metric_save(metric=ExperimentMetric(experiment=experiment, **m), actor=ops)
    return experiment


def _walk(experiment: Experiment, spec: dict, users: dict, timeline: Timeline) -> int:
    ops, reviewer = users["ops"], users["reviewer"]
    inserted = 0
    steps = {
        "submit": (timeline.submitted, lambda e: services.experiment_submit_for_review(experiment=e, actor=ops)),
        "approve": (timeline.started, lambda e: services.experiment_approve_and_start(experiment=e, actor=reviewer)),
        "end": (timeline.ended, lambda e: services.experiment_end_for_readout(experiment=e, actor=ops)),
        "ship": (
            timeline.decided,
            lambda e: services.experiment_ship(
                experiment=e,
                actor=ops,
                rationale=spec["decision"],
                variant=spec.get("ship_variant"),
                override_reason=spec.get("override_reason", ""),
            ),
        ),
        "kill": (
            timeline.decided,
            lambda e: services.experiment_kill(experiment=e, actor=ops, rationale=spec["decision"]),
        ),
    }
    for step in PATH_TO[spec["status"]]:
        at, run = steps[step]
        if step == "end":
            with _scenario_clock(at):
                inserted += _insert_events(experiment, spec, timeline)
        with _scenario_clock(at):
            run(experiment)
        experiment = Experiment.objects.get(pk=experiment.pk)  # the services work on a locked fresh copy
    if spec["status"] == "running":
        with _scenario_clock(timeline.ended):
            inserted += _insert_events(experiment, spec, timeline)
    return inserted


def _catalog_ensure(metrics: list[dict], admin) -> None:
    """The demo catalog (metrics as code, through metrics_import): missing metrics are created, none changed."""
    from experiments.metrics_yaml import metrics_import_yaml  # noqa: PLC0415

    existing = set(Metric.objects.values_list("key", flat=True))
    missing = [dict(m, owner="ops") for m in metrics if m["key"] not in existing]
    if missing:
        metrics_import_yaml(json.dumps({"metrics": missing}), actor=admin, certify=True)


def demo_seed(*, path: Path = SCENARIOS_PATH, reset_passwords: bool = False) -> SeedResult:
    result = SeedResult()
    with transaction.atomic():
        result.created_users = demo_users_ensure(reset_passwords=reset_passwords)
    user_model = get_user_model()
    users = {u.username: u for u in user_model.objects.filter(username__in=["ops", "reviewer", "admin"])}
    data = json.loads(path.read_text())
    scenarios = data["experiments"]
    with transaction.atomic():
        _catalog_ensure(data.get("catalog", []), users["admin"])
    now = timezone.now()
    existing = set(Experiment.objects.filter(slug__in=[s["slug"] for s in scenarios]).values_list("slug", flat=True))
    for spec in scenarios:
        if spec["slug"] in existing:
            continue
        timeline = Timeline.of(spec, now)
        with transaction.atomic():
            experiment = _create(spec, users, timeline)
            result.events_inserted += _walk(experiment, spec, users, timeline)
        result.created_experiments.append(spec["slug"])
    return result
