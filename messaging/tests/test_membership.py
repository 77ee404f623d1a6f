"""The membership rule has one definition (messaging/membership.py); every form of it that
the code runs, ORM or SQL, must agree with it on the same cases."""

from __future__ import annotations

import pytest
from django.db import connection

from messaging import history, positions, services
from messaging.membership import is_member, member_exists_sql, same_membership_sql
from messaging.models import Chat, ChatMember

pytestmark = pytest.mark.django_db


@pytest.fixture
def cases(user, other_user, make_user):
    """(chat, user) pairs covering: member, never a member, removed, removed and back, a
    member of another chat only, and a chat that does not exist."""
    stranger, leaver, returner = make_user(), make_user(), make_user()
    chat = services.chat_create(creator=user, member_ids=[other_user.pk, leaver.pk, returner.pk])
    elsewhere = services.chat_create(creator=stranger)
    chat.members.remove(leaver)
    chat.members.remove(returner)
    chat.members.add(returner)
    missing = Chat(pk=chat.pk + elsewhere.pk + 1000)
    users = [user, other_user, stranger, leaver, returner]
    return [(c, u) for c in (chat, elsewhere, missing) for u in users]


def sql_member(chat_id: int, user_id: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {member_exists_sql('%s', '%s')}", [chat_id, user_id])
        return bool(cursor.fetchone()[0])


def test_every_form_of_the_membership_rule_agrees(cases):
    for chat, user in cases:
        expected = is_member(chat_id=chat.pk, user_id=user.pk)
        assert expected == ChatMember.objects.filter(chat_id=chat.pk, user=user).exists()
        forms = {
            "Chat.objects.for_user": Chat.objects.for_user(user).filter(pk=chat.pk).exists(),
            "member_exists_sql": sql_member(chat.pk, user.pk),
            "history.member_cursors": user.pk
            in {user_id for user_id, _ in history.member_cursors(chat.pk)[0]},
            "positions.memberships": chat.pk in positions.memberships(user.pk),
            "positions.chat_members": user.pk in positions.chat_members(chat.pk).joined,
        }
        disagreeing = {name: found for name, found in forms.items() if found != expected}
        assert disagreeing == {}, (chat.pk, user.pk, expected)


def test_the_send_statement_refuses_exactly_the_non_members(cases):
    for chat, user in cases:
        try:
            services.message_send(author=user, chat_id=chat.pk, text="hi")
            sent = True
        except services.messages.NotFound:
            sent = False
        assert sent == is_member(chat_id=chat.pk, user_id=user.pk), (chat.pk, user.pk)


def test_the_same_membership_is_one_continuous_membership(cases):
    """A socket delivering for the membership that began at revision R must notice both an
    end and a return (a new membership, a new revision)."""
    for chat, user in cases:
        row = ChatMember.objects.filter(chat_id=chat.pk, user=user).first()
        revisions = {0, 1, 2, 3, 4, 5, 6, 7} | ({row.joined_revision} if row else set())
        for revision in revisions:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT {same_membership_sql('%s', '%s', '%s')}",
                    [chat.pk, user.pk, revision],
                )
                same = bool(cursor.fetchone()[0])
            assert same == (row is not None and row.joined_revision == revision)
