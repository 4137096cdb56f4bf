"""Demo data: users and the scenarios in fixtures/demo_scenarios.json.

Idempotent: users and experiments are looked up by username / slug and left alone when present;
events are inserted with ON CONFLICT DO NOTHING on the dedup key, so a second run changes nothing.
Statuses are reached through the workflow services (so the audit trail and decisions are real).
"""

from __future__ import annotations

import json
import random
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from experiments import services
from experiments.models import Experiment, Variant
from tracking.models import Assignment, Event

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


def _event_rows(experiment: Experiment, spec: dict, variants: dict[str, Variant], now) -> list[Event]:
    rng = random.Random(f"signaldash-demo:{experiment.slug}")
    days = spec.get("days", 7)
    start = now - timedelta(days=days)
    span = days * 86400 - 3600
    rows: list[Event] = []
    for vspec in spec["variants"]:
        variant = variants[vspec["key"]]
        exposed = [f"{experiment.slug}-{variant.key}-u{i:05d}" for i in range(vspec.get("users", 0))]
        exposed_at = {u: start + timedelta(seconds=rng.randrange(span)) for u in exposed}
        rows += [
            Event(
                experiment=experiment,
                variant=variant,
                user_key=u,
                event_type="exposure",
                metric="",
                occurred_at=t,
                props={"platform": rng.choice(["web", "ios", "android"])},
            )
            for u, t in exposed_at.items()
        ]
        for metric, count in vspec.get("conversions", {}).items():
            for u in rng.sample(exposed, count):
                after = min(span, int((now - exposed_at[u]).total_seconds()) - 60)
                t = exposed_at[u] + timedelta(seconds=rng.randrange(60, max(61, after)))
                rows.append(
                    Event(
                        experiment=experiment,
                        variant=variant,
                        user_key=u,
                        event_type="conversion",
                        metric=metric,
                        occurred_at=min(t, now - timedelta(seconds=30)),
                        value=round(rng.uniform(10, 120), 2),
                        props={},
                    )
                )
        # Conversions recorded *before* the user's exposure: stored, but not counted by the readout.
        for metric, count in spec.get("late_conversions", {}).items():
            converted = {e.user_key for e in rows if e.event_type == "conversion" and e.metric == metric}
            candidates = [u for u in exposed if u not in converted][:count]
            for u in candidates:
                rows.append(
                    Event(
                        experiment=experiment,
                        variant=variant,
                        user_key=u,
                        event_type="conversion",
                        metric=metric,
                        occurred_at=exposed_at[u] - timedelta(minutes=5),
                        props={},
                    )
                )
    control = next(v for v in variants.values() if v.is_control)
    for metric, count in spec.get("unexposed_conversions", {}).items():
        rows += [
            Event(
                experiment=experiment,
                variant=control,
                user_key=f"{experiment.slug}-orphan-{i:04d}",
                event_type="conversion",
                metric=metric,
                occurred_at=now - timedelta(hours=i + 1),
                props={},
            )
            for i in range(count)
        ]
    return rows


def _insert_events(experiment: Experiment, spec: dict, variants: dict[str, Variant]) -> int:
    rows = _event_rows(experiment, spec, variants, timezone.now())
    before = Event.objects.filter(experiment=experiment).count()
    Event.objects.bulk_create(rows, batch_size=2000, ignore_conflicts=True)
    assignments = [
        Assignment(experiment=experiment, user_key=e.user_key, variant=e.variant, source="upstream")
        for e in rows
        if e.event_type == "exposure"
    ]
    Assignment.objects.bulk_create(assignments, batch_size=2000, ignore_conflicts=True)
    return Event.objects.filter(experiment=experiment).count() - before


def _walk(experiment: Experiment, spec: dict, users: dict, variants: dict[str, Variant]) -> int:
    ops, reviewer = users["ops"], users["reviewer"]
    inserted = 0
    for step in PATH_TO[spec["status"]]:
        if step in EVENTS_BEFORE:
            inserted += _insert_events(experiment, spec, variants)
        if step == "submit":
            services.experiment_submit_for_review(experiment=experiment, actor=ops)
        elif step == "approve":
            services.experiment_approve_and_start(experiment=experiment, actor=reviewer)
            # Backdate the start so the demo's event history lies inside the running window.
            Experiment.objects.filter(pk=experiment.pk).update(
                started_at=timezone.now() - timedelta(days=spec.get("days", 7))
            )
            experiment.refresh_from_db()
        elif step == "end":
            services.experiment_end_for_readout(experiment=experiment, actor=ops)
        elif step == "ship":
            services.experiment_ship(experiment=experiment, actor=ops, rationale=spec["decision"])
        elif step == "kill":
            services.experiment_kill(experiment=experiment, actor=ops, rationale=spec["decision"])
        experiment.refresh_from_db()
    if spec["status"] == "running":
        inserted += _insert_events(experiment, spec, variants)
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
            experiment = Experiment.objects.create(
                name=spec["name"],
                slug=spec["slug"],
                hypothesis=spec["hypothesis"],
                primary_metric=spec["primary_metric"],
                owner=users["ops"],
            )
            variants = {
                v["key"]: Variant.objects.create(
                    experiment=experiment, key=v["key"], name=v["name"], is_control=v["is_control"], weight=v["weight"]
                )
                for v in spec["variants"]
            }
            result.events_inserted += _walk(experiment, spec, users, variants)
        result.created_experiments.append(spec["slug"])
    return result
