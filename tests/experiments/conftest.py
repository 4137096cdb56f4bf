"""Fixtures for the workflow: users in each role and experiments in each status (made via services)."""

from __future__ import annotations

from datetime import datetime
from html.parser import HTMLParser
from importlib import import_module

import pytest
from django.utils import timezone

from experiments import services
from experiments.models import Experiment, Variant


def add_winning_events(experiment: Experiment, *, users: int = 400, control_rate=0.10, green_rate=0.25) -> None:
    """Clean evidence that `green` beats `control` on the primary metric (equal arms, no SRM): ship is not blocked.

    Written with bulk_create, so it works whatever the status (the tracking API only takes events while running).
    """
    from tracking.models import Event

    now, events = timezone.now(), []
    for key, rate in (("control", control_rate), ("green", green_rate)):
        variant = experiment.variants.get(key=key)
        for i in range(users):
            user = f"{key}-w{i}"
            events.append(
                Event(experiment=experiment, variant=variant, user_key=user, event_type="exposure", occurred_at=now)
            )
            if i < users * rate:
                events.append(
                    Event(
                        experiment=experiment,
                        variant=variant,
                        user_key=user,
                        event_type="conversion",
                        metric=experiment.primary_metric,
                        occurred_at=now,
                    )
                )
    Event.objects.bulk_create(events, batch_size=2000)


def ensure_workflow_groups() -> None:
    """(Re)create the `ops`/`reviewer` groups exactly as migration 0003 does.

    Transactional tests (transaction=True) end with a flush that also empties auth_group and
    auth_permission, so a later transactional test cannot rely on the data migration's rows.
    """
    from django.apps import apps

    migration = import_module("experiments.migrations.0003_workflow_groups")
    migration.create_groups(apps, None)
    import_module("experiments.migrations.0006_metric_plan_permissions").grant(apps, None)
    import_module("experiments.migrations.0007_metric_catalog").grant(apps, None)


@pytest.fixture
def workflow_groups(db):
    ensure_workflow_groups()


@pytest.fixture
def ops(make_user, workflow_groups):
    return make_user("ops", groups=("ops",), is_staff=True)


@pytest.fixture
def reviewer(make_user, workflow_groups):
    return make_user("reviewer", groups=("reviewer",))


@pytest.fixture
def outsider(make_user):
    return make_user("outsider")


@pytest.fixture
def superuser(make_user):
    return make_user("admin", is_superuser=True)


@pytest.fixture
def approver(make_user, workflow_groups):
    """A second reviewer, used by fixtures to move experiments past review."""
    return make_user("approver", groups=("reviewer",))


@pytest.fixture
def make_experiment(ops, approver):
    """make_experiment(slug, status=..., owner=..., complete=True): drives the workflow through services."""

    def _make(
        slug: str = "checkout-button",
        *,
        status: str = Experiment.Status.DRAFT,
        owner=None,
        complete: bool = True,
    ) -> Experiment:
        owner = owner or ops
        experiment = services.experiment_save_plan(
            experiment=Experiment(
                name=slug.replace("-", " ").title(),
                slug=slug,
                hypothesis="A green button lifts conversion." if complete else "",
                owner=owner,
            ),
            actor=owner,
        )
        if complete:
            services.variant_save(
                variant=Variant(experiment=experiment, key="control", name="Control", is_control=True), actor=owner
            )
            services.variant_save(variant=Variant(experiment=experiment, key="green", name="Green"), actor=owner)
        steps = ["review", "running", "readout"]
        target = {"shipped": "readout", "killed": "readout"}.get(status, status)
        if target in steps:
            services.experiment_submit_for_review(experiment=experiment, actor=ops)
        if target in steps[1:]:
            services.experiment_approve_and_start(experiment=experiment, actor=approver)
        if target == "readout":
            services.experiment_end_for_readout(experiment=experiment, actor=ops)
        if status == "shipped":
            add_winning_events(experiment)
            services.experiment_ship(experiment=experiment, actor=ops, rationale="Clear win.")
        if status == "killed":
            services.experiment_kill(experiment=experiment, actor=ops, rationale="No effect.")
        experiment.refresh_from_db()
        assert experiment.status == status
        return experiment

    return _make


@pytest.fixture
def freeze(monkeypatch):
    """freeze(aware_datetime): timezone.now() (and so auto_now_add) returns that instant."""

    def _freeze(at: datetime) -> None:
        monkeypatch.setattr("django.utils.timezone.now", lambda: at)

    return _freeze


class _FormFields(HTMLParser):
    """Collects the fields of the first POST <form> (not a logout form): what a browser would send."""

    def __init__(self, form_id: str | None) -> None:
        super().__init__()
        self.form_id = form_id
        self.in_form = False
        self.done = False
        self.data: dict[str, str] = {}
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and not self.done and (self.form_id is None or a.get("id") == self.form_id):
            is_logout = (a.get("action") or "").rstrip("/").endswith("logout")
            self.in_form = (a.get("method") or "").lower() == "post" and not is_logout
        if not self.in_form:
            return
        name = a.get("name")
        if tag == "input" and name and a.get("type") not in ("submit", "button", "file"):
            if a.get("type") in ("checkbox", "radio"):
                if "checked" in a:
                    self.data[name] = a.get("value") or "on"
            else:
                self.data[name] = a.get("value") or ""
        elif tag == "select" and name:
            self._select = name
            self.data.setdefault(name, "")
        elif tag == "option" and self._select and "selected" in a:
            self.data[self._select] = a.get("value") or ""
        elif tag == "textarea" and name:
            self._textarea = name
            self.data[name] = ""

    def handle_data(self, data):
        if self._textarea:
            self.data[self._textarea] += data

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            if self._textarea:
                self.data[self._textarea] = self.data[self._textarea].lstrip("\n")
            self._textarea = None
        elif tag == "form" and self.in_form:
            self.in_form, self.done = False, True


@pytest.fixture
def form_data():
    """form_data(response, form_id=None) -> dict of the fields a browser would post from that page."""

    def _data(response, form_id: str | None = None) -> dict[str, str]:
        parser = _FormFields(form_id)
        parser.feed(response.content.decode())
        return parser.data

    return _data
