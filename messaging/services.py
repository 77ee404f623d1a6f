"""Every write of the messaging app: atomic, with its events sent only after commit.

Both the REST views and the WebSocket consumer call these; neither writes on its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q

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
        events.on_commit_new_message(message, previous_id=previous_id)
    return SentMessage(message=message, created=True, previous_id=previous_id)


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
