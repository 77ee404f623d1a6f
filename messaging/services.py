"""Every write of the messaging app: atomic, with its events sent only after commit.

Both the REST views and the WebSocket consumer call these; neither writes on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import User
from chatproject.errors import ApplicationError, NotFound
from messaging import events
from messaging.models import Chat, ChatMember, Message


@dataclass(frozen=True)
class SentMessage:
    message: Message
    # False when `client_id` matched an earlier message: that one is returned, nothing new.
    created: bool
    # The chat's previous message id, so a socket can tell a gap from a reordering.
    previous_id: int | None

    @cached_property
    def frame(self) -> str:
        """The `new_message` frame, encoded once for the broadcast and the sender's copy."""
        return events.new_message_frame(self.message)


def chat_create(*, creator: User, title: str = "", member_ids: Iterable[int] = ()) -> Chat:
    """Create a chat whose members are the creator plus `member_ids` (each once)."""
    wanted = set(member_ids) - {creator.pk}
    found = set(User.objects.filter(pk__in=wanted).values_list("pk", flat=True))
    unknown = sorted(wanted - found)
    if unknown:
        raise ApplicationError(
            f"Unknown user ids: {', '.join(map(str, unknown))}.", field="member_ids"
        )
    with transaction.atomic():
        chat = Chat.objects.create(title=title)
        chat_members_add(chat=chat, user_ids=[creator.pk, *sorted(found)])
    return chat


def chat_members_add(*, chat: Chat, user_ids: Iterable[int]) -> None:
    """Add members; each gets its read cursor with the membership row (see signals.py)."""
    chat.members.add(*user_ids)


def message_send(
    *, author: User, chat_id: int, text: str, client_id: str | None = None
) -> SentMessage:
    """Store a message and announce it after commit.

    The chat row is locked for the whole transaction, so the messages of one chat commit in
    id order: a client catching up with `after=ID` can never skip one committed late.
    """
    if connection.vendor == "postgresql":
        return _message_send_in_one_statement(
            author=author, chat_id=chat_id, text=text, client_id=client_id
        )
    with transaction.atomic():
        chat = (
            Chat.objects.select_for_update(of=("self",))
            .filter(pk=chat_id, memberships__user=author)
            .only("id", "last_message_id")
            .first()
        )
        if chat is None:
            raise NotFound()
        if client_id is not None:
            earlier = Message.objects.filter(
                chat_id=chat_id, author=author, client_id=client_id
            ).first()
            if earlier is not None:
                return SentMessage(message=earlier, created=False, previous_id=None)
        previous_id = chat.last_message_id
        message = Message.objects.create(
            chat_id=chat_id, author=author, text=text, client_id=client_id
        )
        Chat.objects.filter(pk=chat_id).update(
            last_message=message, last_activity_at=message.created_at
        )
        # Writing a message means having read everything up to it.
        ChatMember.objects.filter(chat_id=chat_id, user=author).update(last_read_message=message)
        return _announced(message, previous_id)


# message_send on PostgreSQL, as one statement: lock the chat row (checking membership in the
# same breath), find an earlier message with this client_id, else insert the message and move
# the chat's last message and the author's read cursor to it. Outside a transaction the
# statement is its own, so the chat row stays locked for no client round trip at all (the ORM
# version above holds it across six; under load each costs a thread wake-up, and a room's
# sends queue on that lock: docs/performance.md). The INSERT reads its row from `locked`, so
# the lock is taken before the message gets its id, and a chat's messages still commit in id
# order. ON CONFLICT covers a same-client_id send that committed while this one waited for
# the lock (invisible to this statement's snapshot): nothing is inserted and the caller gets
# the original, as from the ORM version.
_SEND_SQL = """
WITH locked AS (
    SELECT chat.id, chat.last_message_id FROM messaging_chat AS chat
    WHERE chat.id = %(chat_id)s AND EXISTS (
        SELECT 1 FROM messaging_chatmember AS member
        WHERE member.chat_id = chat.id AND member.user_id = %(author_id)s
    )
    FOR UPDATE OF chat
), earlier AS (
    SELECT message.id, message.text, message.created_at FROM messaging_message AS message
    WHERE message.chat_id = %(chat_id)s AND message.author_id = %(author_id)s
        AND message.client_id = %(client_id)s
), inserted AS (
    INSERT INTO messaging_message (chat_id, author_id, text, created_at, client_id)
    SELECT locked.id, %(author_id)s, %(text)s, %(created_at)s, %(client_id)s FROM locked
    WHERE NOT EXISTS (SELECT 1 FROM earlier)
    ON CONFLICT (author_id, chat_id, client_id) WHERE client_id IS NOT NULL DO NOTHING
    RETURNING id
), chat_moved AS (
    UPDATE messaging_chat AS chat
    SET last_message_id = inserted.id, last_activity_at = %(created_at)s
    FROM inserted WHERE chat.id = %(chat_id)s
), cursor_moved AS (
    UPDATE messaging_chatmember AS member SET last_read_message_id = inserted.id
    FROM inserted WHERE member.chat_id = %(chat_id)s AND member.user_id = %(author_id)s
)
SELECT locked.last_message_id, inserted.id, earlier.id, earlier.text, earlier.created_at
FROM locked LEFT JOIN inserted ON TRUE LEFT JOIN earlier ON TRUE
"""


def _message_send_in_one_statement(
    *, author: User, chat_id: int, text: str, client_id: str | None
) -> SentMessage:
    params = _send_params(author=author, chat_id=chat_id, text=text, client_id=client_id)
    with connection.cursor() as cursor:
        cursor.execute(_SEND_SQL, params)
        row = cursor.fetchone()
    return _sent_from_row(row, author=author, params=params)


def message_send_many(requests: list[dict[str, Any]]) -> list[SentMessage | ApplicationError]:
    """`message_send` for each request (its keyword arguments), in order, in the current
    transaction; a request refused by a rule gets its error in its place in the result.

    On PostgreSQL the statements go in one pipelined round trip (psycopg's pipeline mode,
    below Django's cursor wrappers): the writer thread waits once for the batch, not once per
    message, each wait being a chance to lose the GIL to the event loop for milliseconds."""
    if connection.vendor != "postgresql":
        return [_refusal_or(partial(message_send, **request)) for request in requests]
    every_params = [_send_params(**request) for request in requests]
    connection.ensure_connection()
    pg = connection.connection
    with pg.pipeline():
        cursors = [pg.cursor() for _ in every_params]
        for cursor, params in zip(cursors, every_params, strict=True):
            cursor.execute(_SEND_SQL, params)
    outcomes: list[SentMessage | ApplicationError] = []
    for cursor, request, params in zip(cursors, requests, every_params, strict=True):
        row = cursor.fetchone()
        cursor.close()
        outcomes.append(
            _refusal_or(partial(_sent_from_row, row, author=request["author"], params=params))
        )
    return outcomes


def _refusal_or(call: Callable[[], SentMessage]) -> SentMessage | ApplicationError:
    try:
        return call()
    except ApplicationError as exc:
        return exc


def _send_params(
    *, author: User, chat_id: int, text: str, client_id: str | None = None
) -> dict[str, Any]:
    return {
        "chat_id": chat_id,
        "author_id": author.pk,
        "text": text,
        "created_at": timezone.now(),
        "client_id": client_id,
    }


def _sent_from_row(row: tuple | None, *, author: User, params: dict[str, Any]) -> SentMessage:
    """The outcome of one `_SEND_SQL` statement, its events registered for after commit."""
    if row is None:
        raise NotFound()
    previous_id, inserted_id, earlier_id, earlier_text, earlier_created_at = row
    chat_id, client_id = params["chat_id"], params["client_id"]
    fields = {"chat_id": chat_id, "author_id": author.pk, "client_id": client_id}
    if inserted_id is not None:
        message = Message(
            pk=inserted_id, text=params["text"], created_at=params["created_at"], **fields
        )
        return _announced(_loaded(message), previous_id)
    if earlier_id is not None:
        earlier = Message(pk=earlier_id, text=earlier_text, created_at=earlier_created_at, **fields)
        return SentMessage(message=_loaded(earlier), created=False, previous_id=None)
    # The ON CONFLICT case: the original committed after this statement's snapshot was taken.
    original = Message.objects.get(chat_id=chat_id, author=author, client_id=client_id)
    return SentMessage(message=original, created=False, previous_id=None)


def _announced(message: Message, previous_id: int | None) -> SentMessage:
    """A new message, announced after commit with the frame its sender gets too."""
    sent = SentMessage(message=message, created=True, previous_id=previous_id)
    events.on_commit_new_message(message, previous_id=previous_id, frame=sent.frame)
    return sent


def _loaded(message: Message) -> Message:
    """Mark an instance built from a row as one loaded from the database, as a query's are."""
    message._state.adding = False
    message._state.db = connection.alias
    return message


def read_cursor_advance(
    *, reader: User, chat_id: int, message_id: int, origin: str | None = None
) -> bool:
    """Move the reader's cursor forward to `message_id`; True when it moved.

    `origin` names the socket that asked, which the `message_read` event skips.
    """
    with transaction.atomic():
        if not ChatMember.objects.filter(chat_id=chat_id, user=reader).exists():
            raise NotFound()
        author_id = (
            Message.objects.filter(pk=message_id, chat_id=chat_id)
            .values_list("author_id", flat=True)
            .first()
        )
        if author_id is None:
            raise NotFound("No such message in this chat.")
        moved = (
            ChatMember.objects.filter(chat_id=chat_id, user=reader)
            .filter(Q(last_read_message__isnull=True) | Q(last_read_message_id__lt=message_id))
            .update(last_read_message_id=message_id)
        )
        if moved:
            events.on_commit_message_read(
                chat_id=chat_id,
                reader_id=reader.pk,
                author_id=author_id,
                message_id=message_id,
                origin=origin,
            )
    return bool(moved)
