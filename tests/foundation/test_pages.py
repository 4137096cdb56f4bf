"""Cross-cutting page behaviour: login everywhere, static files served without a CDN."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_static_css__anonymous__served_by_the_app(client):
    response = client.get("/static/signaldash/app.css")
    assert response.status_code == 200
    assert b".badge" in b"".join(response.streaming_content)


@pytest.mark.parametrize("url", ["/", "/review/", "/experiments/any/readout", "/experiments/any/history"])
def test_pages__anonymous__redirect_to_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_home__logged_in__lists_experiments_escaped(client, make_user):
    from experiments.models import Experiment

    user = make_user("viewer", groups=("reviewer",))
    Experiment.objects.create(name="<script>alert(1)</script>", slug="xss", owner=user)
    client.force_login(user)
    body = client.get("/").content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<script>alert(1)</script>" not in body


def test_forbidden_action__user_without_permission__403_page_explains(client, make_user):
    from experiments.models import Experiment

    # Given an experiment in review and a logged-in user with no role
    owner = make_user("owner-403")
    Experiment.objects.create(name="Plan", slug="plan-403", owner=owner)
    client.force_login(make_user("nobody"))
    # When they open the review page
    response = client.get("/review/plan-403/")
    # Then they get a 403 page in the product's layout, not a silent no-op
    assert response.status_code == 403
    assert "permission" in response.content.decode()
    assert "Signal Dash" in response.content.decode()
