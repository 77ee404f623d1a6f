"""Chat and membership services, and the bookkeeping every membership change gets, however it
is made (services, `chat.members.add()`, `ChatMember.objects.create()`, deletes, the admin)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction
from django.test import override_settings

from chatproject.errors import ApplicationError, Forbidden, NotFound
from messaging import services
from messaging.models import Chat, ChatMember

pytestmark = pytest.mark.django_db


def hinted(published: list[tuple[str, dict]]) -> list[tuple[str, int]]:
    """(user group, chat id) of every membership hint published."""
    return sorted(
        (group, payload["chat_id"])
        for group, payload in published
        if payload["type"] == "user.membership"
    )


def member(chat: Chat, user) -> ChatMember:
    return ChatMember.objects.get(chat=chat, user=user)


# --- Creating -------------------------------------------------------------------------------------


def test_chat_create_makes_a_group_owned_by_its_creator(user, other_user):
    chat = services.chat_create(creator=user, title="t", member_ids=[other_user.pk, user.pk])

    assert (chat.kind, chat.owner_id, chat.title) == ("group", user.pk, "t")
    assert set(chat.members.values_list("pk", flat=True)) == {user.pk, other_user.pk}


def test_chat_create_refuses_unknown_or_inactive_ids_and_creates_nothing(user, make_user):
    inactive = make_user(is_active=False)
    for ids in ([424242], [inactive.pk]):
        with pytest.raises(ApplicationError) as error:
            services.chat_create(creator=user, member_ids=ids)
        assert error.value.field == "member_ids"
    assert not Chat.objects.exists()


@override_settings(CHAT_MAX_MEMBERS=3)
def test_chat_max_members_bounds_every_way_of_adding(user, make_user):
    others = [make_user() for _ in range(3)]
    with pytest.raises(ApplicationError):
        services.chat_create(creator=user, member_ids=[u.pk for u in others])
    chat = services.chat_create(creator=user, member_ids=[others[0].pk, others[1].pk])

    for add in (
        lambda: services.chat_members_add(actor=user, chat_id=chat.pk, user_ids=[others[2].pk]),
        lambda: chat.members.add(others[2]),
        lambda: ChatMember.objects.create(chat=chat, user=others[2]),
    ):
        with pytest.raises(ApplicationError), transaction.atomic():
            add()
    assert chat.members.count() == 3


def test_a_direct_chat_is_made_once_for_either_side(user, other_user):
    chat, created = services.chat_direct_open(user=user, other_id=other_user.pk)
    again, created_again = services.chat_direct_open(user=other_user, other_id=user.pk)

    assert created and not created_again and again.pk == chat.pk
    assert (chat.kind, chat.title, chat.owner_id) == ("direct", "", None)
    assert set(chat.members.values_list("pk", flat=True)) == {user.pk, other_user.pk}


def test_a_direct_chat_with_yourself_or_an_unknown_or_inactive_user_is_refused(user, make_user):
    inactive = make_user(is_active=False)
    for other_id in (user.pk, 424242, inactive.pk):
        with pytest.raises(ApplicationError) as error:
            services.chat_direct_open(user=user, other_id=other_id)
        assert error.value.field == "user_id"
    assert not Chat.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_first_calls_from_both_sides_make_one_direct_chat(make_user):
    def open_chat(me, other, barrier: threading.Barrier, chats: list[int]) -> None:
        try:
            barrier.wait()
            chats.append(services.chat_direct_open(user=me, other_id=other.pk)[0].pk)
        finally:
            connection.close()

    for _ in range(5):
        one, two = make_user(), make_user()
        barrier = threading.Barrier(4)
        chats: list[int] = []
        threads = [
            threading.Thread(target=open_chat, args=(*pair, barrier, chats))
            for pair in [(one, two), (two, one), (one, two), (two, one)]
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert len(chats) == 4 and len(set(chats)) == 1
        assert Chat.objects.filter(kind="direct", members=one).count() == 1


# --- Changing -------------------------------------------------------------------------------------


def test_only_the_owner_renames_adds_and_removes_others(user, other_user, make_user):
    third = make_user()
    chat = services.chat_create(creator=user, member_ids=[other_user.pk])

    for change in (
        lambda: services.chat_rename(actor=other_user, chat_id=chat.pk, title="mine now"),
        lambda: services.chat_members_add(actor=other_user, chat_id=chat.pk, user_ids=[third.pk]),
        lambda: services.chat_member_remove(actor=other_user, chat_id=chat.pk, user_id=user.pk),
    ):
        with pytest.raises(Forbidden):
            change()
    services.chat_rename(actor=user, chat_id=chat.pk, title="renamed")
    services.chat_members_add(actor=user, chat_id=chat.pk, user_ids=[third.pk, other_user.pk])
    services.chat_member_remove(actor=user, chat_id=chat.pk, user_id=other_user.pk)

    chat.refresh_from_db()
    assert chat.title == "renamed"
    assert set(chat.members.values_list("pk", flat=True)) == {user.pk, third.pk}


def test_a_stranger_changes_nothing_and_learns_nothing(user, other_user, make_user):
    stranger = make_user()
    chat = services.chat_create(creator=user, member_ids=[other_user.pk])

    changes = [
        lambda chat_id: services.chat_rename(actor=stranger, chat_id=chat_id, title="x"),
        lambda chat_id: services.chat_members_add(
            actor=stranger, chat_id=chat_id, user_ids=[stranger.pk]
        ),
        lambda chat_id: services.chat_member_remove(
            actor=stranger, chat_id=chat_id, user_id=other_user.pk
        ),
        lambda chat_id: services.chat_leave(user=stranger, chat_id=chat_id),
    ]
    for chat_id in (chat.pk, chat.pk + 1000):
        for change in changes:
            with pytest.raises(NotFound) as error:
                change(chat_id)
            assert error.value.detail == "Not found."
    assert chat.members.count() == 2


def test_removing_a_user_who_is_not_a_member_is_not_found(user, other_user):
    chat = services.chat_create(creator=user)

    with pytest.raises(NotFound):
        services.chat_member_remove(actor=user, chat_id=chat.pk, user_id=other_user.pk)


def test_a_member_removes_themselves_and_an_owner_who_leaves_hands_over(
    user, other_user, make_user
):
    first_joiner, later = make_user(), make_user()
    chat = services.chat_create(creator=user, member_ids=[first_joiner.pk])
    services.chat_members_add(actor=user, chat_id=chat.pk, user_ids=[later.pk, other_user.pk])
    services.chat_member_remove(actor=other_user, chat_id=chat.pk, user_id=other_user.pk)

    services.chat_leave(user=user, chat_id=chat.pk)

    chat.refresh_from_db()
    assert chat.owner_id == first_joiner.pk
    services.chat_leave(user=first_joiner, chat_id=chat.pk)
    services.chat_leave(user=later, chat_id=chat.pk)
    chat.refresh_from_db()
    assert chat.owner_id is None and chat.members.count() == 0


def test_a_direct_chat_cannot_be_renamed_added_to_or_left(user, other_user, make_user):
    chat, _ = services.chat_direct_open(user=user, other_id=other_user.pk)

    for change in (
        lambda: services.chat_rename(actor=user, chat_id=chat.pk, title="x"),
        lambda: services.chat_members_add(actor=user, chat_id=chat.pk, user_ids=[make_user().pk]),
        lambda: services.chat_member_remove(actor=user, chat_id=chat.pk, user_id=other_user.pk),
        lambda: services.chat_leave(user=user, chat_id=chat.pk),
    ):
        with pytest.raises(ApplicationError) as error:
            change()
        assert error.value.http_status == 400
    assert chat.members.count() == 2


def test_adding_unknown_or_inactive_users_changes_nothing(user, other_user, make_user):
    inactive = make_user(is_active=False)
    chat = services.chat_create(creator=user)

    for ids in ([other_user.pk, 424242], [other_user.pk, inactive.pk]):
        with pytest.raises(ApplicationError) as error:
            services.chat_members_add(actor=user, chat_id=chat.pk, user_ids=ids)
        assert error.value.field == "user_ids"
    assert chat.members.count() == 1


# --- Bookkeeping, whatever the path ---------------------------------------------------------------


ADD_PATHS = {
    "service": lambda chat, user: services.chat_members_add(
        actor=None, chat_id=chat.pk, user_ids=[user.pk]
    ),
    "m2m": lambda chat, user: chat.members.add(user),
    "reverse m2m": lambda chat, user: user.chats.add(chat),
    "row": lambda chat, user: ChatMember.objects.create(chat=chat, user=user),
}


@pytest.mark.parametrize("path", ADD_PATHS)
def test_a_member_added_by_any_path_starts_at_the_newest_message_and_is_announced(
    path, user, other_user, make_message, published, django_capture_on_commit_callbacks
):
    chat = services.chat_create(creator=user)
    make_message(chat, user, "before")
    newest = make_message(chat, user, "history")
    chat.refresh_from_db()
    published.clear()

    with django_capture_on_commit_callbacks(execute=True):
        ADD_PATHS[path](chat, other_user)

    joined = member(chat, other_user)
    assert joined.last_read_message_id == joined.joined_message_id == newest.pk
    assert (joined.joined_seq, joined.joined_revision) == (2, chat.revision + 1)
    assert hinted(published) == [(f"user.{other_user.pk}", chat.pk)]
    infos = [p for group, p in published if p["type"] == "chat.info"]
    assert [info["rev"] for info in infos] == [chat.revision + 1]
    assert f'"id":{other_user.pk}' in infos[0]["frame"]
    assert services.chat_info_load(chat.pk)[1]["members"][-1]["id"] == other_user.pk


REMOVE_PATHS = {
    "service": lambda chat, user: services.chat_member_remove(
        actor=user, chat_id=chat.pk, user_id=user.pk
    ),
    "m2m remove": lambda chat, user: chat.members.remove(user),
    "m2m clear of the user": lambda chat, user: user.chats.clear(),
    "row delete": lambda chat, user: ChatMember.objects.filter(chat=chat, user=user).delete(),
}


@pytest.mark.parametrize("path", REMOVE_PATHS)
def test_a_member_removed_by_any_path_is_told_and_the_chat_revised(
    path, user, other_user, published, django_capture_on_commit_callbacks
):
    chat = services.chat_create(creator=user, member_ids=[other_user.pk])
    chat.refresh_from_db()
    published.clear()

    with django_capture_on_commit_callbacks(execute=True):
        REMOVE_PATHS[path](chat, other_user)

    assert hinted(published) == [(f"user.{other_user.pk}", chat.pk)]
    assert Chat.objects.get(pk=chat.pk).revision == chat.revision + 1


def test_an_owner_removed_by_any_path_hands_the_chat_over(user, other_user):
    chat = services.chat_create(creator=user, member_ids=[other_user.pk])

    chat.members.remove(user)

    assert Chat.objects.get(pk=chat.pk).owner_id == other_user.pk


def test_a_member_row_given_to_another_user_is_a_leave_and_a_fresh_join(
    user, other_user, make_user, make_message, published, django_capture_on_commit_callbacks
):
    newcomer = make_user()
    chat = services.chat_create(creator=user, member_ids=[other_user.pk])
    theirs = make_message(chat, other_user, "theirs")
    row = member(chat, user)
    services.read_cursor_advance(reader=user, chat_id=chat.pk, message_id=theirs.pk)
    published.clear()

    with django_capture_on_commit_callbacks(execute=True):
        row.user = newcomer
        row.save()

    assert not ChatMember.objects.filter(chat=chat, user=user).exists()
    fresh = member(chat, newcomer)
    assert fresh.last_read_message_id == chat.messages.get().pk
    assert hinted(published) == sorted(
        [(f"user.{user.pk}", chat.pk), (f"user.{newcomer.pk}", chat.pk)]
    )


def test_saving_a_stale_chat_writes_only_its_title_and_owner(user, make_message):
    chat = services.chat_create(creator=user)
    stale = Chat.objects.get(pk=chat.pk)
    make_message(chat, user)

    stale.title = "renamed in the admin"
    stale.save()

    chat.refresh_from_db()
    assert chat.title == "renamed in the admin"
    assert chat.seq == 1 and chat.last_message_id is not None  # Not the stale copy's.
    assert chat.revision == stale.revision + 1


def test_a_rename_announces_the_new_chat_info_to_the_chat(
    user, other_user, published, django_capture_on_commit_callbacks
):
    chat = services.chat_create(creator=user, member_ids=[other_user.pk])
    published.clear()

    with django_capture_on_commit_callbacks(execute=True):
        services.chat_rename(actor=user, chat_id=chat.pk, title="New name")
        services.chat_rename(actor=user, chat_id=chat.pk, title="New name")  # No change.

    assert [(group, p["type"]) for group, p in published] == [(f"chat.{chat.pk}", "chat.info")]
    assert '"title":"New name"' in published[0][1]["frame"]
