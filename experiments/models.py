"""Experiments, their variants, the append-only audit log and recorded decisions.

Rules that must always hold are database constraints (named `<model>_<rule>`); the services in
`experiments/services.py` call `full_clean()` first so people get a message, not an IntegrityError.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django_fsm import ConcurrentTransitionMixin, FSMField, transition

# Custom permissions, one per workflow step (granted to groups by migration 0003).
PERM_SUBMIT = "experiments.submit_experiment"
PERM_REQUEST_CHANGES = "experiments.request_changes_experiment"
PERM_APPROVE = "experiments.approve_experiment"
PERM_END = "experiments.end_experiment"
PERM_SHIP = "experiments.ship_experiment"
PERM_KILL = "experiments.kill_experiment"


@dataclass(frozen=True)
class PlannedMetric:
    key: str
    role: str  # primary | secondary | guardrail
    kind: str  # binary | mean
    direction: str  # increase | decrease


# The analysis and power-plan fields of the plan (one list for the admin, its form and the demo data).
POWER_PLAN_FIELDS = (
    "analysis",
    "alpha",
    "power",
    "mde",
    "baseline_rate",
    "baseline_mean",
    "baseline_sd",
    "expected_daily_users",
)


def generate_salt() -> str:
    return secrets.token_hex(16)


def plan_is_complete(experiment: Experiment) -> bool:
    """Transition condition for `submit_for_review` (the service reports *what* is missing)."""
    return not experiment.plan_problems()


def can_approve(experiment: Experiment, user) -> bool:
    """Transition permission for `approve_and_start`: the permission, and never one's own experiment."""
    return bool(user.has_perm(PERM_APPROVE)) and experiment.owner_id != user.pk


class ExperimentQuerySet(models.QuerySet):
    def update(self, **kwargs):
        if "status" in kwargs:
            raise PermissionError("Experiment.status changes only through its workflow transitions.")
        return super().update(**kwargs)


class Analysis(models.TextChoices):
    FIXED = "fixed", "Fixed horizon"
    SEQUENTIAL = "sequential", "Sequential (always valid)"


class Experiment(ConcurrentTransitionMixin, models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        REVIEW = "review", "In review"
        RUNNING = "running", "Running"
        READOUT = "readout", "Readout"
        SHIPPED = "shipped", "Shipped"
        KILLED = "killed", "Killed"

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    hypothesis = models.TextField(blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_experiments")
    primary_metric = models.SlugField(max_length=100, default="conversion")
    status = FSMField(max_length=16, choices=Status.choices, default=Status.DRAFT, protected=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    salt = models.CharField(max_length=64, default=generate_salt, editable=False)
    # --- analysis plan and power (fixed with the rest of the plan when it leaves draft) ------------
    analysis = models.CharField(
        max_length=16,
        choices=Analysis.choices,
        default=Analysis.FIXED,
        help_text="Fixed horizon: decide only at the planned sample. Sequential: always-valid, you may look daily.",
    )
    alpha = models.FloatField(default=0.05, help_text="Significance level (two-sided), e.g. 0.05.")
    power = models.FloatField(default=0.8, help_text="Chance of detecting the minimum detectable effect, e.g. 0.8.")
    mde = models.FloatField(
        null=True, blank=True, help_text="Minimum detectable effect, relative (0.05 = +5% on the primary metric)."
    )
    baseline_rate = models.FloatField(
        null=True, blank=True, help_text="Binary primary metric: expected control conversion rate (0.1 = 10%)."
    )
    baseline_mean = models.FloatField(null=True, blank=True, help_text="Mean primary metric: expected control mean.")
    baseline_sd = models.FloatField(
        null=True, blank=True, help_text="Mean primary metric: expected standard deviation per user."
    )
    expected_daily_users = models.PositiveIntegerField(
        null=True, blank=True, help_text="Users entering the experiment per day (all variants), for the expected days."
    )
    dimensions = models.JSONField(
        default=list, blank=True, help_text="Pre-registered breakdowns: up to 5 exposure props keys."
    )
    # The plan as approved (hypothesis, metrics, variants, alpha, MDE, power plan, analysis, dimensions):
    # written once, by ``experiment_approve_and_start``, and never changed (the plan is locked after draft).
    preregistration = models.JSONField(null=True, blank=True, editable=False)
    # Where the readout is computed: null = Signal Dash's own events; a warehouse source otherwise (part of the plan).
    data_source = models.ForeignKey(
        "readouts.DataSource",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="experiments",
        help_text="Compute the readout in this warehouse (empty: Signal Dash's own events).",
    )

    objects = ExperimentQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("submit_experiment", "Can submit an experiment for review"),
            ("request_changes_experiment", "Can send an experiment in review back to draft"),
            ("approve_experiment", "Can approve and start an experiment (never their own)"),
            ("end_experiment", "Can end a running experiment for readout"),
            ("ship_experiment", "Can ship an experiment after readout"),
            ("kill_experiment", "Can kill a running or read-out experiment"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["draft", "review", "running", "readout", "shipped", "killed"]),
                name="experiment_status_valid",
            ),
            models.CheckConstraint(condition=~Q(slug=""), name="experiment_slug_not_empty"),
            models.CheckConstraint(condition=~Q(primary_metric=""), name="experiment_primary_metric_not_empty"),
            models.CheckConstraint(
                condition=Q(status__in=["draft", "review"]) | Q(started_at__isnull=False),
                name="experiment_started_at_once_running",
            ),
            models.CheckConstraint(condition=Q(analysis__in=["fixed", "sequential"]), name="experiment_analysis_valid"),
            models.CheckConstraint(condition=Q(alpha__gt=0, alpha__lt=0.5), name="experiment_alpha_range"),
            models.CheckConstraint(condition=Q(power__gt=0, power__lt=1), name="experiment_power_range"),
            models.CheckConstraint(condition=Q(mde__isnull=True) | Q(mde__gt=0), name="experiment_mde_positive"),
            models.CheckConstraint(
                condition=Q(baseline_rate__isnull=True) | Q(baseline_rate__gt=0, baseline_rate__lt=1),
                name="experiment_baseline_rate_range",
            ),
            models.CheckConstraint(
                condition=Q(baseline_sd__isnull=True) | Q(baseline_sd__gt=0), name="experiment_baseline_sd_positive"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["draft", "review", "running"]) | Q(ended_at__isnull=False),
                name="experiment_ended_at_once_over",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return f"/experiments/{self.slug}/history"

    # --- plan ---------------------------------------------------------------------------------
    @property
    def is_plan_editable(self) -> bool:
        """The plan (hypothesis, metric, variants) may only change while in draft."""
        return self.status == self.Status.DRAFT

    def plan_problems(self) -> list[str]:
        """What stops this experiment from being submitted for review (empty when complete)."""
        problems = []
        if not (self.hypothesis or "").strip():
            problems.append("a hypothesis")
        if not (self.primary_metric or "").strip():
            problems.append("a primary metric")
        if self.pk is None:
            return [*problems, "at least 2 variants", "exactly one control variant"]
        variants = list(self.variants.all())
        if len(variants) < 2:
            problems.append(f"at least 2 variants (has {len(variants)})")
        controls = sum(1 for v in variants if v.is_control)
        if controls != 1:
            problems.append(f"exactly one control variant (has {controls})")
        metrics = list(self.metrics.all())
        if metrics and not any(m.role == ExperimentMetric.Role.PRIMARY for m in metrics):
            problems.append("a primary metric among the planned metrics")
        return problems

    def metric_plan(self) -> list[PlannedMetric]:
        """The planned metrics, primary first, then secondary, then guardrail (then by key).

        Without metric rows: the legacy plan, ``primary_metric`` as a binary increase-is-good primary.
        """
        rows = list(self.metrics.all())
        if not rows:
            return [PlannedMetric(self.primary_metric, "primary", "binary", "increase")]
        order = {"primary": 0, "secondary": 1, "guardrail": 2}
        rows.sort(key=lambda m: (order.get(m.role, 3), m.key))
        return [PlannedMetric(m.key, m.role, m.kind, m.direction) for m in rows]

    # --- workflow (the only way `status` changes; called from experiments/services.py) ----------
    @transition(
        field=status,
        source=Status.DRAFT,
        target=Status.REVIEW,
        permission=PERM_SUBMIT,
        conditions=[plan_is_complete],
        custom={
            "label": "Submit for review",
            "help_text": "Send the plan to a reviewer. Needs hypothesis, primary metric, 2+ variants, one control.",
        },
    )
    def submit_for_review(self) -> None:
        pass

    @transition(
        field=status,
        source=Status.REVIEW,
        target=Status.DRAFT,
        permission=PERM_REQUEST_CHANGES,
        custom={"label": "Request changes", "help_text": "Send the plan back to its owner with a comment."},
    )
    def request_changes(self, comment: str) -> None:
        pass

    @transition(
        field=status,
        source=Status.REVIEW,
        target=Status.RUNNING,
        permission=can_approve,
        custom={
            "label": "Approve and start",
            "help_text": "Start the experiment now. You cannot approve your own experiment.",
        },
    )
    def approve_and_start(self) -> None:
        self.started_at = timezone.now()

    @transition(
        field=status,
        source=Status.RUNNING,
        target=Status.READOUT,
        permission=PERM_END,
        custom={"label": "End for readout", "help_text": "Stop collecting and move to the readout."},
    )
    def end_for_readout(self) -> None:
        self.ended_at = timezone.now()

    @transition(
        field=status,
        source=Status.READOUT,
        target=Status.SHIPPED,
        permission=PERM_SHIP,
        custom={
            "label": "Ship",
            "help_text": "Record the decision to ship, with a rationale and the readout as of now.",
        },
    )
    def ship(self, rationale: str) -> None:
        pass

    @transition(
        field=status,
        source=[Status.RUNNING, Status.READOUT],
        target=Status.KILLED,
        permission=PERM_KILL,
        custom={
            "label": "Kill",
            "help_text": "Stop without shipping, with a rationale (also an emergency stop while running).",
        },
    )
    def kill(self, rationale: str) -> None:
        if self.ended_at is None:  # emergency stop while running
            self.ended_at = timezone.now()


class Variant(models.Model):
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="variants")
    key = models.SlugField(max_length=64)
    name = models.CharField(max_length=200)
    is_control = models.BooleanField(default=False)
    weight = models.PositiveIntegerField(default=1, help_text="Relative traffic share (positive integer).")

    class Meta:
        ordering = ["experiment_id", "-is_control", "key"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "key"], name="variant_unique_key_per_experiment"),
            models.UniqueConstraint(
                fields=["experiment"],
                condition=Q(is_control=True),
                name="variant_one_control_per_experiment",
            ),
            models.CheckConstraint(condition=Q(weight__gt=0), name="variant_weight_positive"),
            models.CheckConstraint(condition=~Q(key=""), name="variant_key_not_empty"),
        ]

    def __str__(self) -> str:
        return f"{self.experiment.slug}:{self.key}"


class ExperimentMetric(models.Model):
    """One metric of an experiment's plan: its role in the decision, its kind, and which way is good.

    An experiment without metric rows is read as one binary, increase-is-good primary metric named by
    ``Experiment.primary_metric`` (see ``Experiment.metric_plan``). With rows, ``primary_metric`` always
    equals the primary row's key (kept in sync by ``experiments.services.experiment_metric_save``).
    """

    class Role(models.TextChoices):
        PRIMARY = "primary", "Primary"
        SECONDARY = "secondary", "Secondary"
        GUARDRAIL = "guardrail", "Guardrail"

    class Kind(models.TextChoices):
        BINARY = "binary", "Binary (converted or not)"
        MEAN = "mean", "Mean (sum of values per user, e.g. revenue)"

    class Direction(models.TextChoices):
        INCREASE = "increase", "Increase is good"
        DECREASE = "decrease", "Decrease is good"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="metrics")
    key = models.SlugField(max_length=100, help_text="The `metric` that services send on conversions.")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.SECONDARY)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.BINARY)
    direction = models.CharField(max_length=16, choices=Direction.choices, default=Direction.INCREASE)

    class Meta:
        ordering = ["experiment_id", "key"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "key"], name="experimentmetric_unique_key_per_experiment"),
            models.UniqueConstraint(
                fields=["experiment"], condition=Q(role="primary"), name="experimentmetric_one_primary_per_experiment"
            ),
            models.CheckConstraint(
                condition=Q(role__in=["primary", "secondary", "guardrail"]), name="experimentmetric_role_valid"
            ),
            models.CheckConstraint(condition=Q(kind__in=["binary", "mean"]), name="experimentmetric_kind_valid"),
            models.CheckConstraint(
                condition=Q(direction__in=["increase", "decrease"]), name="experimentmetric_direction_valid"
            ),
            models.CheckConstraint(condition=~Q(key=""), name="experimentmetric_key_not_empty"),
        ]

    def __str__(self) -> str:
        return f"{self.experiment.slug}:{self.key} ({self.role}, {self.kind})"


class AuditLogQuerySet(models.QuerySet):
    def update(self, **kwargs):  # noqa: ARG002
        raise PermissionError("The audit log is append-only: rows cannot be updated.")

    def delete(self):
        raise PermissionError("The audit log is append-only: rows cannot be deleted.")


class AuditLog(models.Model):
    """One row per workflow transition or post-draft plan edit. Append-only."""

    experiment = models.ForeignKey(Experiment, on_delete=models.PROTECT, related_name="audit_entries")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    transition = models.CharField(max_length=64)
    from_state = models.CharField(max_length=16, blank=True)
    to_state = models.CharField(max_length=16, blank=True)
    comment = models.TextField(blank=True)
    extra = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = AuditLogQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["experiment", "at"], name="auditlog_experiment_at")]

    def __str__(self) -> str:
        return f"{self.experiment_id} {self.transition} {self.from_state}->{self.to_state}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise PermissionError("The audit log is append-only: rows cannot be updated.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("The audit log is append-only: rows cannot be deleted.")


class Decision(models.Model):
    class Outcome(models.TextChoices):
        SHIPPED = "shipped", "Shipped"
        KILLED = "killed", "Killed"

    experiment = models.OneToOneField(Experiment, on_delete=models.PROTECT, related_name="decision")
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    rationale = models.TextField()
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decided_at = models.DateTimeField(auto_now_add=True)
    readout_snapshot = models.JSONField(default=dict, blank=True)
    readout_bundle = models.BinaryField(null=True, blank=True, editable=False)
    shipped_variant = models.ForeignKey(
        Variant, on_delete=models.PROTECT, null=True, blank=True, related_name="+", help_text="The variant shipped."
    )
    override_reason = models.TextField(
        blank=True, help_text="Why the ship went ahead despite blocking problems (empty: nothing was overridden)."
    )

    class Meta:
        ordering = ["-decided_at"]
        constraints = [
            models.CheckConstraint(condition=Q(outcome__in=["shipped", "killed"]), name="decision_outcome_valid"),
            models.CheckConstraint(condition=~Q(rationale=""), name="decision_rationale_not_empty"),
            models.CheckConstraint(
                condition=Q(outcome="shipped") | Q(shipped_variant__isnull=True, override_reason=""),
                name="decision_ship_fields_only_when_shipped",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.experiment} → {self.outcome}"
