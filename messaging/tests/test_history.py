"""The history page's two reads in SQL (messaging/history.py), against what the ORM says."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from accounts.models import User
from messaging import events, history, services
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


def test_a_page_is_the_message_objects_the_orm_gives(chat_with_history) -> None:
    chat, messages = chat_with_history

    page = history.message_page(chat.pk, limit=10, newest_id=messages[-1].pk)

    # The same contract objects, the time zone and its "Z" included, on PostgreSQL and SQLite.
    assert shapes(page) == shapes(messages[::-1])
    assert page[0].created_at.tzinfo is not None


def test_pages_before_and_after_an_id_in_their_order(chat_with_history) -> None:
    chat, messages = chat_with_history
    ids = [message.pk for message in messages]

    newest = ids[-1]

    newest_first = history.message_page(chat.pk, limit=2, newest_id=newest, before=ids[3])
    oldest_first = history.message_page(chat.pk, limit=2, newest_id=newest, after=ids[1])
    from_start = history.message_page(chat.pk, limit=10, newest_id=newest, after=0)

    assert [row.pk for row in newest_first] == [ids[2], ids[1]]
    assert [row.pk for row in oldest_first] == [ids[2], ids[3]]
    assert [row.pk for row in from_start] == ids
    assert history.message_page(chat.pk, limit=5, newest_id=newest, after=ids[-1]) == []


def test_an_after_page_stops_at_the_newest_id_it_was_given(chat_with_history) -> None:
    """A message committed after the request read the chat's newest id is the next page's."""
    chat, messages = chat_with_history
    ids = [message.pk for message in messages]

    page = history.message_page(chat.pk, limit=10, newest_id=ids[2], after=ids[0])

    assert [row.pk for row in page] == ids[1:3]


def test_member_cursors_lists_every_member_by_user_id_and_the_newest_message(
    chat_with_history, user: User, other_user: User
) -> None:
    chat, messages = chat_with_history
    ChatMember.objects.filter(chat=chat, user=other_user).update(last_read_message=None)

    cursors, newest_id = history.member_cursors(chat.pk)

    expected_user_cursor = ChatMember.objects.get(chat=chat, user=user).last_read_message_id
    assert cursors == sorted([(user.pk, expected_user_cursor), (other_user.pk, None)])
    assert newest_id == messages[-1].pk


def test_member_cursors_of_a_chat_that_does_not_exist_is_empty(db: None) -> None:
    assert history.member_cursors(2**62) == ([], None)
