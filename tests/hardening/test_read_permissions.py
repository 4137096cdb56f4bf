"""Reading experiments and readouts needs `experiments.view_experiment`; a user in no group gets 403.

Regression for issue 11: a logged-in user in no group got 200 on every experiment, readout, CSV, bundle and
the readout API, and could trigger (paid) narrative generation.
"""

from __future__ import annotations

import pytest

from tests.experiments import conftest as workflow

pytestmark = pytest.mark.django_db
# The workflow fixtures (users in each role, experiments driven through the services).
approver, make_experiment, ops, workflow_groups = (
    workflow.approver,
    workflow.make_experiment,
    workflow.ops,
    workflow.workflow_groups,
)

READ_URLS = [
    "/",
    "/experiments/{slug}/history",
    "/experiments/{slug}/decision-bundle.zip",
    "/experiments/{slug}/readout",
    "/experiments/{slug}/readout.csv",
    "/experiments/{slug}/readout-bundle.zip",
    "/experiments/{slug}/readout/narrative",
    "/api/experiments/{slug}/readout",
]


@pytest.fixture
def shipped(make_experiment):
    return make_experiment("perm-exp", status="shipped")


@pytest.mark.parametrize("url", READ_URLS)
def test_read__user_in_no_group__403(client, make_user, shipped, url):
    # Given a logged-in user with no role
    client.force_login(make_user("nobody"))
    # When they open an experiment or readout URL
    response = client.get(url.format(slug=shipped.slug))
    # Then they are refused
    assert response.status_code == 403


@pytest.mark.parametrize("group", ["ops", "reviewer"])
@pytest.mark.parametrize("url", READ_URLS)
def test_read__ops_or_reviewer__200(client, make_user, shipped, url, group):
    client.force_login(make_user(f"member-{group}", groups=(group,)))
    response = client.get(url.format(slug=shipped.slug))
    assert response.status_code == 200


def test_narrative_generate__user_in_no_group__403_and_nothing_generated(client, make_user, shipped, monkeypatch):
    # Given a user with no role, and a provider call we can observe
    calls = []
    monkeypatch.setattr("readouts.views.narrative_generate", lambda **kw: calls.append(kw))
    client.force_login(make_user("nobody"))
    # When they POST to generate or regenerate the narrative
    generate = client.post(f"/experiments/{shipped.slug}/readout/narrative")
    regenerate = client.post(f"/experiments/{shipped.slug}/readout/narrative/regenerate")
    # Then both are refused and nothing was generated
    assert (generate.status_code, regenerate.status_code) == (403, 403)
    assert calls == []


@pytest.mark.parametrize(
    "url",
    [
        "/experiments/{slug}/readout",
        "/experiments/{slug}/readout.csv",
        "/experiments/{slug}/readout-bundle.zip",
        "/api/experiments/{slug}/readout",
        "/experiments/{slug}/decision-bundle.zip",
    ],
)
def test_readout_responses__cache_control__private_no_store(client, make_user, shipped, url):
    client.force_login(make_user("reader", groups=("reviewer",)))
    response = client.get(url.format(slug=shipped.slug))
    assert response.status_code == 200
    directives = {d.strip() for d in response["Cache-Control"].split(",")}
    assert {"private", "no-store"} <= directives
