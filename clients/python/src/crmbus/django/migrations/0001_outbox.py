"""Creates the crmbus outbox table on PostgreSQL (the same SQL as ``crmbus outbox init``;
safe next to it: every statement is idempotent). Other databases: nothing."""

from django.db import migrations

DROP = """
DROP TABLE IF EXISTS crmbus_outbox;
DROP FUNCTION IF EXISTS crmbus_outbox_before_insert();
DROP FUNCTION IF EXISTS crmbus_outbox_notify();
"""


def create(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    from crmbus.django.outbox import outbox_sql

    with schema_editor.connection.cursor() as cursor:
        cursor.execute(outbox_sql())


def drop(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(DROP)


class Migration(migrations.Migration):
    initial = True
    dependencies: list = []
    operations = [migrations.RunPython(create, drop)]
