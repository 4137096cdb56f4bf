"""Experiments, their variants, the append-only audit log and recorded decisions.

Rules that must always hold are database constraints (named `<model>_<rule>`); the services in
`experiments/services.py` call `full_clean()` first so people get a message, not an IntegrityError.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
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
PERM_CERTIFY_METRIC = "experiments.certify_metric"


@dataclass(frozen=True)
class PlannedMetric:
    key: str
    role: str  # primary | secondary | guardrail
    kind: str  # binary | mean | ratio | funnel
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


SLUG_RE = re.compile(r"[-a-zA-Z0-9_]{1,100}")


def generate_salt() -> str:
    return secrets.token_hex(16)


def plan_is_complete(experiment: Experiment) -> bool:
    """Transition condition for `submit_for_review` (the service reports *what* is missing)."""
    return not experiment.plan_problems()


def can_approve(experiment: Experiment, user) -> bool:
    """Transition permission for `approve_and_start`: the permission, and never one's own experiment."""
    return bool(user.has_perm(PERM_APPROVE)) and experiment.owner_id != user.pk


class Layer(models.Model):
    """A set of mutually exclusive experiments: each claims a range [start, end) of the layer, and the ranges
    of a layer's running experiments never overlap (checked at approval, under this row's lock)."""

    key = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    salt = models.CharField(max_length=64, default=generate_salt, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["key"]
        constraints = [
            models.CheckConstraint(condition=~Q(key=""), name="layer_key_not_empty"),
            models.CheckConstraint(condition=~Q(salt=""), name="layer_salt_not_empty"),
        ]

    def __str__(self) -> str:
        return self.name


# The assignment fields of the plan (locked after draft, frozen into the pre-registration).
ASSIGNMENT_PLAN_FIELDS = ("coverage", "targeting", "layer", "layer_start", "layer_end", "holdout")


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
    # --- assignment (who is enrolled; part of the plan, see docs/assignment.md) -----------------------
    coverage = models.FloatField(
        default=1.0, help_text="Share of eligible users enrolled (0 < coverage ≤ 1; 0.1 = 10%). Default: all."
    )
    targeting = models.JSONField(
        default=dict,
        blank=True,
        help_text='Who is eligible: a GrowthBook condition on user attributes, e.g. {"country": {"$in": ["DE"]}, '
        '"app_version": {"$vgte": "2.10.0"}}. Empty: everyone.',
    )
    layer = models.ForeignKey(
        Layer,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="experiments",
        help_text="Mutually exclusive experiments share a layer; each claims a range of it.",
    )
    layer_start = models.FloatField(null=True, blank=True, help_text="Start of this experiment's layer range (≥ 0).")
    layer_end = models.FloatField(null=True, blank=True, help_text="End of the layer range (> start, ≤ 1).")
    holdout = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="held_out",
        help_text="A running two-variant holdout experiment: users in its control are never enrolled here.",
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
            models.CheckConstraint(condition=Q(coverage__gt=0, coverage__lte=1), name="experiment_coverage_range"),
            models.CheckConstraint(
                condition=Q(layer__isnull=True, layer_start__isnull=True, layer_end__isnull=True)
                | Q(
                    layer__isnull=False,
                    layer_start__gte=0,
                    layer_end__lte=1,
                    layer_start__lt=models.F("layer_end"),
                ),
                name="experiment_layer_range",
            ),
            models.CheckConstraint(condition=~Q(holdout=models.F("id")), name="experiment_holdout_not_self"),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return f"/experiments/{self.slug}/history"

    def clean(self) -> None:
        """Messages for the assignment fields, each on its field (the constraints guard every other path)."""
        from experiments.targeting import targeting_problems

        errors: dict[str, list[str]] = {}
        if self.coverage is not None and not 0 < self.coverage <= 1:
            errors["coverage"] = ["Coverage must be above 0 and at most 1 (0.1 = 10% of eligible users)."]
        problems = targeting_problems(self.targeting)
        if problems:
            errors["targeting"] = [f"Invalid condition at {p}" for p in problems]
        errors.update(self._layer_errors())
        if self.holdout_id is not None:
            if self.pk is not None and self.holdout_id == self.pk:
                errors["holdout"] = ["An experiment cannot be its own holdout."]
            elif self.holdout.holdout_id is not None:
                errors["holdout"] = [f"'{self.holdout.slug}' has a holdout itself; a holdout cannot be held out."]
        if errors:
            raise ValidationError(errors)

    def _layer_errors(self) -> dict[str, list[str]]:
        start, end = self.layer_start, self.layer_end
        if self.layer_id is None:
            if start is not None or end is not None:
                return {"layer": ["Choose the layer this range belongs to (or clear the range)."]}
            return {}
        if start is None or end is None:
            return {"layer_start": ["An experiment in a layer needs a range: start and end."]}
        if not 0 <= start < end <= 1:
            return {"layer_end": ["The layer range must satisfy 0 ≤ start < end ≤ 1 (e.g. 0 to 0.5)."]}
        return {}

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

    def metric_plan(self, rows: list[ExperimentMetric] | None = None) -> list[PlannedMetric]:
        """The planned metrics, primary first, then secondary, then guardrail (then by key).

        Without metric rows: the legacy plan, ``primary_metric`` as a binary increase-is-good primary.
        ``rows``: this experiment's metric rows when the caller already read them.
        """
        rows = list(self.metrics.all()) if rows is None else list(rows)
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


class MetricKind(models.TextChoices):
    BINARY = "binary", "Binary (converted or not)"
    MEAN = "mean", "Mean (sum of values per user, e.g. revenue)"
    RATIO = "ratio", "Ratio (numerator per denominator, e.g. revenue per order)"
    FUNNEL = "funnel", "Funnel (ordered steps)"


class MetricDirection(models.TextChoices):
    INCREASE = "increase", "Increase is good"
    DECREASE = "decrease", "Decrease is good"


class Metric(models.Model):
    """One metric of the shared catalog, defined once and reused by experiments (``ExperimentMetric.metric``).

    The per-user rules these fields drive are in docs/metrics.md ("Metric catalog"); what an experiment
    computes is the definition frozen at approval (``readouts.definitions.MetricDefinition``), never the
    live row. Every write goes through ``experiments.catalog`` (``metric_save``), which audits it.
    """

    class Aggregation(models.TextChoices):
        SUM = "sum", "Sum of value"
        COUNT = "count", "Count of conversion events"

    class Cap(models.TextChoices):
        NONE = "none", "No cap"
        ABSOLUTE = "absolute", "Absolute (cap at a value)"
        PERCENTILE = "percentile", "Percentile (cap at a quantile of all exposed users)"

    Kind = MetricKind
    Direction = MetricDirection

    key = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="owned_metrics"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.BINARY)
    direction = models.CharField(max_length=16, choices=Direction.choices, default=Direction.INCREASE)
    event = models.SlugField(
        max_length=100,
        blank=True,
        help_text="The `metric` name services send on conversions (defaults to the key; blank for ratio and funnel).",
    )
    aggregation = models.CharField(
        max_length=8,
        choices=Aggregation.choices,
        default=Aggregation.SUM,
        help_text="Mean metrics: sum of `value` (default) or count of counted conversion events.",
    )
    window_hours = models.FloatField(
        null=True, blank=True, help_text="Count only conversions within this many hours of exposure + delay."
    )
    delay_hours = models.FloatField(default=0.0, help_text="Hours after first exposure the window starts (may be <0).")
    cap = models.CharField(max_length=16, choices=Cap.choices, default=Cap.NONE)
    cap_value = models.FloatField(
        null=True, blank=True, help_text="Absolute: the cap; percentile: the quantile in (0, 1), e.g. 0.99."
    )
    cap_ignore_zeros = models.BooleanField(default=False, help_text="Percentile caps: leave users at 0 out.")
    filter_prop = models.CharField(max_length=100, blank=True, help_text="Only conversions with this prop ...")
    filter_values = models.JSONField(default=list, blank=True, help_text="... equal (as text) to one of these.")
    numerator = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="+", help_text="Ratio: numerator."
    )
    denominator = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="+", help_text="Ratio: denominator."
    )
    steps = models.JSONField(default=list, blank=True, help_text="Funnel: the ordered event names (2 or more).")
    official = models.BooleanField(default=False, help_text="Certified (needs the certify_metric permission).")
    archived = models.BooleanField(default=False, help_text="Hidden when picking metrics for new plans.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]
        permissions = [("certify_metric", "Can set a metric official, and edit official metrics")]
        constraints = [
            models.CheckConstraint(condition=~Q(key=""), name="metric_key_not_empty"),
            models.CheckConstraint(
                condition=Q(kind__in=["binary", "mean", "ratio", "funnel"]), name="metric_kind_valid"
            ),
            models.CheckConstraint(condition=Q(direction__in=["increase", "decrease"]), name="metric_direction_valid"),
            models.CheckConstraint(condition=Q(aggregation__in=["sum", "count"]), name="metric_aggregation_valid"),
            models.CheckConstraint(condition=Q(cap__in=["none", "absolute", "percentile"]), name="metric_cap_valid"),
            models.CheckConstraint(
                condition=Q(window_hours__isnull=True) | Q(window_hours__gt=0), name="metric_window_positive"
            ),
            models.CheckConstraint(
                condition=Q(cap="none", cap_value__isnull=True)
                | Q(cap="absolute", cap_value__isnull=False, cap_value__gt=0)
                | Q(cap="percentile", cap_value__isnull=False, cap_value__gt=0, cap_value__lt=1),
                name="metric_cap_value_range",
            ),
            models.CheckConstraint(
                condition=Q(kind="ratio", numerator__isnull=False, denominator__isnull=False)
                | (~Q(kind="ratio") & Q(numerator__isnull=True, denominator__isnull=True)),
                name="metric_ratio_needs_both_parts",
            ),
            models.CheckConstraint(
                condition=Q(kind__in=["binary", "mean"], event__gt="") | Q(kind__in=["ratio", "funnel"], event=""),
                name="metric_event_by_kind",
            ),
            models.CheckConstraint(
                condition=Q(kind="funnel", steps__1__isnull=False) | (~Q(kind="funnel") & Q(steps=[])),
                name="metric_funnel_needs_steps",
            ),
        ]

    def __str__(self) -> str:
        return self.key

    def get_absolute_url(self) -> str:
        return f"/metrics/{self.key}/"

    def clean(self) -> None:
        """What the constraints cannot say, with a message per field (and the event default)."""
        errors: dict[str, list[str]] = {}

        def err(field: str, message: str) -> None:
            errors.setdefault(field, []).append(message)

        simple = self.kind in (MetricKind.BINARY, MetricKind.MEAN)
        if simple and not self.event:
            self.event = self.key
        if not simple and self.event:
            err("event", "Ratio and funnel metrics have no event of their own (their parts and steps do).")
        if self.kind != MetricKind.MEAN and self.aggregation != self.Aggregation.SUM:
            err("aggregation", "Only mean metrics have an aggregation (count of events).")
        if self.kind != MetricKind.MEAN and self.cap != self.Cap.NONE:
            err("cap", "Capping applies to mean metrics only (a ratio caps its parts).")
        self._clean_cap(err)
        if self.window_hours is not None and not self.window_hours > 0:
            err("window_hours", "The window must be a positive number of hours (empty: no window).")
        self._clean_filter(err)
        self._clean_ratio(err)
        self._clean_funnel(err)
        if errors:
            raise ValidationError(errors)

    def _clean_cap(self, err) -> None:
        if self.cap == self.Cap.NONE and self.cap_value is not None:
            err("cap_value", "No cap is set, so there is no cap value.")
        if self.cap == self.Cap.ABSOLUTE and (self.cap_value is None or not self.cap_value > 0):
            err("cap_value", "An absolute cap needs a cap value above 0.")
        if self.cap == self.Cap.PERCENTILE and (self.cap_value is None or not 0 < self.cap_value < 1):
            err("cap_value", "A percentile cap needs a cap value strictly between 0 and 1 (e.g. 0.99).")
        if self.cap_ignore_zeros and self.cap != self.Cap.PERCENTILE:
            err("cap_ignore_zeros", "Ignoring zeros applies to percentile caps only.")

    def _clean_filter(self, err) -> None:
        values = self.filter_values
        if not isinstance(values, list) or not all(isinstance(v, str | int | float | bool) for v in values):
            err("filter_values", "The filter values must be a list of texts.")
            return
        if self.filter_prop and not values:
            err("filter_values", "A filter needs at least one value.")
        if values and not self.filter_prop:
            err("filter_prop", "Filter values need the prop they filter on.")
        if self.filter_prop and self.kind == MetricKind.RATIO:
            err("filter_prop", "A ratio filters through its parts (each with its own filter).")

    def _clean_ratio(self, err) -> None:
        if self.kind != MetricKind.RATIO:
            for part in ("numerator", "denominator"):
                if getattr(self, f"{part}_id") is not None:
                    err(part, "Only ratio metrics have a numerator and a denominator.")
            return
        for part in ("numerator", "denominator"):
            target = getattr(self, part) if getattr(self, f"{part}_id") is not None else None
            if target is None:
                err(part, f"A ratio metric needs a {part} (a binary or mean catalog metric).")
            elif target.kind not in (MetricKind.BINARY, MetricKind.MEAN):
                err(part, f"The {part} must be a binary or mean metric ('{target.key}' is {target.kind}).")
            elif self.pk is not None and target.pk == self.pk:
                err(part, "A ratio cannot use itself as a part.")
        if self.window_hours is not None or self.delay_hours:
            err("window_hours", "A ratio takes its windows from its parts (each with its own window and delay).")

    def _clean_funnel(self, err) -> None:
        steps = self.steps
        if not isinstance(steps, list) or not all(isinstance(s, str) and SLUG_RE.fullmatch(s) for s in steps):
            err("steps", "The steps must be a list of event names (letters, digits, - and _).")
            return
        if self.kind == MetricKind.FUNNEL and len(steps) < 2:
            err("steps", f"A funnel needs at least 2 steps (has {len(steps)}).")
        if self.kind != MetricKind.FUNNEL and steps:
            err("steps", "Only funnel metrics have steps.")


class MetricChangeQuerySet(models.QuerySet):
    def update(self, **kwargs):  # noqa: ARG002
        raise PermissionError("The metric change log is append-only: rows cannot be updated.")

    def delete(self):
        raise PermissionError("The metric change log is append-only: rows cannot be deleted.")


class MetricChange(models.Model):
    """The audit trail of the catalog: one row per create/update of a metric (who, when, before/after)."""

    metric = models.ForeignKey(Metric, on_delete=models.PROTECT, related_name="changes")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    action = models.CharField(max_length=16)  # create | update
    source = models.CharField(max_length=16, default="admin")  # admin | import | migration | demo | service
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(default=dict)
    running_experiments = models.JSONField(default=list, blank=True)  # slugs of running users at the time
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = MetricChangeQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.metric_id} {self.action} at {self.at:%Y-%m-%d %H:%M}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise PermissionError("The metric change log is append-only: rows cannot be updated.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("The metric change log is append-only: rows cannot be deleted.")


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

    Kind = MetricKind
    Direction = MetricDirection

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="metrics")
    metric = models.ForeignKey(
        "Metric",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="experiment_rows",
        help_text="A catalog metric (its key, kind and direction are used); empty: an ad-hoc binary or mean "
        "metric on the conversions named by the key.",
    )
    key = models.SlugField(max_length=100, help_text="The `metric` that services send on conversions.")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.SECONDARY)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.BINARY)
    direction = models.CharField(max_length=16, choices=Direction.choices, default=Direction.INCREASE)
    # The conversion events this row's metric reads -> "mean" when a conversion needs a value, else "binary"
    # (ingest's rule, part 8). Written by the services from the metric's definition (frozen at approval);
    # empty: the row's own key and kind, as before the catalog.
    events = models.JSONField(default=dict, blank=True, editable=False)

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
            models.CheckConstraint(
                condition=Q(kind__in=["binary", "mean", "ratio", "funnel"]), name="experimentmetric_kind_valid"
            ),
            models.CheckConstraint(
                condition=Q(metric__isnull=False) | Q(kind__in=["binary", "mean"]),
                name="experimentmetric_adhoc_binary_or_mean",
            ),
            models.CheckConstraint(
                condition=Q(direction__in=["increase", "decrease"]), name="experimentmetric_direction_valid"
            ),
            models.CheckConstraint(condition=~Q(key=""), name="experimentmetric_key_not_empty"),
        ]

    def __str__(self) -> str:
        return f"{self.experiment.slug}:{self.key} ({self.role}, {self.kind})"

    def apply_catalog(self) -> None:
        """A row with a catalog metric takes its key, kind and direction from it (called before validation)."""
        if self.metric_id is not None:
            metric = self.metric
            self.key, self.kind, self.direction = metric.key, metric.kind, metric.direction

    def clean(self) -> None:
        self.apply_catalog()
        if self.metric_id is None and self.kind not in (MetricKind.BINARY, MetricKind.MEAN):
            raise ValidationError({"kind": "Ratio and funnel metrics come from the catalog: pick the catalog metric."})


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


class WebhookFormat(models.TextChoices):
    JSON = "json", "JSON"
    SLACK = "slack", "Slack"


class NotificationEvent(models.TextChoices):
    REVIEW_REQUESTED = "experiment.review_requested", "Review requested"
    REVIEW_OVERDUE = "experiment.review_overdue", "Review overdue"
    APPROVED = "experiment.approved", "Approved"
    HEALTH_FAILED = "experiment.health_failed", "Health check failed"
    RESULT_READY = "experiment.result_ready", "Result ready"
    DECIDED = "experiment.decided", "Decided"


class Webhook(models.Model):
    """An outgoing notification target; ``events`` is the list of event names it receives (empty = all)."""

    name = models.CharField(max_length=120)
    url = models.URLField(max_length=500)
    secret = models.CharField(max_length=200, help_text="Used to sign each body (HMAC-SHA256); write-only.")
    format = models.CharField(max_length=10, choices=WebhookFormat.choices, default=WebhookFormat.JSON)
    events = models.JSONField(default=list, blank=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def wants(self, event: str) -> bool:
        return self.active and (not self.events or event in self.events)


class NotificationOutbox(models.Model):
    """What a webhook delivery and a notification email share: the event, its once-only occasion, and the
    retry bookkeeping (attempts so far, the last error, when the next attempt is scheduled)."""

    event = models.CharField(max_length=40, choices=NotificationEvent.choices)
    occasion = models.CharField(max_length=200)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="When the next attempt is scheduled (a retry task with run_after)."
    )

    class Meta:
        abstract = True
        ordering = ["-created_at"]


class WebhookDelivery(NotificationOutbox):
    """One event for one webhook; ``occasion`` makes each (webhook, occasion) be sent at most once."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    last_status = models.PositiveIntegerField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta(NotificationOutbox.Meta):
        constraints = [
            models.UniqueConstraint(fields=["webhook", "occasion"], name="webhookdelivery_once_per_occasion"),
        ]

    def __str__(self) -> str:
        return f"{self.event} → {self.webhook}"


class WebhookAttempt(models.Model):
    """The append-only log of each HTTP attempt of a delivery."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="webhookattempt_unique_number"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}"


class EmailNotification(NotificationOutbox):
    """One notification email (owner, and the reviewer group for review events); sent once per occasion."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="emails")
    recipients = models.JSONField(default=list)
    subject = models.CharField(max_length=300)
    body = models.TextField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta(NotificationOutbox.Meta):
        constraints = [
            models.UniqueConstraint(fields=["occasion"], name="emailnotification_once_per_occasion"),
        ]

    def __str__(self) -> str:
        return f"{self.event} → {', '.join(self.recipients)}"
