from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from signaldash import views
from signaldash.ratelimit.login import RateLimitedLoginView

handler404 = "signaldash.errors.page_not_found"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("accounts/login/", RateLimitedLoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    # Each app owns its full paths (see the app's urls.py).
    path("", include("experiments.urls")),
    path("", include("tracking.urls")),
    path("", include("readouts.urls")),
]
