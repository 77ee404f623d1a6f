"""Services and the data model's invariants: cursors, ordering, idempotency, events."""

from __future__ import annotations

import threading
from unittest import mock

import pytest
from django.db import IntegrityError, connection, transaction

from chatproject.errors import ApplicationError, NotFound
from messaging import events, services
from messaging.models import Chat, ChatMember, Message

pytestmark = pytest.mark.django_db


@pytest.fixture
def published():
    """Every (group, payload) the services publish, captured instead of sent."""
    sent: list[tuple[str, dict]] = []
    with mock.patch.object(
        events, "_publish", lambda group, payload: sent.append((group, payload))
    ):
        yield sent


# --- Every member has exactly one read cursor, however they became a member -----------------------


def test_members_added_with_the_m2m_api_get_a_cursor(user, other_user):
    chat = Chat.objects.create(title="orm")

    chat.members.add(user, other_user)

    cursors = ChatMember.objects.filter(chat=chat)
    assert {c.user_id for c in cursors} == {user.pk, other_user.pk}
    assert all(c.last_read_message_id is None for c in cursors)


def test_a_membership_row_created_directly_is_the_cursor(user):
    chat = Chat.objects.create()

    ChatMember.objects.create(chat=chat, user=user)

    assert chat.members.get() == user
    assert ChatMember.objects.get(chat=chat, user=user).last_read_message is None


def test_a_second_cursor_for_the_same_member_is_refused_by_the_database(user):
    chat = Chat.objects.create()
    ChatMember.objects.create(chat=chat, user=user)

    with pytest.raises(IntegrityError), transaction.atomic():
        ChatMember.objects.create(chat=chat, user=user)


def test_chat_create_gives_every_member_a_cursor(user, other_user):
    chat = services.chat_create(creator=user, member_ids=[other_user.pk])

    assert ChatMember.objects.filter(chat=chat).count() == 2


def test_chat_create_refuses_unknown_ids_and_creates_nothing(user):
    with pytest.raises(ApplicationError) as error:
        services.chat_create(creator=user, member_ids=[424242])

    assert error.value.field == "member_ids"
    assert not Chat.objects.exists()


@pytest.mark.postgres
def test_a_cursor_cannot_point_at_a_message_of_another_chat(user, make_chat, make_message):
    mine = make_chat(user)
    other = make_chat(user)
    foreign = make_message(other, user)

    with pytest.raises(IntegrityError), transaction.atomic():
        ChatMember.objects.filter(chat=mine, user=user).update(last_read_message=foreign)
        connection.check_constraints()


@pytest.mark.postgres
def test_a_chat_cannot_name_another_chats_message_as_its_last(user, make_chat, make_message):
    mine = make_chat(user)
    foreign = make_message(make_chat(user), user)

    with pytest.raises(IntegrityError), transaction.atomic():
        Chat.objects.filter(pk=mine.pk).update(last_message=foreign)
        connection.check_constraints()


def test_client_id_is_unique_per_author_and_chat_in_the_database(user, make_chat):
    chat = make_chat(user)
    Message.objects.create(chat=chat, author=user, text="a", client_id="same")

    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(chat=chat, author=user, text="b", client_id="same")


def test_deleting_the_author_of_a_chats_newest_message_repoints_last_message(
    user, other_user, make_chat, make_message
):
    chat = make_chat(user, [other_user])
    older = make_message(chat, user)
    make_message(chat, other_user)

    other_user.delete()

    assert Chat.objects.get(pk=chat.pk).last_message_id == older.pk


def test_deleting_a_chat_with_messages_and_cursors_works(user, other_user, make_chat, make_message):
    chat = make_chat(user, [other_user])
    make_message(chat, user)

    chat.delete()

    assert not Message.objects.exists() and not ChatMember.objects.exists()


# --- message_send ---------------------------------------------------------------------------------


def test_send_returns_the_previous_message_id_for_ordering(user, make_chat):
    chat = make_chat(user)

    first = services.message_send(author=user, chat_id=chat.pk, text="1")
    second = services.message_send(author=user, chat_id=chat.pk, text="2")

    assert first.previous_id is None
    assert second.previous_id == first.message.pk
    chat.refresh_from_db()
    assert chat.last_message_id == second.message.pk
    assert chat.last_activity_at == second.message.created_at


def test_send_publishes_once_after_commit_only(
    user, make_chat, published, django_capture_on_commit_callbacks
):
    chat = make_chat(user)
    published.clear()

    with django_capture_on_commit_callbacks(execute=True):
        sent = services.message_send(author=user, chat_id=chat.pk, text="hi")
        assert published == []  # Not before commit.

    assert [group for group, _ in published] == [f"chat.{chat.pk}"]
    payload = published[0][1]
    assert payload["message_id"] == sent.message.pk
    assert '"text":"hi"' in payload["frame"]


def test_send_publishes_nothing_when_the_transaction_rolls_back(user, make_chat, published):
    chat = make_chat(user)
    published.clear()

    with pytest.raises(RuntimeError), transaction.atomic():
        services.message_send(author=user, chat_id=chat.pk, text="lost")
        raise RuntimeError

    assert published == []
    assert not Message.objects.exists()


def test_a_repeated_client_id_returns_the_original_and_publishes_nothing(
    user, make_chat, published
):
    chat = make_chat(user)
    original = services.message_send(author=user, chat_id=chat.pk, text="a", client_id="k")
    published.clear()

    repeat = services.message_send(author=user, chat_id=chat.pk, text="b", client_id="k")

    assert not repeat.created
    assert repeat.message.pk == original.message.pk
    assert published == []


def test_the_same_client_id_in_another_chat_or_by_another_user_is_a_new_message(
    user, other_user, make_chat
):
    chat = make_chat(user, [other_user])
    second_chat = make_chat(user)
    services.message_send(author=user, chat_id=chat.pk, text="a", client_id="k")

    by_other = services.message_send(author=other_user, chat_id=chat.pk, text="b", client_id="k")
    elsewhere = services.message_send(author=user, chat_id=second_chat.pk, text="c", client_id="k")

    assert by_other.created and elsewhere.created


def test_send_to_a_chat_the_author_is_not_in_is_not_found(user, other_user, make_chat):
    chat = make_chat(other_user)

    with pytest.raises(NotFound):
        services.message_send(author=user, chat_id=chat.pk, text="hi")


def test_send_costs_a_fixed_number_of_queries(user, make_chat, django_assert_num_queries):
    chat = make_chat(user)
    # PostgreSQL: one statement does it all (see services._SEND_SQL), a repeated client_id
    # included. Elsewhere: SELECT ... FOR UPDATE, [SELECT by client_id,] INSERT, UPDATE chat,
    # UPDATE cursor (+ savepoint and release, since the test itself runs in a transaction).
    postgres = connection.vendor == "postgresql"
    with django_assert_num_queries(1 if postgres else 6):
        services.message_send(author=user, chat_id=chat.pk, text="hi")
    with django_assert_num_queries(1 if postgres else 7):
        services.message_send(author=user, chat_id=chat.pk, text="hi again", client_id="c")
    with django_assert_num_queries(1 if postgres else 4):
        services.message_send(author=user, chat_id=chat.pk, text="repeat", client_id="c")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_repeats_of_one_client_id_store_one_message(user, make_chat):
    """Sends of one client_id racing for the chat lock: one message, every caller gets it."""
    chat = make_chat(user)
    results: list[services.SentMessage] = []

    def send() -> None:
        try:
            results.append(
                services.message_send(author=user, chat_id=chat.pk, text="x", client_id="same")
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 6
    assert sum(result.created for result in results) == 1
    assert {result.message.pk for result in results} == {Message.objects.get(chat=chat).pk}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_senders_commit_in_id_order(make_user):
    """Readers polling with `after` must never see id N+1 committed before id N."""
    users = [make_user() for _ in range(6)]
    chat = services.chat_create(creator=users[0], member_ids=[u.pk for u in users[1:]])
    stop = threading.Event()
    violations: list[str] = []

    def sender(author) -> None:
        try:
            for i in range(25):
                services.message_send(author=author, chat_id=chat.pk, text=f"{i}")
        finally:
            connection.close()

    def reader() -> None:
        # Every committed snapshot must be a prefix: once N is visible, nothing below appears.
        seen_max = 0
        seen: set[int] = set()
        try:
            while not stop.is_set():
                ids = list(Message.objects.filter(chat=chat).values_list("id", flat=True))
                late = [i for i in ids if i not in seen and i < seen_max]
                if late:
                    violations.append(f"{late} appeared after {seen_max}")
                seen.update(ids)
                seen_max = max(ids, default=0)
        finally:
            connection.close()

    watcher = threading.Thread(target=reader)
    watcher.start()
    threads = [threading.Thread(target=sender, args=(u,)) for u in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    watcher.join()

    assert Message.objects.filter(chat=chat).count() == 150
    assert violations == []


# --- read_cursor_advance --------------------------------------------------------------------------


def test_read_moves_forward_and_tells_author_and_reader(
    user, other_user, make_chat, make_message, published, django_capture_on_commit_callbacks
):
    chat = make_chat(user, [other_user])
    message = make_message(chat, user)
    published.clear()

    with django_capture_on_commit_callbacks(execute=True):
        moved = services.read_cursor_advance(
            reader=other_user, chat_id=chat.pk, message_id=message.pk, origin="socket-1"
        )

    assert moved
    assert sorted(group for group, _ in published) == sorted(
        [f"user.{user.pk}", f"user.{other_user.pk}"]
    )
    assert all(payload["origin"] == "socket-1" for _, payload in published)


def test_read_at_or_behind_the_cursor_changes_nothing_and_tells_nobody(
    user, other_user, make_chat, make_message, published, django_capture_on_commit_callbacks
):
    chat = make_chat(user, [other_user])
    first = make_message(chat, user)
    second = make_message(chat, user)
    services.read_cursor_advance(reader=other_user, chat_id=chat.pk, message_id=second.pk)
    published.clear()

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        again = services.read_cursor_advance(
            reader=other_user, chat_id=chat.pk, message_id=second.pk
        )
        back = services.read_cursor_advance(reader=other_user, chat_id=chat.pk, message_id=first.pk)

    assert callbacks == []

    assert not again and not back
    assert published == []
    assert ChatMember.objects.get(chat=chat, user=other_user).last_read_message_id == second.pk


def test_read_of_an_unknown_or_foreign_message_is_not_found(user, make_chat, make_message):
    chat = make_chat(user)
    foreign = make_message(make_chat(user), user)

    for message_id in (foreign.pk, 10**12):
        with pytest.raises(NotFound):
            services.read_cursor_advance(reader=user, chat_id=chat.pk, message_id=message_id)


def test_read_by_a_non_member_is_not_found(user, other_user, make_chat, make_message):
    chat = make_chat(other_user)
    message = make_message(chat, other_user)

    with pytest.raises(NotFound):
        services.read_cursor_advance(reader=user, chat_id=chat.pk, message_id=message.pk)


# --- Membership events ----------------------------------------------------------------------------


def test_joining_by_any_path_is_announced_to_the_new_member(
    user, other_user, make_user, published, django_capture_on_commit_callbacks
):
    third = make_user()
    chat = services.chat_create(creator=user)
    published.clear()

    with django_capture_on_commit_callbacks(execute=True):
        chat.members.add(other_user)
        ChatMember.objects.create(chat=chat, user=third)

    joins = [(group, p["chat_id"]) for group, p in published if p.get("joined")]
    assert sorted(joins) == sorted(
        [(f"user.{other_user.pk}", chat.pk), (f"user.{third.pk}", chat.pk)]
    )


def test_leaving_by_any_path_is_announced(
    user, other_user, make_user, published, django_capture_on_commit_callbacks
):
    third = make_user()
    chat = services.chat_create(creator=user, member_ids=[other_user.pk, third.pk])
    published.clear()

    with django_capture_on_commit_callbacks(execute=True):
        chat.members.remove(other_user)
        ChatMember.objects.filter(user=third).delete()

    leaves = sorted(group for group, p in published if p.get("joined") is False)
    assert leaves == sorted([f"user.{other_user.pk}", f"user.{third.pk}"])
