from django.contrib import admin
from rest_framework_api_key.admin import APIKeyModelAdmin

from signaldash.admin import ReadOnlyAdminMixin
from tracking.models import Assignment, Event, ServiceAPIKey, VariantConflict


@admin.register(ServiceAPIKey)
class ServiceAPIKeyAdmin(APIKeyModelAdmin):
    list_display = (*APIKeyModelAdmin.list_display, "scopes")
    list_filter = (*APIKeyModelAdmin.list_filter, "scopes")


@admin.register(Assignment)
class AssignmentAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Assignments are fixed by the tracking services (first exposure or hash); editing one would
    silently move a user between variants, so the admin only shows them."""

    list_display = ("experiment", "user_key", "variant", "source", "assigned_at")
    list_filter = ("source",)
    search_fields = ("user_key", "experiment__slug")
    list_select_related = ("experiment", "variant")
    raw_id_fields = ("experiment", "variant")


@admin.register(Event)
class EventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Events are facts recorded by the tracking services; editing or deleting one would silently
    change readouts (and the evidence behind decisions), so the admin only shows them."""

    list_display = ("experiment", "event_type", "metric", "user_key", "variant", "occurred_at", "received_at")
    list_filter = ("event_type",)
    search_fields = ("user_key", "experiment__slug")
    list_select_related = ("experiment", "variant")
    raw_id_fields = ("experiment", "variant")
    show_full_result_count = False


@admin.register(VariantConflict)
class VariantConflictAdmin(admin.ModelAdmin):
    """Read-only: rejected events whose variant differed from the user's assignment (data quality)."""

    list_display = (
        "experiment",
        "user_key",
        "event_type",
        "metric",
        "assigned_variant",
        "reported_variant",
        "received_at",
    )
    list_filter = ("event_type",)
    search_fields = ("user_key", "experiment__slug")
    list_select_related = ("experiment", "assigned_variant", "reported_variant")
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
