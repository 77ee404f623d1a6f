"""The reads of a history page, as fixed SQL statements: the members' cursors, then the page
with its reactions.

Built with the ORM, these queries cost about 0.8 ms of CPU per page (building and compiling
each queryset, then turning rows into objects: a third of the request in bench scenario 4);
as fixed statements, about 0.2 ms. All are plain SQL for PostgreSQL and SQLite alike, and every
page is a keyset range (never OFFSET) on an index: (chat_id, id) for `before`/`after` pages,
(chat_id, seq) for `since_seq` pages, so a page costs the same at any depth. A page's messages
and their reactions come from one statement, hence one snapshot: each message as of its seq.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import NamedTuple

from django.db import connection, transaction

from messaging.models import Chat, ChatMember, Message, Reaction
from messaging.reactions import Reactions


class MessageRow(NamedTuple):
    """A message as `events.message_data` reads it (a Message instance has the same names)."""

    pk: int
    chat_id: int
    author_id: int
    text: str
    created_at: datetime
    client_id: str | None
    seq: int
    edited_at: datetime | None
    deleted: bool


class ChatPosition(NamedTuple):
    """Where a chat stood when a request began: its newest message id and its latest seq."""

    newest_id: int | None
    seq: int


# The chat's newest message id (tombstones included: they are in the history too) is read
# once, not once per member row.
_MEMBERS_SQL = f"""
SELECT member.user_id, member.last_read_message_id, chat.seq, newest.id
FROM {ChatMember._meta.db_table} member
JOIN {Chat._meta.db_table} chat ON chat.id = member.chat_id
CROSS JOIN (SELECT MAX(id) AS id FROM {Message._meta.db_table} WHERE chat_id = %s) newest
WHERE member.chat_id = %s
ORDER BY member.user_id
"""

_COLUMNS = "id, chat_id, author_id, text, created_at, client_id, seq, edited_at, deleted"
_PAGE_COLUMNS = ", ".join(f"page.{column}" for column in _COLUMNS.split(", "))
# The page in a subquery (its LIMIT counts messages), joined to its reactions: a message with
# n reactions gives n rows (one with NULLs when it has none), in the page's order, then the
# reactions' (the order they were made in).
_PAGE_SQL = f"""
SELECT {_PAGE_COLUMNS}, reaction.emoji, reaction.user_id
FROM (
    SELECT {_COLUMNS} FROM {Message._meta.db_table}
    WHERE {{bound}} ORDER BY {{order}} LIMIT %(limit)s
) page
LEFT JOIN {Reaction._meta.db_table} reaction ON reaction.message_id = page.id
ORDER BY page.{{page_order}}, reaction.id
"""


# Pages by id are ranges of the (chat_id, id) index. On PostgreSQL they are written as row
# comparisons, which only that index can serve: `chat_id = X AND id > Y ORDER BY id` may be
# planned, for a chat that the statistics say holds most of the table, as a walk of the primary
# key that skips the other chats' rows, every one of them before the page's first row (ids are
# positive, so (X, 0) is below the chat's first message). SQLite seeks only the first column of
# a row comparison (a page deep in a 900,000-message chat: 86 ms against 0.02 ms), and plans
# the plain form on that index anyway. Pages by seq have only the (chat_id, seq) index to use.
def _pages_by_id(direction: str, *, rows: str, plain: str) -> dict[str, str]:
    """The page statement in `direction` for each database: `rows` (PostgreSQL), `plain`."""
    return {
        "postgresql": _PAGE_SQL.format(
            bound=rows, order=f"chat_id {direction}, id {direction}", page_order=f"id {direction}"
        ),
        "sqlite": _PAGE_SQL.format(
            bound=plain, order=f"id {direction}", page_order=f"id {direction}"
        ),
    }


_AFTER_SQL = _pages_by_id(
    "ASC",
    rows="(chat_id, id) > (%(chat)s, %(above)s) AND (chat_id, id) <= (%(chat)s, %(up_to)s)",
    plain="chat_id = %(chat)s AND id > %(above)s AND id <= %(up_to)s",
)
_BEFORE_SQL = _pages_by_id(
    "DESC",
    rows="(chat_id, id) < (%(chat)s, %(below)s) AND (chat_id, id) > (%(chat)s, 0)",
    plain="chat_id = %(chat)s AND id < %(below)s",
)
_SINCE_SEQ_SQL = _PAGE_SQL.format(
    bound="chat_id = %(chat)s AND seq > %(above)s AND seq <= %(up_to)s",
    order="seq ASC",
    page_order="seq ASC",
)


@contextmanager
def one_snapshot() -> Iterator[None]:
    """Every read inside sees the database as of one moment.

    A copy of a message is the message as of its seq (a message's seq is that of its latest
    change): its row and its reactions, when read by two statements, must come from one
    snapshot, else a reaction (or a delete) committed between them shows in a copy that still
    carries the older seq (tests_adversarial/test_copy_consistency.py). History pages read both
    in one statement and need none of this. Outside a transaction this is one REPEATABLE READ
    transaction on PostgreSQL (reads only, so it never fails to serialize; it costs BEGIN, SET
    and COMMIT: three round trips); SQLite's transactions read one snapshot anyway. Inside a
    caller's transaction, the caller decides (a send batch holds its chat's row lock, so
    nothing of that chat commits meanwhile)."""
    if connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


def member_cursors(chat_id: int) -> tuple[list[tuple[int, int | None]], ChatPosition]:
    """Every member's (user_id, last read message id), by user id, and where the chat stands;
    no members for a chat that does not exist."""
    with connection.cursor() as cursor:
        cursor.execute(_MEMBERS_SQL, [chat_id, chat_id])
        rows = cursor.fetchall()
    position = ChatPosition(newest_id=rows[0][3], seq=rows[0][2]) if rows else ChatPosition(None, 0)
    return [(user_id, message_id) for user_id, message_id, _, _ in rows], position


def message_page(
    chat_id: int,
    *,
    limit: int,
    position: ChatPosition,
    after: int | None = None,
    before: int | None = None,
    since_seq: int | None = None,
) -> list[tuple[MessageRow, Reactions]]:
    """Up to `limit` messages of the chat with their reactions, none newer than `position`
    (where the chat stood when the request began): with seq > `since_seq` by increasing seq;
    else with id > `after` oldest first; else newest first (with id < `before` when given)."""
    newest_id = position.newest_id or 0
    params: dict[str, object] = {"chat": chat_id, "limit": limit}
    if since_seq is not None:
        sql = _SINCE_SEQ_SQL
        params.update(above=since_seq, up_to=position.seq)
    elif after is not None:
        sql = _AFTER_SQL[connection.vendor]
        params.update(above=after, up_to=newest_id)
    else:
        sql = _BEFORE_SQL[connection.vendor]
        params.update(below=newest_id + 1 if before is None else min(before, newest_id + 1))
    return _messages_of(sql, params)


def changes_between(
    chat_id: int, after_seq: int, up_to_seq: int
) -> list[tuple[MessageRow, Reactions]]:
    """The messages of the chat whose latest change has a seq in (after_seq, up_to_seq], by
    seq, with their reactions: what a socket missed between two changes it saw
    (messaging/delivery.py)."""
    limit = max(up_to_seq - after_seq, 0)
    params = {"chat": chat_id, "above": after_seq, "up_to": up_to_seq, "limit": limit}
    return _messages_of(_SINCE_SEQ_SQL, params)


def _messages_of(sql: str, params: dict[str, object]) -> list[tuple[MessageRow, Reactions]]:
    """Run a `_PAGE_SQL` statement; each message once, in the statement's order."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    messages: dict[int, tuple[MessageRow, dict[str, list[int]]]] = {}
    for *columns, emoji, user_id in rows:
        message = messages.get(columns[0])
        if message is None:
            message = messages[columns[0]] = (_message_row(*columns), {})
        if emoji is not None:
            message[1].setdefault(emoji, []).append(user_id)
    return list(messages.values())


def _message_row(
    id_: int,
    chat_id: int,
    author_id: int,
    text: str,
    created_at: datetime,
    client_id: str | None,
    seq: int,
    edited_at: datetime | None,
    deleted: bool | int,
) -> MessageRow:
    return MessageRow(
        id_,
        chat_id,
        author_id,
        text,
        _aware(created_at),
        client_id,
        seq,
        _aware(edited_at) if edited_at is not None else None,
        bool(deleted),  # SQLite gives 0 or 1.
    )


def _aware(value: datetime) -> datetime:
    # PostgreSQL's rows carry the time zone; SQLite's are naive UTC, which the ORM would make
    # aware in the connection's time zone (UTC) the same way.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
