from django.contrib import admin

from readouts.models import Narrative


@admin.register(Narrative)
class NarrativeAdmin(admin.ModelAdmin):
    list_display = ("experiment", "metric", "source", "model", "prompt_version", "created_at")
    list_filter = ("source",)
    readonly_fields = [f.name for f in Narrative._meta.fields]

    def has_add_permission(self, request):
        return False
