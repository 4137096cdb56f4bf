"""Who may read experiments and readouts: one Django permission for people, one scope for API keys.

People need `experiments.view_experiment` (the `ops` and `reviewer` groups have it, superusers have every
permission); a logged-in user in no group gets 403. Anonymous browsers never get this far: the
LoginRequiredMiddleware sends them to the login page first. API keys read readouts only with the
`read` scope (see `tracking.models.ServiceAPIKey.scopes`).
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth.decorators import permission_required
from django.views.decorators.cache import cache_control
from rest_framework.permissions import BasePermission

VIEW_EXPERIMENT = "experiments.view_experiment"
SCOPE_READ = "read"
SCOPE_TRACK = "track"


def experiment_read_required(view: Callable) -> Callable:
    """Function views: 403 (the product's 403 page) without `experiments.view_experiment`."""
    return permission_required(VIEW_EXPERIMENT, raise_exception=True)(view)


# Readouts and their exports are confidential business numbers: never kept by shared caches (proxies, CDNs),
# and not written to the browser's disk cache either.
private_no_store = cache_control(private=True, no_store=True)


def api_key_has_scope(api_key, scope: str) -> bool:
    """True when the API key (a `tracking.models.ServiceAPIKey`) carries `scope`."""
    return scope in api_key.scope_set


class CanReadExperiments(BasePermission):
    """DRF: a person with `experiments.view_experiment`, or an API key with the `read` scope."""

    message = "Reading experiments and readouts needs the view_experiment permission or an API key with the read scope."

    def has_permission(self, request, view) -> bool:
        from tracking.models import ServiceAPIKey

        if isinstance(request.auth, ServiceAPIKey):
            return api_key_has_scope(request.auth, SCOPE_READ)
        return bool(request.user and request.user.is_authenticated and request.user.has_perm(VIEW_EXPERIMENT))


class CanTrack(BasePermission):
    """DRF: an API key with the `track` scope (tracking and assignment endpoints)."""

    message = "This API key does not have the track scope."

    def has_permission(self, request, view) -> bool:
        from tracking.models import ServiceAPIKey

        return isinstance(request.auth, ServiceAPIKey) and api_key_has_scope(request.auth, SCOPE_TRACK)
