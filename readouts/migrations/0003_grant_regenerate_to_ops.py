"""Grant readouts.regenerate_narrative to the `ops` group (created here if it does not exist yet)."""

from django.db import migrations


def grant(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    content_type, _ = ContentType.objects.get_or_create(app_label="readouts", model="narrative")
    permission, _ = Permission.objects.get_or_create(
        codename="regenerate_narrative",
        content_type=content_type,
        defaults={"name": "Can regenerate the AI narrative of a readout"},
    )
    group, _ = Group.objects.get_or_create(name="ops")
    group.permissions.add(permission)


def revoke(apps, schema_editor):
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    permission = Permission.objects.filter(codename="regenerate_narrative", content_type__app_label="readouts").first()
    group = Group.objects.filter(name="ops").first()
    if permission and group:
        group.permissions.remove(permission)


class Migration(migrations.Migration):
    dependencies = [
        ("readouts", "0002_narrative_regenerate_permission"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
