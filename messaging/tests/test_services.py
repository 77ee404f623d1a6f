"""Message services and the data model's invariants: cursors, ordering, idempotency, seq,
edits, tombstones, reactions, events. Chats and membership: test_chat_services.py."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from unittest import mock

import pytest
from django.db import IntegrityError, connection, transaction

from chatproject.errors import ApplicationError, Forbidden, NotFound
from messaging import events, services
from messaging.models import Chat, ChatMember, Message, Reaction

pytestmark = pytest.mark.django_db


# --- Database invariants ------------------------------------------------------------------------


def test_a_second_cursor_for_the_same_member_is_refused_by_the_database(user):
    chat = Chat.objects.create()
    ChatMember.objects.create(chat=chat, user=user)

    with pytest.raises(IntegrityError), transaction.atomic():
        ChatMember.objects.bulk_create([ChatMember(chat=chat, user=user)])


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
    Message.objects.create(chat=chat, author=user, text="a", client_id="same", seq=1)

    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(chat=chat, author=user, text="b", client_id="same", seq=2)


def test_two_changes_of_a_chat_cannot_share_a_seq(user, make_chat):
    chat = make_chat(user)
    Message.objects.create(chat=chat, author=user, text="a", seq=1)

    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(chat=chat, author=user, text="b", seq=1)


@pytest.mark.parametrize(("text", "deleted"), [("", False), ("still here", True)])
def test_a_message_has_text_and_a_tombstone_none(user, make_chat, text, deleted):
    chat = make_chat(user)

    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(chat=chat, author=user, text=text, deleted=deleted, seq=1)


def test_deleting_a_chat_with_messages_and_cursors_works(user, other_user, make_chat, make_message):
    chat = make_chat(user, [other_user])
    make_message(chat, user)

    chat.delete()

    assert not Message.objects.exists() and not ChatMember.objects.exists()


# --- message_send ---------------------------------------------------------------------------------


def test_a_sent_message_is_its_row_as_a_query_loads_it(user, make_chat):
    chat = make_chat(user)

    sent = services.message_send(author=user, chat_id=chat.pk, text="x", client_id="c1")

    loaded = Message.objects.get(pk=sent.message.pk)
    fields = [field.attname for field in Message._meta.concrete_fields]
    assert [getattr(sent.message, f) for f in fields] == [getattr(loaded, f) for f in fields]
    assert sent.message.get_deferred_fields() == set()
    # Known as a stored row: validating it does not find itself a duplicate of its own row.
    sent.message.validate_constraints()


def test_each_send_takes_the_chats_next_seq(user, make_chat):
    chat = make_chat(user)

    first = services.message_send(author=user, chat_id=chat.pk, text="1")
    second = services.message_send(author=user, chat_id=chat.pk, text="2")

    assert (first.message.seq, second.message.seq) == (1, 2)
    assert Message.objects.get(pk=second.message.pk).seq == 2
    chat.refresh_from_db()
    assert (chat.seq, chat.last_message_id) == (2, second.message.pk)
    assert chat.last_activity_at == second.message.created_at


def test_created_at_never_goes_back_as_ids_grow(user, make_chat):
    """Times are taken under the chat's lock, floored by the chat's activity time: a sender
    whose clock reading is older than the last message's still gets a later-or-equal time."""
    chat = make_chat(user)
    first = services.message_send(author=user, chat_id=chat.pk, text="1")
    earlier = first.message.created_at - timedelta(seconds=5)

    with mock.patch("django.utils.timezone.now", return_value=earlier):
        second = services.message_send(author=user, chat_id=chat.pk, text="2")

    stored = Message.objects.get(pk=second.message.pk)
    assert stored.created_at == second.message.created_at >= first.message.created_at
    chat.refresh_from_db()
    assert chat.last_activity_at == stored.created_at


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
    assert (payload["type"], payload["message_id"], payload["seq"]) == (
        "chat.change",
        sent.message.pk,
        1,
    )
    chat.refresh_from_db()
    assert payload["new"] is True and payload["rev"] == chat.revision == 1
    assert json.loads(payload["frame"]) == {
        "type": "new_message",
        "message": events.message_data(sent.message),
    }


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
    # PostgreSQL: one statement does it all (see services.messages._SEND_SQL); a repeated
    # client_id reads the original whole (and its reactions) after it. Elsewhere: SELECT ...
    # FOR UPDATE, [SELECT by client_id,] SELECT the newest message's time, INSERT, UPDATE chat,
    # UPDATE cursor (+ savepoint and release, since the test itself runs in a transaction).
    postgres = connection.vendor == "postgresql"
    with django_assert_num_queries(1 if postgres else 7):
        services.message_send(author=user, chat_id=chat.pk, text="hi")
    with django_assert_num_queries(1 if postgres else 8):
        services.message_send(author=user, chat_id=chat.pk, text="hi again", client_id="c")
    with django_assert_num_queries(3 if postgres else 5):
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


# --- Editing, deleting, reacting ------------------------------------------------------------------


def change_events(published: list[tuple[str, dict]]) -> list[tuple[int, int, bool, dict]]:
    """(seq, message id, new?, the frame's message) of each chat.change published."""
    return [
        (p["seq"], p["message_id"], p["new"], json.loads(p["frame"])["message"])
        for _, p in published
        if p["type"] == "chat.change"
    ]


def test_an_edit_takes_the_next_seq_and_is_announced_after_commit(
    user, other_user, make_chat, make_message, published, django_capture_on_commit_callbacks
):
    chat = make_chat(user, [other_user])
    message = make_message(chat, user, "typo")
    make_message(chat, other_user, "later")
    published.clear()

    with django_capture_on_commit_callbacks(execute=True):
        changed = services.message_edit(
            editor=user, chat_id=chat.pk, message_id=message.pk, text="fixed"
        )
        assert published == []

    stored = Message.objects.get(pk=message.pk)
    assert (stored.text, stored.seq, changed.message.seq) == ("fixed", 3, 3)
    assert stored.edited_at is not None and stored.created_at == message.created_at
    [(seq, message_id, new, shown)] = change_events(published)
    assert (seq, message_id, new) == (3, message.pk, False)
    assert shown == events.message_data(stored)
    chat.refresh_from_db()
    assert chat.seq == 3 and chat.last_message.text == "later"


def test_only_the_author_edits_and_a_deleted_message_is_not_found(
    user, other_user, make_user, make_chat, make_message
):
    chat = make_chat(user, [other_user])
    message = make_message(chat, user)

    with pytest.raises(Forbidden):
        services.message_edit(editor=other_user, chat_id=chat.pk, message_id=message.pk, text="x")
    with pytest.raises(NotFound):  # A stranger learns nothing.
        services.message_edit(editor=make_user(), chat_id=chat.pk, message_id=message.pk, text="x")
    services.message_delete(actor=user, chat_id=chat.pk, message_id=message.pk)
    with pytest.raises(NotFound):
        services.message_edit(editor=user, chat_id=chat.pk, message_id=message.pk, text="x")
    assert Message.objects.get(pk=message.pk).text == ""


def test_a_message_of_another_chat_is_not_found(user, make_chat, make_message):
    chat = make_chat(user)
    elsewhere = make_message(make_chat(user), user)

    for change in (
        lambda: services.message_edit(
            editor=user, chat_id=chat.pk, message_id=elsewhere.pk, text="x"
        ),
        lambda: services.message_delete(actor=user, chat_id=chat.pk, message_id=elsewhere.pk),
        lambda: services.reaction_add(
            user=user, chat_id=chat.pk, message_id=elsewhere.pk, emoji="👍"
        ),
        lambda: services.reaction_remove(
            user=user, chat_id=chat.pk, message_id=elsewhere.pk, emoji="👍"
        ),
    ):
        with pytest.raises(NotFound):
            change()
    assert Message.objects.get(pk=elsewhere.pk).seq == 1


def test_a_deletion_leaves_a_tombstone_that_keeps_ids_and_cursors(
    user, other_user, make_chat, make_message
):
    chat = make_chat(user, [other_user])
    first = make_message(chat, user, "first")
    last = make_message(chat, user, "regret")
    services.reaction_add(user=other_user, chat_id=chat.pk, message_id=last.pk, emoji="😮")
    services.read_cursor_advance(reader=other_user, chat_id=chat.pk, message_id=last.pk)

    assert services.message_delete(actor=user, chat_id=chat.pk, message_id=last.pk)

    tombstone = Message.objects.get(pk=last.pk)
    assert (tombstone.text, tombstone.deleted, tombstone.created_at) == ("", True, last.created_at)
    assert not tombstone.reactions.exists()
    chat.refresh_from_db()
    assert chat.last_message_id == first.pk  # The newest message left standing.
    assert chat.last_activity_at == first.created_at  # Its time: GET /chats orders by it.
    cursor = ChatMember.objects.get(chat=chat, user=other_user).last_read_message_id
    assert cursor == last.pk
    # Deleting again changes nothing.
    assert not services.message_delete(actor=user, chat_id=chat.pk, message_id=last.pk)
    assert Message.objects.get(pk=last.pk).seq == tombstone.seq


def test_the_owner_may_delete_anyones_message_and_other_members_none(
    user, other_user, make_user, make_chat, make_message
):
    third = make_user()
    chat = make_chat(user, [other_user, third])  # `user` owns it.
    theirs = make_message(chat, other_user)

    with pytest.raises(Forbidden):
        services.message_delete(actor=third, chat_id=chat.pk, message_id=theirs.pk)
    services.message_delete(actor=user, chat_id=chat.pk, message_id=theirs.pk)

    assert Message.objects.get(pk=theirs.pk).deleted


def test_reactions_are_idempotent_and_announced_once_per_change(
    user, other_user, make_chat, make_message, published, django_capture_on_commit_callbacks
):
    chat = make_chat(user, [other_user])
    message = make_message(chat, user)
    published.clear()

    with django_capture_on_commit_callbacks(execute=True):
        added = [
            services.reaction_add(user=who, chat_id=chat.pk, message_id=message.pk, emoji=emoji)
            for who, emoji in [(user, "👍"), (other_user, "👍"), (user, "👍"), (user, ":tada:")]
        ]
        removed = [
            services.reaction_remove(user=user, chat_id=chat.pk, message_id=message.pk, emoji=e)
            for e in [":tada:", ":tada:"]
        ]

    assert added == [True, True, False, True] and removed == [True, False]
    changes = change_events(published)
    assert [seq for seq, *_ in changes] == [2, 3, 4, 5]
    assert [shown["reactions"] for *_, shown in changes] == [
        {"👍": [user.pk]},
        {"👍": [user.pk, other_user.pk]},
        {"👍": [user.pk, other_user.pk], ":tada:": [user.pk]},
        {"👍": [user.pk, other_user.pk]},
    ]


def test_a_message_takes_at_most_20_different_emoji(user, other_user, make_chat, make_message):
    chat = make_chat(user, [other_user])
    message = make_message(chat, user)
    for n in range(20):
        services.reaction_add(user=user, chat_id=chat.pk, message_id=message.pk, emoji=f":e{n}:")

    with pytest.raises(ApplicationError) as error:
        services.reaction_add(user=user, chat_id=chat.pk, message_id=message.pk, emoji=":e20:")
    # One of the 20 already there is fine, by anyone.
    services.reaction_add(user=other_user, chat_id=chat.pk, message_id=message.pk, emoji=":e0:")

    assert error.value.field == "emoji"
    assert Reaction.objects.filter(message=message).values("emoji").distinct().count() == 20


def test_a_deleted_message_takes_no_reaction_and_losing_one_is_fine(user, make_chat, make_message):
    chat = make_chat(user)
    message = make_message(chat, user)
    services.message_delete(actor=user, chat_id=chat.pk, message_id=message.pk)

    with pytest.raises(NotFound):
        services.reaction_add(user=user, chat_id=chat.pk, message_id=message.pk, emoji="👍")
    assert not services.reaction_remove(
        user=user, chat_id=chat.pk, message_id=message.pk, emoji="👍"
    )


def test_unread_counts_and_last_message_skip_tombstones(
    client_for, user, other_user, make_chat, make_message
):
    chat = make_chat(user, [other_user])
    kept = make_message(chat, other_user, "kept")
    gone = make_message(chat, other_user, "gone")
    services.message_delete(actor=other_user, chat_id=chat.pk, message_id=gone.pk)

    body = client_for(user).get(f"/chats/{chat.pk}").json()

    assert body["unread_count"] == 1
    assert body["last_message"]["id"] == kept.pk


# --- A user's deletion ----------------------------------------------------------------------------


def test_deleting_a_user_keeps_history_whole_as_tombstones(
    user,
    other_user,
    make_user,
    make_chat,
    make_message,
    published,
    django_capture_on_commit_callbacks,
):
    third = make_user()
    chat = make_chat(other_user, [user, third])  # `other_user` owns it, joined first.
    theirs = make_message(chat, other_user, "bye")
    mine = make_message(chat, user, "stays")
    services.reaction_add(user=other_user, chat_id=chat.pk, message_id=mine.pk, emoji="👋")
    services.read_cursor_advance(reader=third, chat_id=chat.pk, message_id=mine.pk)
    published.clear()

    with django_capture_on_commit_callbacks(execute=True):
        other_user.delete()

    tombstone = Message.objects.get(pk=theirs.pk)
    assert (tombstone.author_id, tombstone.deleted, tombstone.text) == (
        theirs.author_id,
        True,
        "",
    )
    assert Message.objects.filter(chat=chat).count() == 2
    assert not Reaction.objects.exists()
    assert ChatMember.objects.get(chat=chat, user=third).last_read_message_id == mine.pk
    chat.refresh_from_db()
    assert chat.owner_id == user.pk  # Handed to the member who joined earliest.
    assert [(seq, mid) for seq, mid, *_ in change_events(published)] == [
        (4, theirs.pk),
        (5, mine.pk),
    ]
