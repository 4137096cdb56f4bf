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
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection, transaction
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


@dataclass(frozen=True)
class _Row:
    variant_id: int
    user_key: str
    event_type: str
    metric: str
    value: float | None
    occurred_at: datetime
    props: str


def _event_rows(experiment: Experiment, spec: dict, variants: dict[str, Variant], now: datetime) -> list[_Row]:
    """Deterministic events for one scenario (seeded RNG; exact counts from the scenario file)."""
    rng = random.Random(f"signaldash-demo:{experiment.slug}")
    days = spec.get("days", 7)
    start = now - timedelta(days=days)
    span = days * 86400 - 3600
    rows: list[_Row] = []
    for vspec in spec["variants"]:
        vid = variants[vspec["key"]].pk
        exposed = [f"{experiment.slug}-{vspec['key']}-u{i:05d}" for i in range(vspec.get("users", 0))]
        exposed_at = {u: start + timedelta(seconds=rng.randrange(span)) for u in exposed}
        platforms = ['{"platform": "web"}', '{"platform": "ios"}', '{"platform": "android"}']
        rows += [_Row(vid, u, "exposure", "", None, t, rng.choice(platforms)) for u, t in exposed_at.items()]
        converted: dict[str, set[str]] = {}
        for metric, count in vspec.get("conversions", {}).items():
            converted[metric] = set(rng.sample(exposed, count))
            for u in sorted(converted[metric]):
                after = min(span, int((now - exposed_at[u]).total_seconds()) - 60)
                t = exposed_at[u] + timedelta(seconds=rng.randrange(60, max(61, after)))
                t = min(t, now - timedelta(seconds=30))
                rows.append(_Row(vid, u, "conversion", metric, round(rng.uniform(10, 120), 2), t, "{}"))
        # Conversions recorded *before* the user's exposure: stored, but not counted by the readout.
        for metric, count in spec.get("late_conversions", {}).items():
            candidates = [u for u in exposed if u not in converted.get(metric, set())][:count]
            rows += [
                _Row(vid, u, "conversion", metric, None, exposed_at[u] - timedelta(minutes=5), "{}") for u in candidates
            ]
    control_id = next(v.pk for v in variants.values() if v.is_control)
    for metric, count in spec.get("unexposed_conversions", {}).items():
        rows += [
            _Row(
                control_id,
                f"{experiment.slug}-orphan-{i:04d}",
                "conversion",
                metric,
                None,
                now - timedelta(hours=i + 1),
                "{}",
            )
            for i in range(count)
        ]
    return rows


_CHUNK = 500


def _insert_many(sql_head: str, columns: int, rows: list[tuple]) -> None:
    """Multi-row INSERT … ON CONFLICT DO NOTHING (same syntax on SQLite and PostgreSQL)."""
    with connection.cursor() as cursor:
        for i in range(0, len(rows), _CHUNK):
            chunk = rows[i : i + _CHUNK]
            placeholders = ", ".join(["(" + ", ".join(["%s"] * columns) + ")"] * len(chunk))
            cursor.execute(f"{sql_head} VALUES {placeholders} ON CONFLICT DO NOTHING", [v for r in chunk for v in r])


def _insert_events(experiment: Experiment, spec: dict, variants: dict[str, Variant]) -> int:
    now = timezone.now()
    rows = _event_rows(experiment, spec, variants, now)
    dt = connection.ops.adapt_datetimefield_value
    received = dt(now)
    before = Event.objects.filter(experiment=experiment).count()
    _insert_many(
        f"INSERT INTO {Event._meta.db_table} "
        "(experiment_id, variant_id, user_key, event_type, metric, value, occurred_at, received_at, props)",
        9,
        [
            (
                experiment.pk,
                r.variant_id,
                r.user_key,
                r.event_type,
                r.metric,
                r.value,
                dt(r.occurred_at),
                received,
                r.props,
            )
            for r in rows
        ],
    )
    _insert_many(
        f"INSERT INTO {Assignment._meta.db_table} (experiment_id, user_key, variant_id, assigned_at, source)",
        5,
        [
            (experiment.pk, r.user_key, r.variant_id, dt(r.occurred_at), "upstream")
            for r in rows
            if r.event_type == "exposure"
        ],
    )
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
        elif step == "end":
            services.experiment_end_for_readout(experiment=experiment, actor=ops)
        elif step == "ship":
            services.experiment_ship(experiment=experiment, actor=ops, rationale=spec["decision"])
        elif step == "kill":
            services.experiment_kill(experiment=experiment, actor=ops, rationale=spec["decision"])
        experiment = Experiment.objects.get(pk=experiment.pk)  # the services work on a locked fresh copy
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
            variants = {
                v["key"]: services.variant_save(
                    variant=Variant(
                        experiment=experiment,
                        key=v["key"],
                        name=v["name"],
                        is_control=v["is_control"],
                        weight=v["weight"],
                    ),
                    actor=users["ops"],
                )
                for v in spec["variants"]
            }
            result.events_inserted += _walk(experiment, spec, users, variants)
        result.created_experiments.append(spec["slug"])
    return result
