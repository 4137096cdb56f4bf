"""Security headers: a Content-Security-Policy without 'unsafe-inline' that every page satisfies,
Permissions-Policy everywhere, and no inline script or style left in any page we serve.

Regression for issue 11 ("no Content-Security-Policy anywhere"). The browser half (Chromium reporting
violations) is tests/hardening/test_csp_browser.py; every other browser test also fails on a violation.
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.contrib import admin
from django.urls import reverse

from tests.experiments import conftest as workflow

pytestmark = pytest.mark.django_db
# The workflow fixtures (users in each role, experiments driven through the services).
approver, make_experiment, ops, workflow_groups = (
    workflow.approver,
    workflow.make_experiment,
    workflow.ops,
    workflow.workflow_groups,
)


class _InlineCode(HTMLParser):
    """Collects what a CSP without 'unsafe-inline' blocks: inline <script>, <style>, style= and on*= attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        names = {name for name, _ in attrs}
        if tag == "script":
            self._in_script = "src" not in names
        if tag == "style":
            self.found.append("<style>")
        if "style" in names:
            self.found.append(f"<{tag} style=...>")
        self.found.extend(f"<{tag} {name}=...>" for name in names if name.startswith("on"))
        if any(name == "href" and (value or "").strip().lower().startswith("javascript:") for name, value in attrs):
            self.found.append(f"<{tag} href=javascript:...>")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.found.append(f"inline <script>: {data.strip()[:60]}")


def inline_code(html: str) -> list[str]:
    parser = _InlineCode()
    parser.feed(html)
    return parser.found


@pytest.fixture
def shipped(make_experiment):
    return make_experiment("csp-exp", status="shipped")


def _html_pages(experiment) -> list[str]:
    slug = experiment.slug
    pages = [
        "/",
        "/review/",
        f"/review/{slug}/",
        f"/experiments/{slug}/history",
        f"/experiments/{slug}/readout",
        "/api/docs/",
        "/admin/",
        f"/admin/experiments/experiment/{experiment.pk}/change/",
    ]
    for model in admin.site._registry:
        opts = model._meta
        pages.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        pages.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_add"))
    return pages


def test_every_page__admin_user__csp_header_without_unsafe_inline_and_no_inline_code(client, make_user, shipped):
    # Given a superuser (sees every page, admin included)
    client.force_login(make_user("root", is_superuser=True))
    problems = {}
    for url in _html_pages(shipped):
        # When each page is rendered
        response = client.get(url)
        # Then it carries the policy and contains nothing the policy would block
        if response.status_code == 403:  # e.g. an add page for a read-only model
            continue
        assert response.status_code == 200, url
        assert "'unsafe-inline'" not in response["Content-Security-Policy"]
        assert "script-src 'self'" in response["Content-Security-Policy"]
        found = inline_code(response.content.decode())
        if found:
            problems[url] = found
    assert problems == {}


def test_login_page__anonymous__csp_and_permissions_policy(client):
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert response["Content-Security-Policy"].startswith("default-src 'self'")
    assert inline_code(response.content.decode()) == []
    policy = response["Permissions-Policy"]
    for feature in ("camera=()", "microphone=()", "geolocation=()"):
        assert feature in policy


@pytest.mark.parametrize("url", ["/healthz", "/api/track", "/static/signaldash/app.css"])
def test_non_html_responses__any__same_headers(client, url):
    response = client.get(url)
    assert "'unsafe-inline'" not in response["Content-Security-Policy"]
    assert "camera=()" in response["Permissions-Policy"]


def test_inline_code_detector__inline_script_style_and_handlers__all_reported():
    html = (
        '<script>alert(1)</script><script src="/x.js"></script><style>p{}</style>'
        '<p style="color:red" onclick="x()">t</p><a href="javascript:x()">a</a>'
    )
    assert len(inline_code(html)) == 5


def test_swagger_ui_init_script__separate_request__javascript(client, make_user):
    # The docs page's init script comes from ?script= (drf-spectacular's split view), not inline.
    client.force_login(make_user("docs-reader"))
    html = client.get("/api/docs/").content.decode()
    assert 'src="/api/docs/?script="' in html
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200 and script["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle" in script.content.decode()
