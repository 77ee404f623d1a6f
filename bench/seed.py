"""The benchmark's data, created once per run straight in the database (never through the API).

Users share one password hash computed once (hashing is slow by design and is not what
is measured); access tokens are minted as login would (accounts.tokens: simplejwt's, with the
token version). The history chat's million messages are one server-side bulk INSERT ... SELECT
generate_series, numbered as the service numbers them: `seq` 1..N in the chat, and the chat's
`seq` at N. Memberships are bulk-created with the columns' defaults (joined at seq and revision
0, before any message: every member sees the whole chat), as a chat made before its first
message would have them.

Needs Django set up (bench.run does it) on the benchmark's own database: `reset()` empties it.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.hashers import make_password
from django.db import connection, transaction

from accounts.models import User
from accounts.tokens import AccessToken
from messaging.models import Chat, ChatMember, Message

TABLES = (
    "messaging_reaction",
    "messaging_message",
    "messaging_chatmember",
    "messaging_chat",
    "accounts_user",
)


@dataclass
class Users:
    ids: list[int]
    tokens: list[str]


def reset() -> None:
    """Empty the benchmark database's tables (it is the bench's own: see bench.run)."""
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")


def users_create(prefix: str, count: int, password_hash: str) -> Users:
    users = User.objects.bulk_create(
        [User(username=f"{prefix}{i}", password=password_hash) for i in range(count)],
        batch_size=2000,
    )
    return Users(ids=[u.pk for u in users], tokens=tokens_for(users))


def tokens_for(users: list[User]) -> list[str]:
    return [str(AccessToken.for_user(user)) for user in users]


def password_hash() -> str:
    return make_password("bench-password-not-for-login")


def chat_create(title: str, user_ids: list[int]) -> int:
    """A chat and its memberships (each membership row is that member's read cursor)."""
    with transaction.atomic():
        chat = Chat.objects.create(title=title)
        ChatMember.objects.bulk_create(
            [ChatMember(chat=chat, user_id=user_id) for user_id in user_ids], batch_size=2000
        )
    return chat.pk


def history_load(chat_id: int, author_id: int, count: int) -> list[int]:
    """Insert `count` messages server-side; return the chat's message ids, oldest first."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO messaging_message
                (chat_id, author_id, text, created_at, client_id, seq, deleted)
            SELECT %s, %s, 'history message number ' || g,
                   now() - make_interval(secs => %s - g), NULL, g, false
            FROM generate_series(1, %s) AS g
            """,
            [chat_id, author_id, count, count],
        )
        cursor.execute("ANALYZE messaging_message")
    ids = list(Message.objects.filter(chat_id=chat_id).order_by("id").values_list("id", flat=True))
    newest = Message.objects.get(pk=ids[-1])
    Chat.objects.filter(pk=chat_id).update(
        last_message=newest, last_activity_at=newest.created_at, seq=count
    )
    return ids
