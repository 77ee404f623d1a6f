"""The events sent to sockets, and the one place that talks to the channel layer.

Groups: `chat.<id>` carries a chat's changes (`chat.change`: a message sent, edited, deleted or
reacted to), its ChatInfo (`chat.info`) and typing; `user.<id>` carries what is meant for one
user (read receipts, membership hints, session revocation). Payloads are JSON-safe (msgpack on
Redis), and each client frame is encoded once per event here, not once per receiving socket.

Chat events carry the chat's `rev` (revision) at commit: a socket that sees a newer revision
than the membership it knows re-reads the membership before delivering (messaging/fanout.py).

Publishing never raises into a write: when Redis is down the change is already stored, the
actor's socket answers from its own result, and the others catch up (`since_seq`, gap fill).
Announcements that nothing else would repair (membership hints, ChatInfo, revocations) are
retried until Redis answers again, for up to RELIABLE_PUBLISH_SECONDS.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from chatproject import metrics

logger = logging.getLogger(__name__)

# How long a publish may wait on the channel layer before it is given up (and logged).
PUBLISH_TIMEOUT_SECONDS = 2.0
# How long a reliable announcement is retried, and the pause between tries (doubling).
RELIABLE_PUBLISH_SECONDS = 60.0
RETRY_FIRST_PAUSE_SECONDS = 0.2
RETRY_MAX_PAUSE_SECONDS = 5.0

Reactions = Mapping[str, Sequence[int]]


class MessageLike(Protocol):
    pk: int
    chat_id: int
    author_id: int
    text: str
    created_at: datetime
    client_id: str | None
    seq: int
    edited_at: datetime | None
    deleted: bool


def chat_group(chat_id: int) -> str:
    return f"chat.{chat_id}"


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def encode(event: dict[str, Any]) -> str:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


def timestamp(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def message_data(message: MessageLike, reactions: Reactions | None = None) -> dict[str, Any]:
    """The Message object of the contract (the REST views use the same function)."""
    return {
        "id": message.pk,
        "chat_id": message.chat_id,
        "author_id": message.author_id,
        "text": message.text,
        "created_at": timestamp(message.created_at),
        "client_id": message.client_id,
        "seq": message.seq,
        "edited_at": timestamp(message.edited_at),
        "deleted": message.deleted,
        "reactions": {emoji: list(users) for emoji, users in (reactions or {}).items()},
    }


def chat_info_data(chat: Any, members: Sequence[Any]) -> dict[str, Any]:
    """The ChatInfo object of the contract: a Chat without what differs per member."""
    return {
        "id": chat.pk,
        "title": chat.title,
        "members": [{"id": member.pk, "username": member.username} for member in members],
        "created_at": timestamp(chat.created_at),
        "kind": chat.kind,
        "owner_id": chat.owner_id,
        "seq": chat.seq,
    }


def new_message_frame(message: MessageLike, reactions: Reactions | None = None) -> str:
    return encode({"type": "new_message", "message": message_data(message, reactions)})


def message_updated_frame(message: MessageLike, reactions: Reactions | None = None) -> str:
    return encode({"type": "message_updated", "message": message_data(message, reactions)})


def error_frame(code: str, detail: str, request: dict[str, Any]) -> str:
    return encode({"type": "error", "code": code, "detail": detail, "request": request})


def chat_removed_frame(chat_id: int) -> str:
    return encode({"type": "chat_removed", "chat_id": chat_id})


def chat_updated_frame(info: dict[str, Any]) -> str:
    return encode({"type": "chat_updated", "chat": info})


class ChatChange(NamedTuple):
    """A committed change of a chat's messages, as its sockets need it."""

    chat_id: int
    seq: int
    revision: int
    message_id: int
    # Whether the change created the message: `new_message` then, else `message_updated`.
    created: bool
    frame: str

    def event(self) -> dict[str, Any]:
        return {
            "type": "chat.change",
            "chat_id": self.chat_id,
            "seq": self.seq,
            "rev": self.revision,
            "message_id": self.message_id,
            "new": self.created,
            "frame": self.frame,
        }


# --- Publishing -----------------------------------------------------------------------------------


async def group_send(group: str, payload: dict[str, Any]) -> bool:
    """Send to a group; False (and a log line) when the channel layer fails. The event names
    its group, which is how `messaging.fanout` finds the sockets it is for."""
    layer = get_channel_layer()
    try:
        event = {**payload, "group": group}
        async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):  # No task of its own, as wait_for.
            await layer.group_send(group, event)
    except Exception as exc:  # Redis down or slow: the write stands, delivery is best effort.
        logger.warning("channel layer publish to %s failed: %r", group, exc)
        if metrics.ON:
            metrics.PUBLISH_FAILURES.inc()
        return False
    return True


async def group_send_reliably(group: str, payload: dict[str, Any]) -> bool:
    """`group_send`, tried again with growing pauses until it succeeds or
    RELIABLE_PUBLISH_SECONDS have passed. For announcements that no later event repairs."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RELIABLE_PUBLISH_SECONDS
    pause = RETRY_FIRST_PAUSE_SECONDS
    while not await group_send(group, payload):
        if loop.time() + pause > deadline:
            logger.error("gave up publishing %s to %s", payload.get("type"), group)
            return False
        await asyncio.sleep(pause)
        pause = min(pause * 2, RETRY_MAX_PAUSE_SECONDS)
    return True


class Publish(NamedTuple):
    group: str
    payload: dict[str, Any]
    reliable: bool = False


_collecting = threading.local()


@contextmanager
def publishes_collected() -> Iterator[list[Publish]]:
    """In this thread, while open: publishes are collected in the yielded list, in order,
    instead of each being scheduled on the event loop; the caller hands the list to the loop
    once (`publish_all`). Used by the writer threads, one list per batch."""
    _collecting.publishes = publishes = []
    try:
        yield publishes
    finally:
        _collecting.publishes = None


def publish_all(publishes: list[Publish]) -> list[asyncio.Future[bool]]:
    """On the event loop: start each publish, in order (the layer keeps that order)."""
    return [
        asyncio.ensure_future(_sender(publish)(publish.group, publish.payload))
        for publish in publishes
    ]


def _sender(publish: Publish) -> Any:
    return group_send_reliably if publish.reliable else group_send


def _publish(group: str, payload: dict[str, Any], *, reliable: bool = False) -> None:
    """Publish from sync code without making the caller (a DB thread) wait on Redis."""
    publish = Publish(group, payload, reliable)
    if (collected := getattr(_collecting, "publishes", None)) is not None:
        collected.append(publish)
        return
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    if loop is not None and loop.is_running():
        asyncio.run_coroutine_threadsafe(_sender(publish)(group, payload), loop)
    elif reliable:  # No event loop behind us (management command, admin, plain test).
        async_to_sync(group_send_reliably)(group, payload)
    else:
        async_to_sync(group_send)(group, payload)


def on_commit_change(change: ChatChange) -> None:
    """A message sent, edited, deleted or reacted to: after commit, to the chat's sockets."""
    transaction.on_commit(lambda: _publish(chat_group(change.chat_id), change.event()))


def on_commit_message_read(
    *,
    chat_id: int,
    revision: int,
    reader_id: int,
    author_id: int,
    message_id: int,
    origin: str | None,
) -> None:
    payload = {
        "type": "user.read",
        "chat_id": chat_id,
        "rev": revision,
        "origin": origin,
        "frame": encode(
            {
                "type": "message_read",
                "chat_id": chat_id,
                "user_id": reader_id,
                "message_id": message_id,
            }
        ),
    }
    recipients = {reader_id, author_id}

    def publish() -> None:
        for user_id in recipients:
            _publish(user_group(user_id), payload)

    transaction.on_commit(publish)


def membership_changed(*, chat_id: int, user_ids: Sequence[int]) -> None:
    """After commit: tell each user's sockets that their membership of the chat changed (a
    hint: each socket reads its membership from the database and acts on what it finds)."""
    payload = {"type": "user.membership", "chat_id": chat_id}

    def publish() -> None:
        for user_id in user_ids:
            _publish(user_group(user_id), payload, reliable=True)

    transaction.on_commit(publish)


def publish_chat_info(*, chat_id: int, revision: int, frame: str) -> None:
    """Now (call it after commit): the chat's new ChatInfo to the sockets of its members."""
    payload = {"type": "chat.info", "chat_id": chat_id, "rev": revision, "frame": frame}
    _publish(chat_group(chat_id), payload, reliable=True)


def on_commit_sessions_revoked(*, user_id: int, token_version: int) -> None:
    """After commit: every socket of the user whose token is older than `token_version` closes."""
    payload = {"type": "user.revoked", "token_version": token_version}
    transaction.on_commit(lambda: _publish(user_group(user_id), payload, reliable=True))


async def publish_typing(*, chat_id: int, user_id: int) -> None:
    frame = encode({"type": "typing", "chat_id": chat_id, "user_id": user_id})
    await group_send(
        chat_group(chat_id),
        {"type": "chat.typing", "chat_id": chat_id, "user_id": user_id, "frame": frame},
    )
