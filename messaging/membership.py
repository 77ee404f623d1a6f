"""The membership rule, in one place: a user is a member of a chat while a ChatMember row for
the pair exists. Nothing else (no flag, no cache) decides it.

Every check of the rule is one of the forms below; `messaging/tests/test_membership.py` runs
each SQL form against the ORM form on the same cases, so they cannot drift apart.
- ORM: `is_member`, `Chat.objects.for_user` (a join on the same rows).
- SQL: `member_exists_sql`, an EXISTS over the same rows, used inside statements that must
  decide membership in the same snapshot as the rest of their work (the send statement locks
  the chat row and checks membership at once; a gap fill reads messages, then checks).

Sockets also keep, per chat, the `joined_revision` of the membership they deliver for: a
membership row is never re-created under the same revision, so comparing it tells "still the
same membership" from "left and came back" (messaging/delivery.py).
"""

from __future__ import annotations

from messaging.models import ChatMember

MEMBER_TABLE = ChatMember._meta.db_table


def is_member(*, chat_id: int, user_id: int) -> bool:
    return ChatMember.objects.filter(chat_id=chat_id, user_id=user_id).exists()


def member_exists_sql(chat_column: str, user_placeholder: str) -> str:
    """`EXISTS (...)`: the user named by the placeholder is a member of the chat in the column."""
    return (
        f"EXISTS (SELECT 1 FROM {MEMBER_TABLE} AS member "
        f"WHERE member.chat_id = {chat_column} AND member.user_id = {user_placeholder})"
    )


def same_membership_sql(chat_column: str, user_placeholder: str, revision_placeholder: str) -> str:
    """`EXISTS (...)`: the user is still a member through the membership that began at the
    given revision (not one that ended, nor a later one after leaving and coming back)."""
    return (
        f"EXISTS (SELECT 1 FROM {MEMBER_TABLE} AS member "
        f"WHERE member.chat_id = {chat_column} AND member.user_id = {user_placeholder} "
        f"AND member.joined_revision = {revision_placeholder})"
    )
