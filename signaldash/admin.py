"""Admin building blocks shared by the apps, and the admin site's branding.

Imported by every app's admin module (after ``rest_framework_api_key``'s, which comes first in INSTALLED_APPS).
"""

from __future__ import annotations

from django.contrib import admin

admin.site.site_header = "Signal Dash"
admin.site.site_title = "Signal Dash admin"
admin.site.index_title = "Ops workspace"
admin.site.site_url = "/"


def api_key_admin_single_screen() -> None:
    """One API-key screen: the library's own APIKey model is unused (keys made there get 401), so hide it;
    service keys live under Tracking → Service API keys."""
    from rest_framework_api_key.models import APIKey

    if admin.site.is_registered(APIKey):
        admin.site.unregister(APIKey)


api_key_admin_single_screen()


class ReadOnlyAdminMixin:
    """For records that only services may write (audit log, decisions, events, assignments):
    visible in the admin, but never added, changed or deleted there."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
