"""What sockets read from the database: where each of a user's chats stands, who is a member of
a chat now, and what a socket missed. Plain functions, run through `database_sync_to_async`
by their callers (messaging/delivery.py, messaging/fanout.py).

Membership is read here in the forms of messaging/membership.py only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from django.db import connection

from messaging import events
from messaging.history import MessageRow, changes_between, one_snapshot
from messaging.membership import MEMBER_TABLE, same_membership_sql
from messaging.models import Chat
from messaging.reactions import Reactions
from messaging.streams import Found

CHAT_TABLE = Chat._meta.db_table
# Most messages one gap fill reads in one query.
FILL_PAGE = 500


class Membership(NamedTuple):
    """A user's membership of a chat, and where the chat stands now."""

    chat_id: int
    joined_revision: int
    joined_seq: int
    joined_message_id: int | None
    chat_seq: int
    chat_revision: int
    newest_id: int | None  # The newest message that is not deleted.


_MEMBERSHIPS_SQL = f"""
SELECT member.chat_id, member.joined_revision, member.joined_seq, member.joined_message_id,
    chat.seq, chat.revision, chat.last_message_id
FROM {MEMBER_TABLE} AS member JOIN {CHAT_TABLE} AS chat ON chat.id = member.chat_id
WHERE member.user_id = %s {{only}}
"""


def memberships(user_id: int, chat_id: int | None = None) -> dict[int, Membership]:
    """The user's memberships (of one chat, when given), by chat id."""
    sql = _MEMBERSHIPS_SQL.format(only="" if chat_id is None else "AND member.chat_id = %s")
    params = [user_id] if chat_id is None else [user_id, chat_id]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {row[0]: Membership(*row) for row in cursor.fetchall()}


_MEMBERSHIPS_OF_USERS_SQL = f"""
SELECT member.user_id, member.chat_id, member.joined_revision, member.joined_seq,
    member.joined_message_id, chat.seq, chat.revision, chat.last_message_id
FROM {MEMBER_TABLE} AS member JOIN {CHAT_TABLE} AS chat ON chat.id = member.chat_id
WHERE member.user_id IN ({{users}})
"""


def memberships_of_users(user_ids: list[int]) -> dict[int, dict[int, Membership]]:
    """`memberships(user_id)` of each of the users, in one statement (users without any
    membership are absent)."""
    if not user_ids:
        return {}
    sql = _MEMBERSHIPS_OF_USERS_SQL.format(users=", ".join(["%s"] * len(user_ids)))
    found: dict[int, dict[int, Membership]] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, list(user_ids))
        for user_id, *row in cursor.fetchall():
            found.setdefault(user_id, {})[row[0]] = Membership(*row)
    return found


class ChatMembers(NamedTuple):
    """Who is a member of a chat as of `revision`: user id -> joined_revision."""

    revision: int
    joined: dict[int, int]


# A chat that does not exist (deleted): nobody is a member, whatever revision asks.
NO_CHAT = ChatMembers(revision=2**63 - 1, joined={})

_MEMBERS_SQL = f"""
SELECT chat.revision, member.user_id, member.joined_revision
FROM {CHAT_TABLE} AS chat LEFT JOIN {MEMBER_TABLE} AS member ON member.chat_id = chat.id
WHERE chat.id = %s
"""


def chat_members(chat_id: int) -> ChatMembers:
    """One statement, so the revision and the members are of the same moment."""
    with connection.cursor() as cursor:
        cursor.execute(_MEMBERS_SQL, [chat_id])
        rows = cursor.fetchall()
    if not rows:
        return NO_CHAT
    joined = {user_id: joined for _, user_id, joined in rows if user_id is not None}
    return ChatMembers(revision=rows[0][0], joined=joined)


_CHAT_SEQ_SQL = f"SELECT seq FROM {CHAT_TABLE} WHERE id = %s"
_SAME_MEMBERSHIP_SQL = f"SELECT {same_membership_sql('%s', '%s', '%s')}"


class Missed(NamedTuple):
    """What a socket missed of a chat: changes in seq order, up to `up_to_seq` (the chat
    was at `chat_seq`: a larger gap is read a page at a time)."""

    found: list[Found]
    up_to_seq: int
    chat_seq: int


def missed_changes(
    *, chat_id: int, user_id: int, joined_revision: int, after_seq: int
) -> Missed | None:
    """The chat's changes after `after_seq` (at most FILL_PAGE of them), or None when the
    user's membership that began at `joined_revision` has ended.

    The messages are read before the membership: if it holds after they were read, it held
    while every one of them committed (a membership row, once gone, never comes back under the
    same revision), so nothing committed after a removal is returned. All of it is read in one
    snapshot (`one_snapshot`), so the page ends where the chat's seq said; each message comes
    with its reactions from one statement, as of its seq."""
    with one_snapshot():
        with connection.cursor() as cursor:
            cursor.execute(_CHAT_SEQ_SQL, [chat_id])
            row = cursor.fetchone()
        chat_seq = row[0] if row else after_seq
        up_to_seq = min(chat_seq, after_seq + FILL_PAGE)
        rows = changes_between(chat_id, after_seq, up_to_seq) if up_to_seq > after_seq else []
        with connection.cursor() as cursor:
            cursor.execute(_SAME_MEMBERSHIP_SQL, [chat_id, user_id, joined_revision])
            (still_member,) = cursor.fetchone()
        if not still_member:
            return None
        return Missed(found=_found(rows), up_to_seq=up_to_seq, chat_seq=chat_seq)


def _found(messages: list[tuple[MessageRow, Reactions]]) -> list[Found]:
    def found(row: MessageRow, reactions: Reactions) -> Found:
        return Found(
            seq=row.seq,
            message_id=row.pk,
            deleted=row.deleted,
            new_frame=lambda: events.new_message_frame(row, reactions),
            updated_frame=lambda: events.message_updated_frame(row, reactions),
        )

    return [found(row, reactions) for row, reactions in messages]


class TokenState(NamedTuple):
    token_version: int
    is_active: bool


def token_states(user_ids: Iterable[int]) -> dict[int, TokenState]:
    """Each user's current token version and whether they are active; deleted users are
    absent."""
    from accounts.models import User

    ids = list(user_ids)
    rows = User.objects.filter(pk__in=ids).values_list("pk", "token_version", "is_active")
    return {pk: TokenState(version, active) for pk, version, active in rows}
