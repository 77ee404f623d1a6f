"""Finding people: `User.objects.search(prefix)` (GET /users?search=).

On PostgreSQL, one index serves the search: the upper-cased username in the "C" collation
(byte order, so a LIKE 'PREFIX%' is a range scan of it, whatever the database's collation),
then the id, of active users only, which is exactly the query's filter and order. Measured on
100,000 users: docs/performance.md. SQLite (the development default) goes without it.
"""

import accounts.models
from django.db import migrations

INDEX = "accounts_user_people_search"


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f'CREATE INDEX {INDEX} ON accounts_user ((UPPER(username::text) COLLATE "C"), id) '
            "WHERE is_active"
        )


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("accounts", "0002_user_token_version")]

    operations = [
        migrations.AlterModelManagers(
            name="user",
            managers=[("objects", accounts.models.PeopleManager())],
        ),
        migrations.RunPython(create_index, drop_index),
    ]
