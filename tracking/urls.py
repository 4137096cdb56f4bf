"""Tracking, assignment and API documentation URLs (full paths; included at the root).

API views answer 401 JSON themselves, so they opt out of LoginRequiredMiddleware's login redirect.
"""

from django.contrib.auth.decorators import login_not_required, login_required
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from tracking import api

app_name = "tracking"
urlpatterns = [
    path("api/track", login_not_required(api.TrackApi.as_view()), name="track"),
    path("api/track/batch", login_not_required(api.TrackBatchApi.as_view()), name="track-batch"),
    path("api/assign", login_not_required(api.AssignApi.as_view()), name="assign"),
    path("api/assign/all", login_not_required(api.AssignAllApi.as_view()), name="assign-all"),
    path("api/assign/rules", login_not_required(api.AssignRulesApi.as_view()), name="assign-rules"),
    path("api/schema/", login_not_required(SpectacularAPIView.as_view()), name="schema"),
    # The docs page is a page like any other: anonymous browsers are sent to the login page. The split view
    # serves its init script as a separate request (?script=), so the Content-Security-Policy needs no inline code.
    path(
        "api/docs/",
        login_required(
            SpectacularSwaggerSplitView.as_view(url_name="tracking:schema", template_name="signaldash/swagger_ui.html")
        ),
        name="docs",
    ),
]
