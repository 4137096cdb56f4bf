"""Content-Security-Policy and Permissions-Policy on every response.

A small middleware rather than django-csp: the policy is one fixed string (no inline code anywhere, so no
nonces or per-view exceptions are needed), and Django 6.0 ships its own CSP middleware to move to later.
Every page, the Django admin and the Swagger UI (drf-spectacular's split view: its init script is a
separate request) load scripts and styles only from our own origin; SVG charts are markup, not styles.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

# No 'unsafe-inline' and no 'unsafe-eval' anywhere. `data:` images: the Swagger UI and admin stylesheets
# embed small SVG icons as data URIs.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
# Powerful browser features the product never uses; only features Chromium recognises (an unknown name is
# a console error in every browser test).
PERMISSIONS_POLICY = ", ".join(
    f"{feature}=()"
    for feature in (
        "accelerometer",
        "camera",
        "geolocation",
        "gyroscope",
        "magnetometer",
        "microphone",
        "payment",
        "usb",
    )
)


class SecurityHeadersMiddleware:
    """Adds the two headers unless a view set its own."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        return response
