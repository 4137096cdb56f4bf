from django.contrib import admin

from readouts.models import DataSource, Narrative, ReadoutSnapshot


@admin.register(Narrative)
class NarrativeAdmin(admin.ModelAdmin):
    list_display = ("experiment", "metric", "source", "model", "prompt_version", "created_at")
    list_filter = ("source",)
    readonly_fields = [f.name for f in Narrative._meta.fields]

    def has_add_permission(self, request):
        return False


class SuperuserOnlyAdmin(admin.ModelAdmin):
    """Only superusers see, create or edit these (a source decides what numbers a readout shows)."""

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    def has_add_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser


@admin.register(DataSource)
class DataSourceAdmin(SuperuserOnlyAdmin):
    list_display = ("key", "name", "engine", "url_env", "timeout_s", "updated_at")
    list_filter = ("engine",)
    search_fields = ("key", "name")
    actions = ["test_connection"]

    @admin.action(description="Test connection (both SELECTs with LIMIT 5)")
    def test_connection(self, request, queryset):
        from readouts.sources.refresh import source_test

        for source in queryset:
            result = source_test(source=source)
            self.message_user(request, f"{source.key}: {result.message}", "success" if result.ok else "error")


@admin.register(ReadoutSnapshot)
class ReadoutSnapshotAdmin(admin.ModelAdmin):
    list_display = ("experiment", "data_source", "status", "created_at", "finished_at", "triggered_by")
    list_filter = ("status", "data_source")
    list_select_related = ("experiment", "data_source")
    readonly_fields = [f.name for f in ReadoutSnapshot._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
