"""Demo data: users and the scenarios in fixtures/demo_scenarios.json.

Idempotent: users and experiments are looked up by username / slug and left alone when present;
events go through the tracking service (`events_ingest`: atomic dedup, first-exposure assignment),
so the demo data is exactly what the API would have stored, and a second run changes nothing.
Statuses are reached through the workflow services (so the audit trail and decisions are real).
"""

from __future__ import annotations

import json
import random
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from experiments import services
from experiments.models import Experiment, Variant
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
EVENTS_BEFORE = {"end"}  # events are recorded while running, before the readout starts


@dataclass
class SeedResult:
    created_users: dict[str, str] = field(default_factory=dict)  # username -> password (printed once)
    created_experiments: list[str] = field(default_factory=list)
    events_inserted: int = 0


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


def _event_rows(experiment: Experiment, spec: dict, now: datetime) -> list[EventIn]:
    """Deterministic events for one scenario (seeded RNG; exact counts from the scenario file)."""
    rng = random.Random(f"signaldash-demo:{experiment.slug}")
    days = spec.get("days", 7)
    start = now - timedelta(days=days)
    span = days * 86400 - 3600
    slug = experiment.slug

    def event(variant: str, user_key: str, event_type: str, at: datetime, **extra) -> EventIn:
        return EventIn(
            experiment=slug, variant=variant, user_key=user_key, event_type=event_type, occurred_at=at, **extra
        )

    rows: list[EventIn] = []
    for vspec in spec["variants"]:
        vkey = vspec["key"]
        exposed = [f"{slug}-{vkey}-u{i:05d}" for i in range(vspec.get("users", 0))]
        exposed_at = {u: start + timedelta(seconds=rng.randrange(span)) for u in exposed}
        rows += [
            event(vkey, u, "exposure", t, props={"platform": rng.choice(["web", "ios", "android"])})
            for u, t in exposed_at.items()
        ]
        converted: dict[str, set[str]] = {}
        for metric, count in vspec.get("conversions", {}).items():
            converted[metric] = set(rng.sample(exposed, count))
            for u in sorted(converted[metric]):
                after = min(span, int((now - exposed_at[u]).total_seconds()) - 60)
                t = exposed_at[u] + timedelta(seconds=rng.randrange(60, max(61, after)))
                t = min(t, now - timedelta(seconds=30))
                rows.append(event(vkey, u, "conversion", t, metric=metric, value=round(rng.uniform(10, 120), 2)))
        # Conversions recorded *before* the user's exposure: stored, but not counted by the readout.
        for metric, count in spec.get("late_conversions", {}).items():
            candidates = [u for u in exposed if u not in converted.get(metric, set())][:count]
            rows += [
                event(vkey, u, "conversion", exposed_at[u] - timedelta(minutes=5), metric=metric) for u in candidates
            ]
    control = next(v["key"] for v in spec["variants"] if v["is_control"])
    for metric, count in spec.get("unexposed_conversions", {}).items():
        rows += [
            event(control, f"{slug}-orphan-{i:04d}", "conversion", now - timedelta(hours=i + 1), metric=metric)
            for i in range(count)
        ]
    return rows


_BATCH = 1000  # the tracking API's batch size


def _insert_events(experiment: Experiment, spec: dict) -> int:
    """Store the scenario's events through the tracking service (dedup, first-exposure assignment)."""
    rows = _event_rows(experiment, spec, timezone.now())
    created = 0
    for i in range(0, len(rows), _BATCH):
        results = events_ingest(events=rows[i : i + _BATCH])
        created += sum(r.outcome is Outcome.CREATED for r in results)
    return created


def _walk(experiment: Experiment, spec: dict, users: dict) -> int:
    ops, reviewer = users["ops"], users["reviewer"]
    inserted = 0
    for step in PATH_TO[spec["status"]]:
        if step in EVENTS_BEFORE:
            inserted += _insert_events(experiment, spec)
        if step == "submit":
            services.experiment_submit_for_review(experiment=experiment, actor=ops)
        elif step == "approve":
            services.experiment_approve_and_start(experiment=experiment, actor=reviewer)
            # Backdate the start so the demo's event history lies inside the running window.
            Experiment.objects.filter(pk=experiment.pk).update(
                started_at=timezone.now() - timedelta(days=spec.get("days", 7))
            )
        elif step == "end":
            services.experiment_end_for_readout(experiment=experiment, actor=ops)
        elif step == "ship":
            services.experiment_ship(experiment=experiment, actor=ops, rationale=spec["decision"])
        elif step == "kill":
            services.experiment_kill(experiment=experiment, actor=ops, rationale=spec["decision"])
        experiment = Experiment.objects.get(pk=experiment.pk)  # the services work on a locked fresh copy
    if spec["status"] == "running":
        inserted += _insert_events(experiment, spec)
    return inserted


def demo_seed(*, path: Path = SCENARIOS_PATH, reset_passwords: bool = False) -> SeedResult:
    result = SeedResult()
    with transaction.atomic():
        result.created_users = demo_users_ensure(reset_passwords=reset_passwords)
    user_model = get_user_model()
    users = {u.username: u for u in user_model.objects.filter(username__in=["ops", "reviewer", "admin"])}
    scenarios = json.loads(path.read_text())["experiments"]
    for spec in scenarios:
        if Experiment.objects.filter(slug=spec["slug"]).exists():
            continue
        with transaction.atomic():
            experiment = services.experiment_save_plan(
                experiment=Experiment(
                    name=spec["name"],
                    slug=spec["slug"],
                    hypothesis=spec["hypothesis"],
                    primary_metric=spec["primary_metric"],
                    owner=users["ops"],
                ),
                actor=users["ops"],
            )
            for v in spec["variants"]:
                services.variant_save(
                    variant=Variant(
                        experiment=experiment,
                        key=v["key"],
                        name=v["name"],
                        is_control=v["is_control"],
                        weight=v["weight"],
                    ),
                    actor=users["ops"],
                )
            result.events_inserted += _walk(experiment, spec, users)
        result.created_experiments.append(spec["slug"])
    return result
