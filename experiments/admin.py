"""Ops staff's home. Every write goes through experiments/services.py.

- Transitions are django-fsm-2's admin buttons (only those the user may run from the current state);
  request-changes / ship / kill open a form (`comment` / `rationale`) first.
- The plan (name, slug, owner, hypothesis, metric, variants) is editable only while in draft;
  afterwards the page is read-only apart from the workflow buttons.
- The audit history and the decision are shown read-only on the experiment page.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.forms.models import BaseInlineFormSet
from django.http import Http404
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django_fsm.admin import FSMAdminMixin

from experiments import catalog, services
from experiments.admin_forms import ExperimentAdminForm, VariantAdminForm
from experiments.forms import DecisionForm, RequestChangesForm, ShipForm
from experiments.layers import layer_ranges_svg
from experiments.models import (
    ASSIGNMENT_PLAN_FIELDS,
    PERM_CERTIFY_METRIC,
    PERM_SUBMIT,
    POWER_PLAN_FIELDS,
    AuditLog,
    Decision,
    EmailNotification,
    Experiment,
    ExperimentMetric,
    Layer,
    Metric,
    MetricChange,
    NotificationEvent,
    Variant,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
)
from experiments.templatetags.workflow import transition_label
from signaldash.admin import ReadOnlyAdminMixin

PLAN_FIELDS = ("name", "slug", "owner", "hypothesis", "primary_metric", "data_source")
POWER_FIELDS = (*POWER_PLAN_FIELDS, "dimensions")


def _badge(status: str, label: str) -> str:
    return format_html('<span class="sd-badge sd-status-{}">{}</span>', status, label)


class VariantInlineFormSet(BaseInlineFormSet):
    def clean(self):
        super().clean()
        kept = [f for f in self.forms if f.cleaned_data and not f.cleaned_data.get("DELETE")]
        if sum(1 for f in kept if f.cleaned_data.get("is_control")) > 1:
            raise forms.ValidationError("Only one variant can be the control.")


class PlanInlineMixin:
    """Plan rows (variants, metrics) are editable only while the experiment is a draft."""

    def _plan_locked(self, obj) -> bool:
        return obj is not None and not obj.is_plan_editable

    def has_add_permission(self, request, obj=None):
        return not self._plan_locked(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request, obj=None):
        return not self._plan_locked(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return not self._plan_locked(obj) and super().has_delete_permission(request, obj)


class VariantInline(PlanInlineMixin, admin.TabularInline):
    model = Variant
    form = VariantAdminForm
    formset = VariantInlineFormSet
    fields = ("key", "name", "is_control", "weight")

    def get_extra(self, request, obj=None, **kwargs):
        return 2 if obj is None else 0


class MetricInlineFormSet(BaseInlineFormSet):
    def clean(self):
        super().clean()
        kept = [f for f in self.forms if f.cleaned_data and not f.cleaned_data.get("DELETE")]
        if sum(1 for f in kept if f.cleaned_data.get("role") == ExperimentMetric.Role.PRIMARY) > 1:
            raise forms.ValidationError("Only one metric can be the primary metric.")


class ExperimentMetricForm(forms.ModelForm):
    """A planned metric: pick a catalog metric (its key, kind and direction are used), or type an ad-hoc key."""

    class Meta:
        model = ExperimentMetric
        fields = ("metric", "key", "role", "kind", "direction")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["key"].required = False
        self.fields["key"].help_text = "Ad-hoc metrics only (binary or mean on the conversions named by the key)."

    def clean(self):
        data = super().clean()
        metric = data.get("metric")
        if metric is not None:
            data["key"], data["kind"], data["direction"] = metric.key, metric.kind, metric.direction
        elif not data.get("key"):
            self.add_error("key", "Pick a catalog metric or give an ad-hoc key.")
        return data


class ExperimentMetricInline(PlanInlineMixin, admin.TabularInline):
    model = ExperimentMetric
    form = ExperimentMetricForm
    formset = MetricInlineFormSet
    fields = ("metric", "key", "role", "kind", "direction")
    autocomplete_fields = ("metric",)
    verbose_name = "planned metric"
    verbose_name_plural = "Metric plan (primary, secondary and guardrail metrics)"

    def get_extra(self, request, obj=None, **kwargs):
        return 1 if obj is None or obj.is_plan_editable else 0


@admin.register(Experiment)
class ExperimentAdmin(FSMAdminMixin, admin.ModelAdmin):
    fsm_fields = ["status"]
    form = ExperimentAdminForm
    change_form_template = "admin/experiments/experiment/sd_change_form.html"
    fsm_forms = {"request_changes": RequestChangesForm, "ship": DecisionForm, "kill": DecisionForm}
    list_display = ("name", "slug", "status_badge", "owner", "primary_metric", "updated_at")
    list_filter = ("status", "owner")
    list_select_related = ("owner",)
    search_fields = ("name", "slug", "hypothesis", "owner__username")
    inlines = [ExperimentMetricInline, VariantInline]
    actions = ["refresh_results"]
    readonly_fields = (
        "status_badge",
        "created_at",
        "updated_at",
        "started_at",
        "ended_at",
        "decision_summary",
        "power_plan_summary",
    )

    class Media:
        css = {"all": ("experiments/admin.css",)}

    @admin.action(description="Refresh results (warehouse experiments; a background task)")
    def refresh_results(self, request, queryset):
        from readouts.sources.refresh import snapshot_request  # readouts depends on experiments, not back

        if not request.user.has_perm("readouts.refresh_readout"):
            self.message_user(request, "Refreshing results needs the readouts.refresh_readout permission.", "error")
            return
        queued = [e.slug for e in queryset if e.data_source_id is not None]
        for experiment in queryset.filter(data_source__isnull=False):
            snapshot_request(experiment=experiment, triggered_by=request.user.get_username())
        self.message_user(request, f"Refresh queued for: {', '.join(queued) or 'none (no warehouse experiments)'}.")

    # --- display ------------------------------------------------------------------------------
    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: Experiment) -> str:
        return _badge(obj.status, obj.get_status_display())

    @admin.display(description="Audit history (newest first)")
    def audit_history(self, obj: Experiment) -> str:
        entries = AuditLog.objects.filter(experiment=obj).select_related("actor").order_by("-at", "-id")
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{} → {}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    e.at.strftime("%Y-%m-%d %H:%M"),
                    transition_label(e.transition),
                    e.from_state or "—",
                    e.to_state or "—",
                    e.actor.get_username() if e.actor else "system",
                    e.comment,
                )
                for e in entries
            ),
        )
        history_url = reverse("experiments:experiment_history", args=[obj.slug])
        return format_html(
            '<table class="sd-audit"><thead><tr><th>When (UTC)</th><th>Step</th><th>From → to</th><th>By</th>'
            '<th>Comment</th></tr></thead><tbody>{}</tbody></table><p><a href="{}">Timeline page</a></p>',
            rows,
            history_url,
        )

    @admin.display(description="Power plan")
    def power_plan_summary(self, obj: Experiment | None) -> str:
        if obj is None or obj.pk is None:
            return "Save the draft to see the power plan."
        from readouts.selectors import power_plan_get  # readouts depends on experiments, not back

        return power_plan_get(experiment=obj).sentence

    @admin.display(description="Decision")
    def decision_summary(self, obj: Experiment) -> str:
        decision = Decision.objects.filter(experiment=obj).select_related("decided_by", "shipped_variant").first()
        if decision is None:
            return "—"
        return format_html(
            "{} {} by {} on {}<br>{}{}<details><summary>Readout at decision time</summary>{}</details>",
            _badge(decision.outcome, decision.get_outcome_display()),
            decision.shipped_variant.key if decision.shipped_variant else "",
            decision.decided_by.get_username(),
            decision.decided_at.strftime("%Y-%m-%d %H:%M"),
            decision.rationale,
            _override_html(decision),
            _snapshot_html(decision.readout_snapshot),
        )

    # --- form layout ----------------------------------------------------------------------------
    def get_fieldsets(self, request, obj=None):
        plan = (None, {"fields": PLAN_FIELDS})
        power = ("Analysis and power plan", {"fields": (*POWER_FIELDS, "power_plan_summary")})
        assignment = ("Assignment: targeting, coverage, layer, holdout", {"fields": ASSIGNMENT_PLAN_FIELDS})
        if obj is None:
            return [plan, power, assignment]
        return [
            plan,
            power,
            assignment,
            ("Workflow", {"fields": ("status_badge", "started_at", "ended_at", "created_at", "updated_at")}),
            ("Decision and audit history", {"fields": ("decision_summary", "audit_history")}),
        ]

    def get_readonly_fields(self, request, obj=None):
        fields = [*super().get_readonly_fields(request, obj), "audit_history"]
        if obj is not None and not obj.is_plan_editable:
            fields += (*PLAN_FIELDS, *POWER_FIELDS, *ASSIGNMENT_PLAN_FIELDS)
        return tuple(fields)

    def get_prepopulated_fields(self, request, obj=None):
        return {"slug": ("name",)} if obj is None or obj.is_plan_editable else {}

    def get_changeform_initial_data(self, request):
        return {"owner": request.user.pk, **super().get_changeform_initial_data(request)}

    def has_delete_permission(self, request, obj=None):
        return False  # experiments are part of the record; kill them instead

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, object_id)
        if obj is not None:
            extra_context = {**(extra_context or {}), **_workflow_context(request, obj)}
        if obj is not None and not obj.is_plan_editable:
            # Nothing to save once the plan is frozen: only the workflow buttons remain.
            extra_context = {
                **(extra_context or {}),
                "show_save": False,
                "show_save_and_continue": False,
                "show_save_and_add_another": False,
            }
        return super().change_view(request, object_id, form_url, extra_context)

    # --- writes go through services -----------------------------------------------------------
    def save_model(self, request, obj, form, change):
        if obj.pk is None or obj.is_plan_editable:
            services.experiment_save_plan(experiment=obj, actor=request.user)

    def save_formset(self, request, form, formset, change):
        if formset.model not in (Variant, ExperimentMetric):
            return super().save_formset(request, form, formset, change)
        if formset.model is ExperimentMetric:
            return self._save_metric_formset(request, formset)
        instances = formset.save(commit=False)
        for variant in formset.deleted_objects:
            services.variant_delete(variant=variant, actor=request.user)
        # Un-set a control before setting the new one (one control per experiment, in the DB).
        for variant in sorted(instances, key=lambda v: v.is_control):
            services.variant_save(variant=variant, actor=request.user)
        formset.save_m2m()

    def _save_metric_formset(self, request, formset):
        instances = formset.save(commit=False)
        for metric in formset.deleted_objects:
            services.experiment_metric_delete(metric=metric, actor=request.user)
        # Demote a primary before promoting the new one (one primary per experiment, in the DB).
        for metric in sorted(instances, key=lambda m: m.role == ExperimentMetric.Role.PRIMARY):
            services.experiment_metric_save(metric=metric, actor=request.user)
        formset.save_m2m()

    # --- transitions: django-fsm-2's admin buttons and forms, executed by our services -----------
    def response_change(self, request, obj):
        name = request.POST.get(self.fsm_post_param)
        if name and name not in services.TRANSITION_SERVICES:
            raise Http404("Unknown transition")
        return super().response_change(request, obj)

    def fsm_transition_view(self, request, object_id, transition_name, **kwargs):
        if transition_name not in services.TRANSITION_SERVICES:
            raise Http404("Unknown transition")
        obj = self.get_object(request, object_id)
        if obj is not None:
            transition = self._get_fsm_transition_by_name(obj=obj, transition_name=transition_name)
            if not transition.has_perm(obj, user=request.user):
                raise PermissionDenied(f"You may not {transition_name.replace('_', ' ')} this experiment.")
            if transition_name == "ship":
                return self._ship_view(request, obj)
        return super().fsm_transition_view(request, object_id, transition_name, **kwargs)

    def _ship_view(self, request, obj: Experiment):
        """The ship form: the blocking problems per treatment, checks, scorecard, then rationale and override.

        A blocked ship answers 409 with the problems (nothing changes)."""
        from readouts.governance import ship_assessment_get  # readouts depends on experiments, not back

        assessment = ship_assessment_get(experiment=obj) if obj.status == Experiment.Status.READOUT else None
        if assessment is not None:
            treatments = list(assessment.problems)
        else:
            treatments = [v.key for v in obj.variants.all() if not v.is_control]
        form = ShipForm(request.POST if request.method == "POST" else None, treatments=treatments)
        blocked, status = None, 200
        if request.method == "POST" and form.is_valid():
            try:
                services.experiment_ship(experiment=obj, actor=request.user, **form.cleaned_data)
            except services.WorkflowError as exc:
                self.message_user(request, str(exc), level=messages.ERROR)
                if exc.code == "ship_blocked":
                    blocked, status = exc, 409
            else:
                self.message_user(request, f"Shipped: “{obj}” is now {obj.get_status_display().lower()}.")
                return redirect(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", object_id=obj.pk)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": obj,
            "transition_form": form,
            "assessment": assessment,
            "blocked": blocked,
        }
        return render(request, "experiments/admin_ship_form.html", context, status=status)

    def _apply_fsm_transition(self, *, obj, transition_name, request, kwargs=None) -> bool:
        """Replaces django-fsm-2's call-the-method-and-save with our service (audit + decision)."""
        service = services.TRANSITION_SERVICES[transition_name]
        try:
            service(experiment=obj, actor=request.user, **(kwargs or {}))
        except services.WorkflowError as exc:
            self.message_user(request, str(exc), level=messages.ERROR)
            return False
        self.message_user(
            request, f"{transition_label(transition_name)}: “{obj}” is now {obj.get_status_display().lower()}."
        )
        return True


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("at", "experiment", "transition", "from_state", "to_state", "actor", "comment")
    list_filter = ("transition",)
    list_select_related = ("experiment", "actor")
    search_fields = ("experiment__slug", "experiment__name", "actor__username", "comment")
    date_hierarchy = "at"
    ordering = ("-at", "-id")


def _snapshot_html(snapshot: dict) -> str:
    """The decision's frozen readout as tables (not JSON)."""
    if not snapshot:
        return "—"
    return render_to_string("experiments/_snapshot_table.html", {"snapshot": snapshot})


def _workflow_context(request, obj: Experiment) -> dict:
    """Links to the experiment's other pages, the reviewer's changes-requested banner, what blocks submitting."""
    links = [("Timeline", reverse("experiments:experiment_history", args=[obj.slug]))]
    if obj.status != Experiment.Status.DRAFT:
        links.insert(0, ("Readout", reverse("readouts:page", args=[obj.slug])))
    if obj.status in (Experiment.Status.DRAFT, Experiment.Status.REVIEW):
        links.append(("Review page", reverse("experiments:review_detail", args=[obj.slug])))
    context: dict = {"sd_links": links}
    if obj.status == Experiment.Status.DRAFT:
        last = AuditLog.objects.filter(experiment=obj).select_related("actor").order_by("-at", "-id").first()
        if last is not None and last.transition == "request_changes":
            context["sd_changes_requested"] = last
        if request.user.has_perm(PERM_SUBMIT) and (problems := obj.plan_problems()):
            context["sd_submit_problems"] = problems
    return context


def _override_html(decision: Decision) -> str:
    if not decision.override_reason:
        return ""
    problems = (decision.readout_snapshot.get("decision") or {}).get("override", {}).get("problems", [])
    return format_html(
        '<p class="sd-override"><strong>OVERRIDE</strong> of {}: {}</p>',
        ", ".join(problems) or "blocking problems",
        decision.override_reason,
    )


@admin.register(Decision)
class DecisionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("experiment", "outcome", "shipped_variant", "overridden", "decided_by", "decided_at")
    list_filter = ("outcome",)
    list_select_related = ("experiment", "decided_by", "shipped_variant")
    search_fields = ("experiment__slug", "experiment__name", "rationale", "override_reason")
    readonly_fields = ("override", "snapshot")
    exclude = ("readout_snapshot",)

    @admin.display(description="Override", boolean=True)
    def overridden(self, obj: Decision) -> bool:
        return bool(obj.override_reason)

    @admin.display(description="Override (shipped despite blocking problems)")
    def override(self, obj: Decision) -> str:
        return _override_html(obj) or "—"

    @admin.display(description="Readout snapshot")
    def snapshot(self, obj: Decision) -> str:
        return _snapshot_html(obj.readout_snapshot)


# --- the metric catalog ------------------------------------------------------------------------------
@admin.register(Metric)
class MetricAdmin(admin.ModelAdmin):
    """Ops create and edit catalog metrics; ``official`` (and official metrics) need ``certify_metric``.

    Saving goes through ``catalog.metric_save`` (validated, audited). Editing a metric that running
    experiments use is allowed, with a warning: their readouts keep the definition they were approved with.
    """

    list_display = ("key", "name", "kind", "official", "archived", "owner", "updated_at")
    list_filter = ("kind", "official", "archived", "owner")
    list_select_related = ("owner",)
    search_fields = ("key", "name", "description")
    autocomplete_fields = ("numerator", "denominator")
    readonly_fields = ("used_by",)
    fieldsets = (
        (None, {"fields": ("key", "name", "description", "owner", "kind", "direction", "official", "archived")}),
        ("Events and rules", {"fields": ("event", "aggregation", "window_hours", "delay_hours", "filter_prop",
                                         "filter_values")}),
        ("Outlier capping (mean)", {"fields": ("cap", "cap_value", "cap_ignore_zeros")}),
        ("Ratio and funnel", {"fields": ("numerator", "denominator", "steps")}),
        ("Usage", {"fields": ("used_by",)}),
    )  # fmt: skip

    def get_search_results(self, request, queryset, search_term):
        """The plan inline's picker (autocomplete) never offers archived metrics."""
        queryset, distinct = super().get_search_results(request, queryset, search_term)
        if request.GET.get("model_name") in ("experimentmetric", "metric"):
            queryset = queryset.filter(archived=False)
        return queryset, distinct

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if not request.user.has_perm(PERM_CERTIFY_METRIC):
            fields.append("official")
        return fields

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.official and not request.user.has_perm(PERM_CERTIFY_METRIC):
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False  # experiments and the audit trail refer to metrics: archive instead

    @admin.display(description="Used by")
    def used_by(self, obj: Metric) -> str:
        slugs = catalog.metric_used_by(metric=obj) if obj.pk else []
        return ", ".join(slugs) or "—"

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, object_id)
        if obj is not None and request.method == "GET":
            running = catalog.metric_running_experiments(metric=obj)
            if running:
                messages.warning(request, catalog.metric_running_warning(running))
        return super().change_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change):
        running = catalog.metric_running_experiments(metric=obj) if change else []
        catalog.metric_save(metric=obj, actor=request.user, source="admin")
        if running:
            messages.warning(request, catalog.metric_running_warning(running))


@admin.register(MetricChange)
class MetricChangeAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("metric", "action", "source", "actor", "at")
    list_filter = ("action", "source")
    list_select_related = ("metric", "actor")
    search_fields = ("metric__key",)


@admin.register(Layer)
class LayerAdmin(admin.ModelAdmin):
    """Layers of mutually exclusive experiments, each with a picture of the ranges its experiments claim."""

    list_display = ("key", "name", "experiment_count", "ranges")
    search_fields = ("key", "name")
    readonly_fields = ("salt", "ranges", "created_at")
    fields = ("key", "name", "salt", "ranges", "created_at")

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("experiments")

    @admin.display(description="Experiments")
    def experiment_count(self, obj: Layer) -> int:
        return len(obj.experiments.all())

    @admin.display(description="Ranges (running first)")
    def ranges(self, obj: Layer) -> str:
        if obj.pk is None:
            return "Save the layer, then give experiments a range of it."
        return layer_ranges_svg(obj, list(obj.experiments.all()))

    def get_readonly_fields(self, request, obj=None):
        return (*self.readonly_fields, "key") if obj is not None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        services.layer_save(layer=obj, actor=request.user)

    def has_delete_permission(self, request, obj=None):
        return False  # experiments keep their layer (PROTECT); a layer is part of their record


class _SuperuserOnlyMixin:
    """Webhooks hold secrets and reach outside: superusers only, whatever the model permissions say."""

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    def has_add_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser


class WebhookAdminForm(forms.ModelForm):
    """The secret is write-only: never rendered back; left blank on change it keeps the stored one."""

    url = forms.URLField(max_length=500, assume_scheme="https")
    secret = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        required=False,
        help_text="Write-only. Leave blank to keep the current secret.",
    )
    events = forms.MultipleChoiceField(
        choices=NotificationEvent.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked = every event.",
    )

    class Meta:
        model = Webhook
        fields = ["name", "url", "format", "events", "secret", "active"]

    def clean_secret(self):
        secret = self.cleaned_data.get("secret") or ""
        if not secret:
            if self.instance.pk and self.instance.secret:
                return self.instance.secret
            raise forms.ValidationError("A secret is required.")
        return secret


class WebhookAttemptInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = WebhookAttempt
    fields = ["number", "status_code", "error", "duration_ms", "at"]
    readonly_fields = fields
    extra = 0


@admin.register(Webhook)
class WebhookAdmin(_SuperuserOnlyMixin, admin.ModelAdmin):
    form = WebhookAdminForm
    list_display = ["name", "url", "format", "active"]
    list_filter = ["active", "format"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(_SuperuserOnlyMixin, admin.ModelAdmin):
    list_display = ["id", "webhook", "event", "status", "attempts", "last_status", "last_error", "delivered_at"]
    list_filter = ["status", "event"]
    list_select_related = ["webhook"]
    readonly_fields = [
        "webhook",
        "event",
        "occasion",
        "payload",
        "status",
        "attempts",
        "last_status",
        "last_error",
        "created_at",
        "delivered_at",
        "next_attempt_at",
    ]
    inlines = [WebhookAttemptInline]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(EmailNotification)
class EmailNotificationAdmin(_SuperuserOnlyMixin, admin.ModelAdmin):
    list_display = ["id", "experiment", "event", "status", "attempts", "last_error", "sent_at"]
    list_filter = ["status", "event"]
    list_select_related = ["experiment"]
    readonly_fields = [
        "experiment", "event", "occasion", "recipients", "subject", "body", "status", "attempts", "last_error",
        "created_at", "sent_at", "next_attempt_at",
    ]  # fmt: skip

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False
