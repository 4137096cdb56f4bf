from django.contrib import admin

from experiments.models import AuditLog, Decision, Experiment, Variant


class VariantInline(admin.TabularInline):
    model = Variant
    extra = 0
    min_num = 2
    fields = ("key", "name", "is_control", "weight")


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "status", "owner", "primary_metric", "updated_at")
    list_filter = ("status", "owner")
    search_fields = ("name", "slug", "hypothesis")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("status", "created_at", "updated_at", "started_at", "ended_at")
    inlines = [VariantInline]


@admin.register(AuditLog)
class AuditLogAdmin(admin.ModelAdmin):
    list_display = ("at", "experiment", "transition", "from_state", "to_state", "actor")
    list_filter = ("transition",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Decision)
class DecisionAdmin(admin.ModelAdmin):
    list_display = ("experiment", "outcome", "decided_by", "decided_at")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
