"""The send rules exist twice: the ORM version (SQLite, any database) and the one-statement
version (PostgreSQL, `_SEND_SQL`). Each case here runs against both: on SQLite the SQL one
skips (it is PostgreSQL's SQL), on PostgreSQL both run, so the rules CI checks are the rules
`make test` checks locally."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from django.db import connection
from django.utils import timezone

from chatproject.errors import NotFound
from messaging import services
from messaging.models import Chat, ChatMember, Message
from messaging.services import messages

pytestmark = pytest.mark.django_db


def _needs_postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the one-statement send is PostgreSQL's SQL (set DATABASE_URL)")


def _sql_send(**kwargs):
    _needs_postgresql()
    return messages._message_send_in_one_statement(**kwargs)


@pytest.fixture(params=["orm", "sql"])
def send(request):
    return {"orm": messages._message_send, "sql": _sql_send}[request.param]


def test_a_send_stores_the_message_with_the_chats_next_seq_and_moves_what_follows(
    send, user, other_user, make_chat
):
    chat = make_chat(user, [other_user])

    first = send(author=user, chat_id=chat.pk, text="one", client_id="c1")
    second = send(author=other_user, chat_id=chat.pk, text=" two ", client_id=None)

    stored = list(Message.objects.filter(chat=chat).order_by("id"))
    assert [(m.text, m.seq, m.client_id) for m in stored] == [
        ("one", 1, "c1"),
        (" two ", 2, None),
    ]
    assert (first.created, second.created) == (True, True)
    assert (first.message.pk, first.message.seq) == (stored[0].pk, 1)
    chat.refresh_from_db()
    assert (chat.seq, chat.last_message_id) == (2, stored[1].pk)
    assert chat.last_activity_at == stored[1].created_at
    cursors = dict(ChatMember.objects.filter(chat=chat).values_list("user_id", "last_read_message"))
    assert cursors == {user.pk: stored[0].pk, other_user.pk: stored[1].pk}


def test_a_non_member_or_a_missing_chat_is_not_found_and_nothing_changes(
    send, user, other_user, make_chat
):
    chat = make_chat(other_user)

    for chat_id in (chat.pk, chat.pk + 1000):
        with pytest.raises(NotFound):
            send(author=user, chat_id=chat_id, text="hi", client_id=None)
    assert not Message.objects.exists()
    assert Chat.objects.get(pk=chat.pk).seq == 0


def test_a_repeated_client_id_returns_the_original_as_it_is_now_and_takes_no_seq(
    send, user, make_chat
):
    chat = make_chat(user)
    original = send(author=user, chat_id=chat.pk, text="first", client_id="k")
    services.reaction_add(user=user, chat_id=chat.pk, message_id=original.message.pk, emoji="👍")
    services.message_delete(actor=user, chat_id=chat.pk, message_id=original.message.pk)

    repeat = send(author=user, chat_id=chat.pk, text="second", client_id="k")

    assert not repeat.created
    assert repeat.message.pk == original.message.pk
    assert (repeat.message.deleted, repeat.message.text, repeat.message.seq) == (True, "", 3)
    assert Chat.objects.get(pk=chat.pk).seq == 3
    assert Message.objects.filter(chat=chat).count() == 1


def test_created_at_is_floored_by_the_chats_activity_time(send, user, make_chat):
    chat = make_chat(user)
    first = send(author=user, chat_id=chat.pk, text="1", client_id=None)
    behind = first.message.created_at - timedelta(minutes=1)

    with mock.patch("django.utils.timezone.now", return_value=behind):
        second = send(author=user, chat_id=chat.pk, text="2", client_id=None)

    assert Message.objects.get(pk=second.message.pk).created_at == first.message.created_at


def test_created_at_is_floored_by_the_newest_message_even_once_deleted(send, user, make_chat):
    chat = make_chat(user)
    send(author=user, chat_id=chat.pk, text="1", client_id=None)
    later = timezone.now() + timedelta(minutes=1)
    with mock.patch("django.utils.timezone.now", return_value=later):
        second = send(author=user, chat_id=chat.pk, text="2", client_id=None)
    services.message_delete(actor=user, chat_id=chat.pk, message_id=second.message.pk)

    third = send(author=user, chat_id=chat.pk, text="3", client_id=None)  # The clock: now.

    assert Message.objects.get(pk=third.message.pk).created_at == later


def test_the_floor_lookup_of_a_send_is_an_index_range_even_when_one_chat_holds_every_row(
    user, make_chat
):
    """The one-statement send looks up its chat's newest message on every send. Written as
    `chat_id = chat.id ORDER BY id DESC`, PostgreSQL planned it as a backward walk of the
    primary key once the statistics said one chat held every message: a first send into
    any other chat then read the whole table (seconds in `make bench`'s scenario 2)."""
    _needs_postgresql()
    busy, empty = make_chat(user), make_chat(user)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO messaging_message (chat_id, author_id, text, created_at, seq, deleted)"
            " SELECT %s, %s, 'm' || g, now(), g, false FROM generate_series(1, 5000) AS g",
            [busy.pk, user.pk],
        )
        cursor.execute("ANALYZE messaging_message")
        params = messages._send_params(author=user, chat_id=empty.pk, text="first")
        cursor.execute("EXPLAIN (FORMAT JSON) " + messages._SEND_SQL, params)
        plan = str(cursor.fetchone()[0])

    assert "message_chat_id_key" in plan  # The (chat_id, id) index...
    assert "messaging_message_pkey" not in plan  # ...and never a walk of the primary key.
    sent = _sql_send(author=user, chat_id=empty.pk, text="first", client_id=None)
    assert sent.created and sent.message.seq == 1
