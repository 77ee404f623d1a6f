"""The events sent to sockets, and the one place that talks to the channel layer.

Groups: `chat.<id>` carries a chat's messages and typing; `user.<id>` carries what is meant
for one user (read receipts, membership changes). Payloads are JSON-safe (msgpack on Redis),
and each frame is encoded once per event here, not once per receiving socket.

Publishing never raises into a write: when Redis is down the message is already stored,
the sender's socket answers from its own result, and the others catch up with `after`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from messaging.models import Message

logger = logging.getLogger(__name__)

# How long a publish may wait on the channel layer before it is given up (and logged).
PUBLISH_TIMEOUT_SECONDS = 2.0


def chat_group(chat_id: int) -> str:
    return f"chat.{chat_id}"


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def encode(event: dict[str, Any]) -> str:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


def message_data(message: Message) -> dict[str, Any]:
    """The Message object of the contract (the REST serializer uses the same function)."""
    return {
        "id": message.pk,
        "chat_id": message.chat_id,
        "author_id": message.author_id,
        "text": message.text,
        "created_at": message.created_at.isoformat().replace("+00:00", "Z"),
        "client_id": message.client_id,
    }


def new_message_frame(message: Message) -> str:
    return encode({"type": "new_message", "message": message_data(message)})


def error_frame(code: str, detail: str, request: dict[str, Any]) -> str:
    return encode({"type": "error", "code": code, "detail": detail, "request": request})


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
        return False
    return True


_collecting = threading.local()


@contextmanager
def publishes_collected() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """In this thread, while open: publishes are collected in the yielded list, in order,
    instead of each being scheduled on the event loop; the caller hands the list to the loop
    once (`publish_all`). Used by the writer threads, one list per batch."""
    _collecting.publishes = publishes = []
    try:
        yield publishes
    finally:
        _collecting.publishes = None


def publish_all(publishes: list[tuple[str, dict[str, Any]]]) -> None:
    """On the event loop: start each publish, in order (the layer keeps that order)."""
    for group, payload in publishes:
        asyncio.ensure_future(group_send(group, payload))


def _publish(group: str, payload: dict[str, Any]) -> None:
    """Publish from sync code without making the caller (a DB thread) wait on Redis."""
    if (collected := getattr(_collecting, "publishes", None)) is not None:
        collected.append((group, payload))
        return
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    if loop is not None and loop.is_running():
        asyncio.run_coroutine_threadsafe(group_send(group, payload), loop)
    else:  # No event loop behind us (management command, plain test): just wait.
        async_to_sync(group_send)(group, payload)


def on_commit_new_message(message: Message, *, previous_id: int | None, frame: str) -> None:
    payload = {
        "type": "chat.message",
        "chat_id": message.chat_id,
        "message_id": message.pk,
        "previous_id": previous_id,
        "frame": frame,
    }
    transaction.on_commit(lambda: _publish(chat_group(message.chat_id), payload))


def on_commit_message_read(
    *, chat_id: int, reader_id: int, author_id: int, message_id: int, origin: str | None
) -> None:
    payload = {
        "type": "user.read",
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


def on_commit_member_joined(*, user_id: int, chat_id: int, since_id: int | None) -> None:
    """`since_id`: the chat's newest message when the membership was made; the user's open
    sockets deliver every message after it."""
    payload = {"type": "user.membership", "chat_id": chat_id, "joined": True, "since_id": since_id}
    transaction.on_commit(lambda: _publish(user_group(user_id), payload))


def on_commit_member_left(*, user_id: int, chat_id: int) -> None:
    payload = {"type": "user.membership", "chat_id": chat_id, "joined": False}
    transaction.on_commit(lambda: _publish(user_group(user_id), payload))


async def publish_typing(*, chat_id: int, user_id: int) -> None:
    frame = encode({"type": "typing", "chat_id": chat_id, "user_id": user_id})
    await group_send(
        chat_group(chat_id),
        {"type": "chat.typing", "chat_id": chat_id, "user_id": user_id, "frame": frame},
    )


def on_commit_sessions_revoked(*, user_id: int, token_version: int) -> None:
    payload = {"type": "user.revoked", "token_version": token_version}
    transaction.on_commit(lambda: _publish(user_group(user_id), payload))
