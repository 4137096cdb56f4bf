"""Create the `ops` and `reviewer` groups with their permissions.

Permissions are normally created after all migrations (post_migrate), so the ones needed here are
get_or_create'd by (content type, codename) — the same key post_migrate uses, so nothing doubles.
Other apps add their own permissions to these groups in their own migrations (get_or_create the group).
"""

from django.db import migrations

MODEL_PERMS = {
    "experiment": "Experiment",
    "variant": "Variant",
    "auditlog": "Audit log",
    "decision": "Decision",
}
WORKFLOW_PERMS = {
    "submit_experiment": "Can submit an experiment for review",
    "request_changes_experiment": "Can send an experiment in review back to draft",
    "approve_experiment": "Can approve and start an experiment (never their own)",
    "end_experiment": "Can end a running experiment for readout",
    "ship_experiment": "Can ship an experiment after readout",
    "kill_experiment": "Can kill a running or read-out experiment",
}
GROUPS = {
    "ops": [
        "add_experiment", "change_experiment", "view_experiment",
        "add_variant", "change_variant", "delete_variant", "view_variant",
        "view_auditlog", "view_decision",
        "submit_experiment", "end_experiment", "ship_experiment", "kill_experiment",
    ],
    "reviewer": [
        "view_experiment", "view_variant", "view_auditlog", "view_decision",
        "approve_experiment", "request_changes_experiment",
    ],
}


def _permission(apps, codename):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    if codename in WORKFLOW_PERMS:
        model, name = "experiment", WORKFLOW_PERMS[codename]
    else:
        action, model = codename.split("_", 1)
        name = f"Can {action} {MODEL_PERMS[model].lower()}"
    ct, _ = ContentType.objects.get_or_create(app_label="experiments", model=model)
    perm, _ = Permission.objects.get_or_create(content_type=ct, codename=codename, defaults={"name": name})
    return perm


def create_groups(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for group_name, codenames in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        group.permissions.add(*[_permission(apps, c) for c in codenames])


def remove_group_permissions(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for group_name, codenames in GROUPS.items():
        group = Group.objects.filter(name=group_name).first()
        if group is not None:
            group.permissions.remove(
                *Permission.objects.filter(content_type__app_label="experiments", codename__in=codenames)
            )


class Migration(migrations.Migration):
    dependencies = [
        ("experiments", "0002_workflow_permissions_and_constraints"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_groups, remove_group_permissions)]
