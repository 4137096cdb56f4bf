"""The `ops` and `reviewer` groups come from a data migration with exactly the workflow permissions."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

pytestmark = pytest.mark.django_db


def _codenames(group_name: str) -> set[str]:
    group = Group.objects.get(name=group_name)
    return set(group.permissions.filter(content_type__app_label="experiments").values_list("codename", flat=True))


def test_groups__after_migrate__ops_can_run_the_experiment_but_not_approve():
    perms = _codenames("ops")
    assert {"add_experiment", "change_experiment", "submit_experiment", "end_experiment"} <= perms
    assert {"ship_experiment", "kill_experiment", "add_variant", "change_variant", "delete_variant"} <= perms
    assert not perms & {"approve_experiment", "request_changes_experiment", "delete_experiment"}


def test_groups__after_migrate__reviewer_reviews_but_cannot_edit_or_decide():
    perms = _codenames("reviewer")
    assert {"approve_experiment", "request_changes_experiment", "view_experiment"} <= perms
    assert not perms & {"change_experiment", "submit_experiment", "end_experiment", "ship_experiment"}


def test_user_in_ops__has_perm__workflow_permissions_resolve(make_user):
    # Given a user in the ops group, When permissions are checked by their full names, Then they resolve
    user = make_user("o", groups=("ops",), is_staff=True)
    assert user.has_perm("experiments.submit_experiment")
    assert not user.has_perm("experiments.approve_experiment")
