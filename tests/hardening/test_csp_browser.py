"""The Content-Security-Policy in a real browser: every page, the admin and the Swagger UI load without a
single violation (the `page` fixture fails any browser test on a violation), and a violation is caught.
"""

from __future__ import annotations

import pytest

from tests.experiments import conftest as workflow

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
# The workflow fixtures (users in each role, experiments driven through the services).
approver, make_experiment, ops, workflow_groups = (
    workflow.approver,
    workflow.make_experiment,
    workflow.ops,
    workflow.workflow_groups,
)


def test_pages_admin_and_api_docs__superuser__no_csp_violation(make_user, make_experiment, login, live_server):
    # Given a shipped experiment and a superuser logged in through the real form
    experiment = make_experiment("csp-browser", status="shipped")
    make_user("root", is_superuser=True)
    page = login("root")
    base = live_server.url
    # When they open the product pages, the admin (list, change and add forms) and the API docs
    for path in [
        "/",
        "/review/",
        f"/review/{experiment.slug}/",
        f"/experiments/{experiment.slug}/history",
        f"/experiments/{experiment.slug}/readout",
        "/admin/",
        "/admin/experiments/experiment/",
        f"/admin/experiments/experiment/{experiment.pk}/change/",
        "/admin/experiments/experiment/add/",
        "/admin/auth/user/add/",
    ]:
        response = page.goto(base + path)
        assert response.status == 200, path
        page.wait_for_load_state("networkidle")
    page.goto(base + "/api/docs/")
    # Then the Swagger UI renders the operations (its scripts ran under the policy) ...
    page.wait_for_function("() => document.querySelectorAll('.opblock').length >= 4")
    assert "/api/track/batch" in page.inner_text(".swagger-ui").replace("\u200b", "")
    # ... and the fixture finds no violation at teardown
    assert page.csp_violations == []


def test_csp_violation__inline_script_injected__reported_to_the_test(make_user, login, live_server):
    # Given a logged-in page
    make_user("viewer", groups=("reviewer",))
    page = login("viewer")
    # When something injects an inline script and an inline style attribute
    page.evaluate(
        """() => {
        const s = document.createElement("script"); s.textContent = "window.pwned = 1"; document.body.append(s);
        document.body.setAttribute("style", "color: red");
    }"""
    )
    # Then the browser blocked it and the fixture saw the violations
    assert page.evaluate("() => window.pwned") is None
    for _ in range(50):  # console events arrive asynchronously: poll, bounded
        if page.csp_violations:
            break
        page.wait_for_timeout(100)
    assert any("script-src" in v for v in page.csp_violations), page.csp_violations
    page.csp_violations.clear()  # provoked on purpose: do not fail at teardown
