"""PostgreSQL only: a read cursor and a chat's last message point at a message of that chat.

Django has no composite foreign keys, so these are added in SQL. With MATCH SIMPLE (the
default) a null message id is not checked: "nothing read yet" stays representable. SQLite
(the development default) goes without them; the services keep the rule there.
"""

from django.db import migrations

CONSTRAINTS = [
    (
        "messaging_chatmember",
        "chatmember_cursor_in_own_chat",
        "(chat_id, last_read_message_id)",
    ),
    ("messaging_chat", "chat_last_message_in_own_chat", "(id, last_message_id)"),
]


def add_constraints(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, name, columns in CONSTRAINTS:
        schema_editor.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {name} FOREIGN KEY {columns} "
            "REFERENCES messaging_message (chat_id, id) DEFERRABLE INITIALLY DEFERRED"
        )


def drop_constraints(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, name, _ in CONSTRAINTS:
        schema_editor.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("messaging", "0001_initial")]
    operations = [migrations.RunPython(add_constraints, drop_constraints)]
