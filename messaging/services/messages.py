"""Changes to a chat's messages: send, edit, delete, react; and moving read cursors.

Every change locks the chat's row, takes the chat's next `seq` and stamps the message with it,
so a chat's changes commit in seq order (and its messages in id order): `since_seq=S` and
`after=ID` can never skip one committed late. Each change is announced after commit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property, partial
from typing import Any

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import User
from chatproject.errors import ApplicationError, Forbidden, NotFound
from messaging import events
from messaging.history import one_snapshot
from messaging.membership import member_exists_sql
from messaging.models import Chat, ChatMember, Message, Reaction
from messaging.reactions import MAX_EMOJI_PER_MESSAGE, Reactions, reactions_by_message

MESSAGE_NOT_FOUND = "No such message in this chat."


@dataclass(frozen=True)
class SentMessage:
    message: Message
    # False when `client_id` matched an earlier message: that one is returned, nothing new.
    created: bool
    # The chat's revision when the message committed (what its event carries).
    revision: int = 0
    reactions: Reactions | None = None

    @cached_property
    def frame(self) -> str:
        """The `new_message` frame, encoded once for the broadcast and the sender's copy."""
        return events.new_message_frame(self.message, self.reactions)

    def change(self) -> events.ChatChange:
        message = self.message
        return events.ChatChange(
            chat_id=message.chat_id,
            seq=message.seq,
            revision=self.revision,
            message_id=message.pk,
            created=True,
            frame=self.frame,
        )


@dataclass(frozen=True)
class ChangedMessage:
    """A message as it is after an edit, a deletion or a reaction."""

    message: Message
    reactions: Reactions


# --- Sending ------------------------------------------------------------------------------------


def message_send(
    *, author: User, chat_id: int, text: str, client_id: str | None = None
) -> SentMessage:
    """Store a message and announce it after commit.

    The chat row is locked for the whole transaction, so the messages of one chat commit in
    id order and their changes in seq order. `created_at` is taken under that lock and never
    goes back as ids grow (the chat's activity time is its floor).
    """
    send = _message_send_in_one_statement if connection.vendor == "postgresql" else _message_send
    return send(author=author, chat_id=chat_id, text=text, client_id=client_id)


def _message_send(
    *, author: User, chat_id: int, text: str, client_id: str | None = None
) -> SentMessage:
    """`message_send` with the ORM: any database (SQLite, the development default). The
    send rules exist twice, this and `_SEND_SQL`; messaging/tests/test_send_rules.py runs both
    against the same cases."""
    with transaction.atomic():
        chat = _locked_chat(chat_id, member=author)
        if client_id is not None:
            earlier = Message.objects.filter(
                chat_id=chat_id, author=author, client_id=client_id
            ).first()
            if earlier is not None:
                return _repeat(earlier)
        seq = chat.seq + 1
        message = Message.objects.create(
            chat_id=chat_id,
            author=author,
            text=text,
            client_id=client_id,
            seq=seq,
            created_at=max(timezone.now(), _created_at_floor(chat)),
        )
        Chat.objects.filter(pk=chat_id).update(
            last_message=message, last_activity_at=message.created_at, seq=seq
        )
        # Writing a message means having read everything up to it.
        ChatMember.objects.filter(chat_id=chat_id, user=author).update(last_read_message=message)
        return _announced(message, chat.revision)


def _created_at_floor(chat: Chat) -> datetime:
    """No message is stamped earlier than the chat's newest, tombstones included (a clock that
    stepped back, or another instance's that runs behind, must not make times go back while ids
    go forward), nor earlier than the chat's last activity."""
    newest = (
        Message.objects.filter(chat_id=chat.pk)
        .order_by("-id")
        .values_list("created_at", flat=True)
        .first()
    )
    return max(chat.last_activity_at, newest) if newest else chat.last_activity_at


# message_send on PostgreSQL, as one statement: lock the chat row (checking membership in the
# same breath), find an earlier message with this client_id, else insert the message with the
# chat's next seq and move the chat's last message, seq and activity time and the author's
# read cursor to it. Outside a transaction the statement is its own, so the chat row stays
# locked for no client round trip at all (the ORM version above holds it across several;
# under load each costs a thread wake-up, and a room's sends queue on that lock:
# docs/performance.md). The INSERT reads its row from `locked`, so the lock is taken before
# the message gets its id, and a chat's messages still commit in id order. ON CONFLICT covers
# a same-client_id send that committed while this one waited for the lock (invisible to this
# statement's snapshot): nothing is inserted and the caller gets the original.
# The floor's lookup names the chat's messages as a range of the (chat_id, id) index, not as
# `chat_id = chat.id ORDER BY id DESC`: for that form, with the chat unknown when it is
# planned (a correlated subquery), PostgreSQL may walk the primary key backwards from the
# newest message of every chat, reading the whole table for a chat without messages when one
# chat holds most rows (seconds per send: docs/performance.md, "The send that read the whole
# table"). A row comparison is served by that index alone (ids are 1 to the largest bigint).
_SEND_SQL = f"""
WITH locked AS (
    SELECT chat.id, chat.seq, chat.revision, GREATEST(chat.last_activity_at, (
        SELECT newest.created_at FROM messaging_message AS newest
        WHERE (newest.chat_id, newest.id) > (chat.id, 0)
            AND (newest.chat_id, newest.id) <= (chat.id, 9223372036854775807)
        ORDER BY newest.chat_id DESC, newest.id DESC LIMIT 1
    )) AS created_at_floor
    FROM messaging_chat AS chat
    WHERE chat.id = %(chat_id)s AND {member_exists_sql("chat.id", "%(author_id)s")}
    FOR UPDATE OF chat
), earlier AS (
    SELECT message.id FROM messaging_message AS message
    WHERE message.chat_id = %(chat_id)s AND message.author_id = %(author_id)s
        AND message.client_id = %(client_id)s
), inserted AS (
    INSERT INTO messaging_message
        (chat_id, author_id, text, created_at, client_id, seq, deleted)
    SELECT locked.id, %(author_id)s, %(text)s,
        GREATEST(%(created_at)s, locked.created_at_floor), %(client_id)s, locked.seq + 1, FALSE
    FROM locked
    WHERE NOT EXISTS (SELECT 1 FROM earlier)
    ON CONFLICT (author_id, chat_id, client_id) WHERE client_id IS NOT NULL DO NOTHING
    RETURNING id, created_at, seq
), chat_moved AS (
    UPDATE messaging_chat AS chat
    SET last_message_id = inserted.id, last_activity_at = inserted.created_at, seq = inserted.seq
    FROM inserted WHERE chat.id = %(chat_id)s
), cursor_moved AS (
    UPDATE messaging_chatmember AS member SET last_read_message_id = inserted.id
    FROM inserted WHERE member.chat_id = %(chat_id)s AND member.user_id = %(author_id)s
)
SELECT locked.revision, inserted.id, inserted.created_at, inserted.seq, earlier.id
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
        return [_refusal_or(partial(_message_send, **request)) for request in requests]
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
    revision, inserted_id, created_at, seq, earlier_id = row
    chat_id, client_id = params["chat_id"], params["client_id"]
    if inserted_id is not None:
        message = _loaded(
            id=inserted_id,
            chat_id=chat_id,
            author_id=author.pk,
            text=params["text"],
            created_at=created_at,
            client_id=client_id,
            seq=seq,
        )
        return _announced(message, revision)
    # A repeat: `earlier` found it, or (ON CONFLICT) it committed after this statement's
    # snapshot was taken. Either way it is read now, whole (it may have changed since), its
    # row and reactions in one snapshot (outside a batch, the chat is no longer locked).
    with one_snapshot():
        original = Message.objects.get(chat_id=chat_id, author=author, client_id=client_id)
        return _repeat(original)


def _repeat(original: Message) -> SentMessage:
    reactions = reactions_by_message([original.pk]).get(original.pk, {})
    return SentMessage(message=original, created=False, reactions=reactions)


def _announced(message: Message, revision: int) -> SentMessage:
    """A new message, announced after commit with the frame its sender gets too."""
    sent = SentMessage(message=message, created=True, revision=revision)
    events.on_commit_change(sent.change())
    return sent


def _loaded(**values: Any) -> Message:
    """An instance of a row the send statement inserted, as a query would have built it
    (Django's documented `Model.from_db`); the columns it leaves to their defaults are given."""
    values = {"edited_at": None, "deleted": False, **values}
    return Message.from_db(connection.alias, _MESSAGE_FIELDS, [values[f] for f in _MESSAGE_FIELDS])


_MESSAGE_FIELDS = [field.attname for field in Message._meta.concrete_fields]


# --- Editing, deleting, reacting ------------------------------------------------------------------


def message_edit(*, editor: User, chat_id: int, message_id: int, text: str) -> ChangedMessage:
    """Replace a message's text. Only its author may; a deleted message is not found."""
    with transaction.atomic():
        chat = _locked_chat(chat_id, member=editor)
        message = _message_of(chat_id, message_id)
        if message.author_id != editor.pk:
            raise Forbidden("Only the author of a message may edit it.")
        message.text = text
        message.edited_at = timezone.now()
        return _changed(chat, message, fields=["text", "edited_at"])


def message_delete(*, actor: User | None, chat_id: int, message_id: int) -> bool:
    """Turn a message into a tombstone: same id, created_at and place in every read cursor,
    no text and no reactions. Its author or the chat's owner may; `actor=None` is staff (the
    admin). True when it was deleted now, False when it already was (nothing changes)."""
    with transaction.atomic():
        chat = _locked_chat(chat_id, member=actor)
        message = _message_of(chat_id, message_id, deleted_too=True)
        if actor is not None and actor.pk not in {message.author_id, chat.owner_id}:
            raise Forbidden("Only the author of a message or the chat's owner may delete it.")
        if message.deleted:
            return False
        _tombstone(chat, message)
        return True


def reaction_add(*, user: User, chat_id: int, message_id: int, emoji: str) -> bool:
    """Add the user's `emoji` to a message; True when it was not there yet."""
    with transaction.atomic():
        chat = _locked_chat(chat_id, member=user)
        message = _message_of(chat_id, message_id)
        present = Reaction.objects.filter(message_id=message_id)
        if present.filter(user=user, emoji=emoji).exists():
            return False
        emoji_count = present.values("emoji").distinct().count()
        if emoji_count >= MAX_EMOJI_PER_MESSAGE and not present.filter(emoji=emoji).exists():
            raise ApplicationError(
                f"A message has at most {MAX_EMOJI_PER_MESSAGE} different emoji.", field="emoji"
            )
        Reaction.objects.create(message_id=message_id, user=user, emoji=emoji)
        _changed(chat, message, fields=[])
        return True


def reaction_remove(*, user: User, chat_id: int, message_id: int, emoji: str) -> bool:
    """Take the user's `emoji` off a message; True when it was there."""
    with transaction.atomic():
        chat = _locked_chat(chat_id, member=user)
        message = _message_of(chat_id, message_id, deleted_too=True)
        removed, _ = Reaction.objects.filter(message_id=message_id, user=user, emoji=emoji).delete()
        if not removed:
            return False
        _changed(chat, message, fields=[])
        return True


def _locked_chat(chat_id: int, *, member: User | None) -> Chat:
    """The chat, its row locked until the transaction ends; not found when `member` (unless
    None, which is staff) is not a member, exactly as when the chat does not exist."""
    chats = Chat.objects.select_for_update(of=("self",)).filter(pk=chat_id)
    if member is not None:
        chats = chats.filter(memberships__user=member)
    chat = chats.only(
        "id", "seq", "revision", "owner_id", "last_message_id", "last_activity_at", "created_at"
    ).first()
    if chat is None:
        raise NotFound()
    return chat


def _message_of(chat_id: int, message_id: int, *, deleted_too: bool = False) -> Message:
    message = Message.objects.filter(pk=message_id, chat_id=chat_id).first()
    if message is None or (message.deleted and not deleted_too):
        raise NotFound(MESSAGE_NOT_FOUND)
    return message


def _next_seq(chat: Chat) -> int:
    chat.seq += 1
    Chat.objects.filter(pk=chat.pk).update(seq=chat.seq)
    return chat.seq


def _changed(chat: Chat, message: Message, *, fields: list[str]) -> ChangedMessage:
    """Stamp the message with the chat's next seq, save `fields`, announce after commit."""
    message.seq = _next_seq(chat)
    Message.objects.filter(pk=message.pk).update(
        seq=message.seq, **{name: getattr(message, name) for name in fields}
    )
    reactions = {} if message.deleted else reactions_by_message([message.pk]).get(message.pk, {})
    frame = events.message_updated_frame(message, reactions)
    events.on_commit_change(
        events.ChatChange(
            chat_id=chat.pk,
            seq=message.seq,
            revision=chat.revision,
            message_id=message.pk,
            created=False,
            frame=frame,
        )
    )
    return ChangedMessage(message=message, reactions=reactions)


def _tombstone(chat: Chat, message: Message) -> None:
    Reaction.objects.filter(message=message).delete()
    message.text = ""
    message.deleted = True
    _changed(chat, message, fields=["text", "deleted"])
    if chat.last_message_id == message.pk:
        # The newest message left standing is the chat's last, and its time the chat's activity
        # (the chat's creation when none is left), which orders GET /chats.
        standing = (
            Message.objects.filter(chat_id=chat.pk, deleted=False, id__lt=message.pk)
            .order_by("-id")
            .values_list("id", "created_at")
            .first()
        )
        last_id, activity = standing or (None, chat.created_at)
        Chat.objects.filter(pk=chat.pk).update(last_message_id=last_id, last_activity_at=activity)


def messages_erase_authored_by(*, user_id: int) -> None:
    """Before a user is deleted: their messages become tombstones and their reactions go, each
    a change of its chat like any other (so no read cursor moves and clients hear of it)."""
    chat_ids = set(
        Message.objects.filter(author_id=user_id, deleted=False).values_list("chat_id", flat=True)
    ) | set(Reaction.objects.filter(user_id=user_id).values_list("message__chat_id", flat=True))
    for chat_id in sorted(chat_ids):  # In chat id order, as every batch locks them.
        with transaction.atomic():
            chat = _locked_chat(chat_id, member=None)
            for message in Message.objects.filter(
                chat_id=chat_id, author_id=user_id, deleted=False
            ).order_by("id"):
                _tombstone(chat, message)
                chat.refresh_from_db(fields=["last_message"])
            reacted = Message.objects.filter(chat_id=chat_id, reactions__user_id=user_id).distinct()
            for message in reacted.order_by("id"):
                Reaction.objects.filter(message=message, user_id=user_id).delete()
                _changed(chat, message, fields=[])


# --- Read cursors ---------------------------------------------------------------------------------


def read_cursor_advance(
    *, reader: User, chat_id: int, message_id: int, origin: str | None = None
) -> bool:
    """Move the reader's cursor forward to `message_id`; True when it moved.

    `origin` names the socket that asked, which the `message_read` event skips.
    """
    with transaction.atomic():
        revision = (
            ChatMember.objects.filter(chat_id=chat_id, user=reader)
            .values_list("chat__revision", flat=True)
            .first()
        )
        if revision is None:
            raise NotFound()
        author_id = (
            Message.objects.filter(pk=message_id, chat_id=chat_id)
            .values_list("author_id", flat=True)
            .first()
        )
        if author_id is None:
            raise NotFound(MESSAGE_NOT_FOUND)
        moved = (
            ChatMember.objects.filter(chat_id=chat_id, user=reader)
            .filter(Q(last_read_message__isnull=True) | Q(last_read_message_id__lt=message_id))
            .update(last_read_message_id=message_id)
        )
        if moved:
            events.on_commit_message_read(
                chat_id=chat_id,
                revision=revision,
                reader_id=reader.pk,
                author_id=author_id,
                message_id=message_id,
                origin=origin,
            )
    return bool(moved)
