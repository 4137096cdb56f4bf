"""Permission matrix (issue 11): every URL of the URLconf × anonymous, a user in no group, ops, reviewer,
admin, a `track` API key and a `read` API key, with the expected status in each cell; and every HTML
POST without a CSRF token is refused with 403.

Browser pages answer API keys like anonymous visitors (a key authenticates only the API). A URL added to
the URLconf without a row here fails `test_matrix__covers_every_url_pattern`.
"""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from experiments.models import Metric
from tests.experiments import conftest as workflow
from tracking.models import ServiceAPIKey

pytestmark = pytest.mark.django_db

# The workflow fixtures (users in each role, experiments driven through the services).
approver, make_experiment, ops, workflow_groups = (
    workflow.approver,
    workflow.make_experiment,
    workflow.ops,
    workflow.workflow_groups,
)

ROLES = ("anonymous", "plain", "ops", "reviewer", "admin", "track_key", "read_key")
S = "matrix-exp"  # a shipped experiment with a decision (and its bundle)
PAGE = (302, 403, 200, 200, 200, 302, 302)  # experiment pages: login first, then view_experiment
READ_API = (401, 403, 200, 200, 200, 403, 200)  # readout API: view_experiment, or a read-scope key
TRACK_API = (401, 401, 401, 401, 401, 400, 403)  # tracking API: a track-scope key only (400: empty body)
OPEN = (200,) * 7

# (method, path, the URL pattern it exercises, expected status per role in ROLES order)
MATRIX = [
    ("GET", "/healthz", "healthz", OPEN),
    ("GET", "/accounts/login/", "accounts/login/", OPEN),
    ("GET", "/", "", PAGE),
    ("GET", "/review/", "review/", PAGE),
    ("GET", "/learnings/", "learnings/", PAGE),
    ("GET", f"/review/{S}/", "review/<slug:slug>/", PAGE),
    ("GET", f"/experiments/{S}/history", "experiments/<slug:slug>/history", PAGE),
    ("GET", f"/experiments/{S}/decision-bundle.zip", "experiments/<slug:slug>/decision-bundle.zip", PAGE),
    ("GET", f"/experiments/{S}/readout", "experiments/<slug:slug>/readout", PAGE),
    # the decision page: ops (ship/kill permission) only
    ("GET", f"/experiments/{S}/decide", "experiments/<slug:slug>/decide", (302, 403, 200, 403, 200, 302, 302)),
    ("GET", f"/experiments/{S}/readout.csv", "experiments/<slug:slug>/readout.csv", PAGE),
    ("GET", f"/experiments/{S}/readout-bundle.zip", "experiments/<slug:slug>/readout-bundle.zip", PAGE),
    ("GET", f"/experiments/{S}/readout/narrative", "experiments/<slug:slug>/readout/narrative", PAGE),
    ("GET", f"/api/experiments/{S}/readout", "api/experiments/<slug:slug>/readout", READ_API),
    ("GET", f"/api/experiments/{S}/readout/timeseries", "api/experiments/<slug:slug>/readout/timeseries", READ_API),
    ("GET", "/docs/metrics", "docs/metrics", (302, 200, 200, 200, 200, 302, 302)),  # documentation: login only
    ("GET", "/api/schema/", "api/schema/", (401, 200, 200, 200, 200, 200, 200)),
    ("GET", "/api/docs/", "api/docs/", (302, 200, 200, 200, 200, 302, 302)),
    ("POST", "/api/track", "api/track", TRACK_API),
    ("POST", "/api/track/batch", "api/track/batch", TRACK_API),
    ("POST", "/api/assign", "api/assign", TRACK_API),
    ("POST", "/api/assign/all", "api/assign/all", TRACK_API),
    ("GET", "/api/assign/rules", "api/assign/rules", (401, 401, 401, 401, 401, 200, 403)),
    # the metric catalog: pages for people who may view metrics, the API for those or a read-scope key
    ("GET", "/metrics/", "metrics/", PAGE),
    ("GET", "/metrics/matrix-metric/", "metrics/<str:key>/", PAGE),
    ("GET", "/api/metrics", "api/metrics", READ_API),
    ("GET", "/api/metrics/matrix-metric", "api/metrics/<str:key>", READ_API),
    # POST-only pages: GET is not allowed once logged in (405), anonymous visitors are sent to log in first.
    ("GET", f"/review/{S}/approve", "review/<slug:slug>/approve", (302, 405, 405, 405, 405, 302, 302)),
    ("GET", f"/review/{S}/request-changes", "review/<slug:slug>/request-changes", (302, 405, 405, 405, 405, 302, 302)),
    (
        "GET",
        f"/experiments/{S}/readout/narrative/regenerate",
        "experiments/<slug:slug>/readout/narrative/regenerate",
        (302, 405, 405, 405, 405, 302, 302),
    ),
    (
        "GET",
        f"/experiments/{S}/readout/refresh",
        "experiments/<slug:slug>/readout/refresh",
        (302, 405, 405, 405, 405, 302, 302),
    ),
    ("GET", "/accounts/logout/", "accounts/logout/", (302, 405, 405, 405, 405, 302, 302)),
    # The admin: staff only (others are sent to the admin login); ops see experiments but not API keys.
    ("GET", "/admin/", "admin/", (302, 302, 200, 302, 200, 302, 302)),
    ("GET", "/admin/experiments/experiment/", "admin/", (302, 302, 200, 302, 200, 302, 302)),
    ("GET", "/admin/tracking/serviceapikey/", "admin/", (302, 302, 403, 302, 200, 302, 302)),
    ("GET", "/admin/auth/user/", "admin/", (302, 302, 403, 302, 200, 302, 302)),
    ("GET", "/admin/experiments/webhook/", "admin/", (302, 302, 403, 302, 200, 302, 302)),
    ("GET", "/admin/experiments/webhookdelivery/", "admin/", (302, 302, 403, 302, 200, 302, 302)),
    ("GET", "/admin/experiments/emailnotification/", "admin/", (302, 302, 403, 302, 200, 302, 302)),
]


@pytest.fixture
def clients(make_experiment, make_user, ops):
    make_experiment(S, status="shipped")
    Metric.objects.create(key="matrix-metric", name="Matrix metric", kind="binary", event="matrix-metric")
    users = {
        "plain": make_user("plain"),
        "ops": ops,
        "reviewer": make_user("matrix-reviewer", groups=("reviewer",)),
        "admin": make_user("matrix-admin", is_superuser=True),
    }
    result = {"anonymous": Client()}
    for role, user in users.items():
        result[role] = Client()
        result[role].force_login(user)
    for role, scopes in (("track_key", "track"), ("read_key", "read")):
        _, key = ServiceAPIKey.objects.create_key(name=role, scopes=scopes)
        result[role] = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    return result


def _status(client: Client, method: str, path: str) -> int:
    if method == "POST":
        return client.post(path, data=b"{}", content_type="application/json").status_code
    return client.get(path).status_code


def test_matrix__every_url_and_role__expected_status(clients):
    # When every URL is requested as every role
    actual = {(m, p): tuple(_status(clients[r], m, p) for r in ROLES) for m, p, _, _ in MATRIX}
    # Then each cell has its expected status (compared whole, so one run shows every wrong cell)
    expected = {(m, p): cells for m, p, _, cells in MATRIX}
    assert actual == expected
    print(f"\npermission matrix: {len(MATRIX)} URLs x {len(ROLES)} roles = {len(MATRIX) * len(ROLES)} cells")


def _patterns(resolver: URLResolver, prefix: str = "") -> list[str]:
    found = []
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            route = prefix + str(entry.pattern)
            found.extend([route] if route == "admin/" else _patterns(entry, route))
        elif isinstance(entry, URLPattern):
            found.append(prefix + str(entry.pattern))
    return found


def test_matrix__covers_every_url_pattern():
    # The admin counts as one pattern (its own URLconf; represented by its index and model lists above).
    assert set(_patterns(get_resolver())) == {pattern for _, _, pattern, _ in MATRIX}


# --- CSRF: every HTML form POST without a token is refused ---------------------------------------------
HTML_POSTS = [
    ("anonymous", "/accounts/login/", {"username": "matrix-admin", "password": "pw-for-tests-1"}),
    ("admin", "/accounts/logout/", {}),
    ("reviewer", f"/review/{S}/approve", {}),
    ("reviewer", f"/review/{S}/request-changes", {"comment": "Please add a metric."}),
    ("reviewer", f"/experiments/{S}/readout/narrative", {}),
    ("admin", f"/experiments/{S}/readout/narrative/regenerate", {}),
    ("admin", f"/experiments/{S}/decide", {"action": "kill", "rationale": "Stop."}),
    ("admin", "/admin/experiments/experiment/add/", {"name": "x", "slug": "x"}),
    ("admin", "/admin/tracking/serviceapikey/add/", {"name": "x"}),
    ("admin", "/admin/logout/", {}),
]


@pytest.mark.parametrize(("role", "path", "data"), HTML_POSTS, ids=[p for _, p, _ in HTML_POSTS])
def test_html_post__no_csrf_token__403(clients, make_user, role, path, data):
    # Given the role's session in a client that enforces CSRF like a browser would
    client = Client(enforce_csrf_checks=True)
    if role != "anonymous":
        client.cookies = clients[role].cookies
    # When the form is posted without its token
    response = client.post(path, data)
    # Then it is refused
    assert response.status_code == 403
    assert b"CSRF" in response.content
