"""Give the `ops` and `reviewer` groups the permissions on the metric plan (ExperimentMetric).

Ops edit the plan's metrics in the admin (inline, while draft); reviewers read them. Permissions are
get_or_create'd by (content type, codename), like 0003, since post_migrate has not run yet.
"""

from django.db import migrations

GROUPS = {
    "ops": ["add_experimentmetric", "change_experimentmetric", "delete_experimentmetric", "view_experimentmetric"],
    "reviewer": ["view_experimentmetric"],
}


def _permission(apps, codename):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    action = codename.split("_", 1)[0]
    ct, _ = ContentType.objects.get_or_create(app_label="experiments", model="experimentmetric")
    perm, _ = Permission.objects.get_or_create(
        content_type=ct, codename=codename, defaults={"name": f"Can {action} experiment metric"}
    )
    return perm


def grant(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for group_name, codenames in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        group.permissions.add(*[_permission(apps, c) for c in codenames])


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for group_name, codenames in GROUPS.items():
        group = Group.objects.filter(name=group_name).first()
        if group is not None:
            group.permissions.remove(*Permission.objects.filter(codename__in=codenames))


class Migration(migrations.Migration):
    dependencies = [("experiments", "0005_governance_preregistration_and_override")]
    operations = [migrations.RunPython(grant, revoke)]
