"""v2: the per-chat change log (`seq`), edits and tombstones, reactions, owners, direct chats,
and the membership revision.

Existing messages get their chat's seq in id order (1, 2, 3, ...), each chat's `seq` is its
count, and existing members start at seq 0 and revision 0 (they were there from the start).
Chats made before v2 have no owner (staff manage them; an owner can be set in the admin).
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

NUMBER_MESSAGES = """
UPDATE messaging_message SET seq = numbered.n
FROM (
    SELECT id, row_number() OVER (PARTITION BY chat_id ORDER BY id) AS n FROM messaging_message
) AS numbered
WHERE messaging_message.id = numbered.id
"""
COUNT_CHANGES = """
UPDATE messaging_chat SET seq = COALESCE(
    (SELECT MAX(seq) FROM messaging_message WHERE messaging_message.chat_id = messaging_chat.id), 0
)
"""


def number_existing_messages(apps, schema_editor):
    schema_editor.execute(NUMBER_MESSAGES)
    schema_editor.execute(COUNT_CHANGES)


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0002_cursor_and_last_message_belong_to_chat"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="chat",
            name="kind",
            field=models.CharField(
                choices=[("group", "Group"), ("direct", "Direct")],
                default="group",
                editable=False,
                max_length=6,
            ),
        ),
        migrations.AddField(
            model_name="chat",
            name="owner",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="owned_chats",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddField(
            model_name="chat",
            name="seq",
            field=models.BigIntegerField(default=0, editable=False),
        ),
        migrations.AddField(
            model_name="chat",
            name="revision",
            field=models.BigIntegerField(default=0, editable=False),
        ),
        migrations.AddField(
            model_name="chat",
            name="direct_key",
            field=models.CharField(blank=True, editable=False, max_length=41, null=True),
        ),
        migrations.AddField(
            model_name="chatmember",
            name="joined_seq",
            field=models.BigIntegerField(default=0, editable=False),
        ),
        migrations.AddField(
            model_name="chatmember",
            name="joined_revision",
            field=models.BigIntegerField(default=0, editable=False),
        ),
        migrations.AddField(
            model_name="chatmember",
            name="joined_message_id",
            field=models.BigIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="message",
            name="seq",
            field=models.BigIntegerField(default=0, editable=False),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="message",
            name="edited_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="message",
            name="deleted",
            field=models.BooleanField(default=False, editable=False),
        ),
        migrations.AlterField(
            model_name="message",
            name="author",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="messages",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="message",
            name="text",
            field=models.TextField(blank=True, max_length=4096),
        ),
        migrations.RunPython(number_existing_messages, migrations.RunPython.noop),
        migrations.RemoveConstraint(model_name="message", name="message_text_not_empty"),
        migrations.AddConstraint(
            model_name="message",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("deleted", False), models.Q(("text", ""), _negated=True)),
                    models.Q(("deleted", True), ("text", "")),
                    _connector="OR",
                ),
                name="message_text_unless_deleted",
            ),
        ),
        migrations.AddConstraint(
            model_name="message",
            constraint=models.UniqueConstraint(fields=("chat", "seq"), name="message_chat_seq_key"),
        ),
        migrations.AddConstraint(
            model_name="chat",
            constraint=models.UniqueConstraint(
                fields=("direct_key",), name="one_direct_chat_per_pair"
            ),
        ),
        migrations.AddConstraint(
            model_name="chat",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(
                        ("direct_key__isnull", False), ("kind", "direct"), ("owner__isnull", True)
                    ),
                    models.Q(("direct_key__isnull", True), ("kind", "group")),
                    _connector="OR",
                ),
                name="direct_chats_have_a_pair_and_no_owner",
            ),
        ),
        migrations.CreateModel(
            name="Reaction",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("emoji", models.CharField(max_length=32)),
                (
                    "message",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="reactions",
                        to="messaging.message",
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="reactions",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("message", "emoji", "user"), name="one_reaction_per_user_and_emoji"
                    )
                ],
            },
        ),
    ]
