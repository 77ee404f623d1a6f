"""The history page's reads in SQL (messaging/history.py), against what the ORM says."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.db import connection

from accounts.models import User
from messaging import events, history, services
from messaging.history import ChatPosition
from messaging.models import Chat, ChatMember, Message


@pytest.fixture
def chat_with_history(
    user: User, other_user: User, make_chat: Callable[..., Chat]
) -> tuple[Chat, list[Message]]:
    chat = make_chat(user, [other_user])
    for index in range(5):
        author = other_user if index % 2 else user
        services.message_send(
            author=author, chat_id=chat.pk, text=f"m{index}", client_id=f"c{index}"
        )
    # Another chat's messages, interleaved by id, must never show up.
    other = make_chat(other_user)
    services.message_send(author=other_user, chat_id=other.pk, text="elsewhere")
    return chat, list(Message.objects.filter(chat=chat).order_by("id"))


def shapes(rows: list) -> list[dict]:
    return [events.message_data(row) for row in rows]


def page_rows(chat_id: int, **kwargs: object) -> list[history.MessageRow]:
    """A page's messages, without their reactions."""
    return [row for row, _ in history.message_page(chat_id, **kwargs)]


def at(messages: list[Message], index: int = -1) -> ChatPosition:
    return ChatPosition(newest_id=messages[index].pk, seq=messages[index].seq)


def test_a_page_is_the_message_objects_the_orm_gives(chat_with_history) -> None:
    chat, messages = chat_with_history

    page = page_rows(chat.pk, limit=10, position=at(messages))

    # The same contract objects, the time zone and its "Z" included, on PostgreSQL and SQLite.
    assert shapes(page) == shapes(messages[::-1])
    assert page[0].created_at.tzinfo is not None


def test_pages_before_and_after_an_id_in_their_order(chat_with_history) -> None:
    chat, messages = chat_with_history
    ids = [message.pk for message in messages]
    now = at(messages)

    newest_first = page_rows(chat.pk, limit=2, position=now, before=ids[3])
    oldest_first = page_rows(chat.pk, limit=2, position=now, after=ids[1])
    from_start = page_rows(chat.pk, limit=10, position=now, after=0)

    assert [row.pk for row in newest_first] == [ids[2], ids[1]]
    assert [row.pk for row in oldest_first] == [ids[2], ids[3]]
    assert [row.pk for row in from_start] == ids
    assert page_rows(chat.pk, limit=5, position=now, after=ids[-1]) == []


def test_pages_stop_where_the_chat_stood_when_the_request_began(chat_with_history) -> None:
    """A message committed after the request read the chat's position is the next page's."""
    chat, messages = chat_with_history
    ids = [message.pk for message in messages]

    after = page_rows(chat.pk, limit=10, position=at(messages, 2), after=ids[0])
    since = page_rows(chat.pk, limit=10, position=at(messages, 2), since_seq=1)
    newest = page_rows(chat.pk, limit=10, position=at(messages, 2))

    assert [row.pk for row in after] == ids[1:3]
    assert [row.pk for row in since] == ids[1:3]
    assert [row.pk for row in newest] == ids[2::-1]


def test_a_since_seq_page_is_every_change_after_it_by_seq(chat_with_history, user) -> None:
    chat, messages = chat_with_history
    services.message_edit(editor=user, chat_id=chat.pk, message_id=messages[0].pk, text="new")
    services.reaction_add(user=user, chat_id=chat.pk, message_id=messages[3].pk, emoji="👍")
    services.message_delete(actor=user, chat_id=chat.pk, message_id=messages[2].pk)
    chat.refresh_from_db()

    page = history.message_page(
        chat.pk, limit=10, position=ChatPosition(messages[-1].pk, chat.seq), since_seq=4
    )
    rows = [row for row, _ in page]

    # seq 5 is the last send; then the edit (6), the reaction (7) and the deletion (8).
    assert [(row.pk, row.seq) for row in rows] == [
        (messages[4].pk, 5),
        (messages[0].pk, 6),
        (messages[3].pk, 7),
        (messages[2].pk, 8),
    ]
    assert [row.text for row in rows] == ["m4", "new", "m3", ""]
    assert rows[1].edited_at is not None and rows[3].deleted
    assert [reactions for _, reactions in page] == [{}, {}, {"👍": [user.pk]}, {}]


def test_a_page_counts_messages_not_reactions_and_groups_each_messages_reactions(
    chat_with_history, user: User, other_user: User
) -> None:
    chat, messages = chat_with_history
    newest, older = messages[-1].pk, messages[-2].pk
    for reactor, emoji in [(user, "👍"), (other_user, "🎉"), (other_user, "👍"), (user, ":x:")]:
        services.reaction_add(user=reactor, chat_id=chat.pk, message_id=newest, emoji=emoji)
    services.reaction_add(user=other_user, chat_id=chat.pk, message_id=older, emoji="👍")
    chat.refresh_from_db()
    now = ChatPosition(newest, chat.seq)

    newest_first = history.message_page(chat.pk, limit=2, position=now)
    by_seq = history.message_page(chat.pk, limit=2, position=now, since_seq=5)

    # Emoji in the order first used, each with its users in the order they reacted.
    expected = {"👍": [user.pk, other_user.pk], "🎉": [other_user.pk], ":x:": [user.pk]}
    assert [(row.pk, reactions) for row, reactions in newest_first] == [
        (newest, expected),
        (older, {"👍": [other_user.pk]}),
    ]
    assert [(row.pk, row.seq) for row, _ in by_seq] == [(newest, 9), (older, 10)]
    assert list(newest_first[0][1]) == ["👍", "🎉", ":x:"]


def test_member_cursors_lists_every_member_by_user_id_and_where_the_chat_stands(
    chat_with_history, user: User, other_user: User
) -> None:
    chat, messages = chat_with_history
    ChatMember.objects.filter(chat=chat, user=other_user).update(last_read_message=None)

    cursors, position = history.member_cursors(chat.pk)

    expected_user_cursor = ChatMember.objects.get(chat=chat, user=user).last_read_message_id
    assert cursors == sorted([(user.pk, expected_user_cursor), (other_user.pk, None)])
    assert position == ChatPosition(newest_id=messages[-1].pk, seq=5)


def test_member_cursors_of_a_chat_that_does_not_exist_is_empty(db: None) -> None:
    assert history.member_cursors(2**62) == ([], ChatPosition(None, 0))


def test_every_page_is_a_range_of_the_chats_own_index_even_for_a_chat_that_holds_most_rows(
    user: User, make_chat: Callable[..., Chat]
) -> None:
    """For a chat that the statistics say holds most of the table, PostgreSQL may plan
    `chat_id = X AND id > Y ORDER BY id` as a walk of the primary key that skips the other
    chats' rows: from `after=0`, or `before` a bound past the chat's newest message, that is
    every row of the others before the first of this chat's (the send's floor lookup had the
    same fault: messaging/tests/test_send_rules.py)."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's planner (set DATABASE_URL)")
    busy, other = make_chat(user), make_chat(user)
    insert = (
        "INSERT INTO messaging_message (chat_id, author_id, text, created_at, seq, deleted)"
        " SELECT %s, %s, 'm' || g, now(), g + %s, false FROM generate_series(1, %s) AS g"
    )
    statements: list[tuple[str, tuple]] = []

    def record(execute, sql, params, many, context):  # noqa: ANN001, ANN202
        statements.append((sql, params))
        return execute(sql, params, many, context)

    with connection.cursor() as cursor:
        # The other chat's rows before and after the busy chat's, which are most of the table.
        cursor.execute(insert, [other.pk, user.pk, 0, 3000])
        cursor.execute(insert, [busy.pk, user.pk, 0, 20000])
        cursor.execute(insert, [other.pk, user.pk, 3000, 3000])
        cursor.execute("UPDATE messaging_chat SET seq = 20000 WHERE id = %s", [busy.pk])
        cursor.execute("ANALYZE messaging_message")
        with connection.execute_wrapper(record):
            _, position = history.member_cursors(busy.pk)
            beyond = position.newest_id + 10_000
            for bounds in ({}, {"after": 0}, {"before": beyond}, {"since_seq": 0}):
                assert len(page_rows(busy.pk, limit=50, position=position, **bounds)) == 50
        pages = [(sql, params) for sql, params in statements if "LIMIT" in sql]
        assert len(pages) == 4
        for sql, params in pages:
            cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
            plan = str(cursor.fetchone()[0])
            assert "messaging_message_pkey" not in plan, (sql, params, plan)
