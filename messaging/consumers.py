"""The chat WebSocket: decode, check limits, dispatch by type to a service, relay events.

Protocol: docs/websocket.md. Rules live in `messaging.services`; this module only translates
between frames and service calls, and keeps each chat's events in order (`ChatStream`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import deque
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from rest_framework.exceptions import ValidationError

from chatproject.errors import ApplicationError, NotFound
from messaging import events, services
from messaging.fanout import local_fanout
from messaging.limits import sockets
from messaging.models import ChatMember, Message
from messaging.serializers import (
    MAX_ID,
    ChatEventSerializer,
    NewMessageEventSerializer,
    ReadMessageEventSerializer,
    first_error,
)
from messaging.streams import ChatStream
from messaging.writers import run_on_writer

logger = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_MANY_SOCKETS = 4429
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_TOO_BIG = 1009
# Client events are objects of scalars; anything nested deeper is refused as `invalid_json`.
MAX_JSON_DEPTH = 32
# How long a message may wait for its predecessor before the gap is read from the database.
GAP_WAIT_SECONDS = 0.3


class EventError(Exception):
    """A client event was refused; becomes an `error` frame to the sending socket only."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


# --- Database work (each call runs in a worker thread with a fresh, healthy connection) ----------
# Sends and read receipts run on the writer threads of `messaging.writers`; the rest on
# Channels' shared sync thread.


@database_sync_to_async
def _chat_positions(user_id: int) -> dict[int, int | None]:
    """The user's chats and each chat's newest message id, which is where the socket starts."""
    return dict(
        ChatMember.objects.filter(user_id=user_id).values_list("chat_id", "chat__last_message_id")
    )


@database_sync_to_async
def _chat_position(user_id: int, chat_id: int) -> tuple[int | None] | None:
    """(newest message id,) of a chat the user is a member of; None when not a member."""
    return (
        ChatMember.objects.filter(user_id=user_id, chat_id=chat_id)
        .values_list("chat__last_message_id")
        .first()
    )


@database_sync_to_async
def _frames_between(chat_id: int, after_id: int | None, up_to_id: int) -> list[tuple[int, str]]:
    messages = Message.objects.filter(chat_id=chat_id, id__lte=up_to_id).order_by("id")
    if after_id is not None:
        messages = messages.filter(id__gt=after_id)
    return [(message.pk, events.new_message_frame(message)) for message in messages]


class ChatConsumer(AsyncJsonWebsocketConsumer):
    """One socket. Its events (its chats', its user's) come from the process's `GroupFanout`
    (`on_group_event`), not from a channel of its own. Everything sent to the client goes
    through one outbox, in order, drained by one task at a time (`_push`)."""

    user: Any
    streams: dict[int, ChatStream]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Names this socket in its own read receipts (`origin`), which it does not echo.
        self.socket_id = uuid.uuid4().hex
        self.groups_joined: set[str] = set()
        self.membership_changes: list[dict[str, Any]] = []
        self.membership_worker: asyncio.Task[None] | None = None
        self.streams = {}
        self.gap_tasks: dict[int, asyncio.Task[None]] = {}
        self.counted = False  # Whether this socket counts against its user's socket cap.
        self.accepted = False
        self.outbox: deque[dict[str, Any]] = deque()  # ASGI messages waiting to go out.
        self.outbox_bytes = 0
        self.fell_behind = False
        self.drainer: asyncio.Task[None] | None = None
        self.base_send = self._send_in_order  # Where Channels' send, accept and close end.

    # --- Lifecycle ---------------------------------------------------------------------------

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch, without its `aclose_old_connections()` before every handler: that
        is a hop to the one shared sync thread for each client frame, queued behind every
        query, and it is not needed here, since this consumer's database work goes through
        `database_sync_to_async` or the writer threads, which close stale connections around
        each call themselves."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Channels' `AsyncConsumer.__call__`, without the channel it would give the socket
        (a Redis subscription, a queue and a waiting task per socket, and a new task per frame
        to wait on both): layer events come through `GroupFanout` instead, so only the
        client's frames are read here, one at a time."""
        self.scope = scope
        self.asgi_send = send
        self.channel_layer = get_channel_layer()
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        finally:  # Cancelled without a disconnect (server shutdown): no event for a dead socket.
            self._forget_groups()

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.accept()
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        self.user = user
        if not sockets.open(
            user.pk,
            max_sockets=settings.WS_MAX_SOCKETS_PER_USER,
            burst=settings.WS_RATE_BURST,
            per_second=settings.WS_RATE_PER_SECOND,
        ):
            await self.accept()
            await self.close(code=CLOSE_TOO_MANY_SOCKETS)
            return
        self.counted = True
        try:
            await self._join(events.user_group(user.pk))
            for chat_id, last_id in (await _chat_positions(user.pk)).items():
                await self._subscribe(chat_id, last_id)
        except Exception:  # The channel layer is down: tell the client to come back later.
            logger.warning("could not subscribe socket of user %s", user.pk, exc_info=True)
            await self.accept()
            await self.close(code=CLOSE_TRY_AGAIN_LATER)
            return
        await self.accept()
        self.accepted = True
        self._drain_soon()  # Events that came during the handshake.

    async def disconnect(self, code: int) -> None:
        for task in self.gap_tasks.values():
            task.cancel()
        if self.membership_worker is not None:
            self.membership_worker.cancel()
        if not self.counted:
            return
        sockets.close(self.user.pk)
        self.streams = {}
        for group in list(self.groups_joined):
            self.groups_joined.discard(group)
            await local_fanout(self.channel_layer).leave(group, self)

    async def _join(self, group: str) -> None:
        # Noted first: if this task is cancelled halfway (the socket closing), the leave at
        # disconnect still finds the group, and leaving a group never joined is harmless.
        self.groups_joined.add(group)
        try:
            await local_fanout(self.channel_layer).join(group, self)
        except Exception:
            self.groups_joined.discard(group)
            raise

    async def _subscribe(self, chat_id: int, last_id: int | None) -> None:
        await self._join(events.chat_group(chat_id))
        self.streams[chat_id] = ChatStream(chat_id=chat_id, last_id=last_id)

    async def _unsubscribe(self, chat_id: int) -> None:
        del self.streams[chat_id]
        if task := self.gap_tasks.pop(chat_id, None):
            task.cancel()
        group = events.chat_group(chat_id)
        self.groups_joined.discard(group)
        await local_fanout(self.channel_layer).leave(group, self)

    def _forget_groups(self) -> None:
        if self.groups_joined:
            fanout = local_fanout(self.channel_layer)
            for group in self.groups_joined:
                asyncio.ensure_future(fanout.leave(group, self))
            self.groups_joined = set()
            self.streams = {}

    # --- Client -> server ------------------------------------------------------------------------

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        """Replaces Channels' decoding, which lets a binary or non-JSON frame kill the socket."""
        if not self.counted:
            return  # Refused at connect; frames sent before the close are ignored.
        text = message.get("text")
        if _frame_size(text, message.get("bytes")) > settings.WS_MAX_FRAME_BYTES:
            await self.close(code=CLOSE_TOO_BIG)
            return
        allowed = await sockets.allow_event(self.user.pk)
        content, problem = _decode(text)
        if not allowed:
            # Echoed like any error, so the client knows which client_id to send again.
            echo = _request_echo(content) if problem is None else {}
            await self._send_error("rate_limited", "Too many events; slow down.", echo)
            return
        if problem is not None:
            await self._send_error("invalid_json", problem, {})
            return
        await self.receive_json(content)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        echo = _request_echo(content)
        try:
            if not isinstance(content, dict):
                raise EventError("validation_error", "An event must be a JSON object.")
            event_type = content.get("type")
            # Only the three client event names: a list or object as `type` is not a crash.
            handler = self.HANDLERS.get(event_type) if isinstance(event_type, str) else None
            if handler is None:
                raise EventError("unknown_type", f"Unknown event type: {_shown(event_type)}.")
            await handler(self, content)
        except EventError as exc:
            await self._send_error(exc.code, exc.detail, echo)
        except ApplicationError as exc:
            await self._send_error(exc.code, exc.detail, echo)
        except ValidationError as exc:
            await self._send_error("validation_error", first_error(exc.detail), echo)
        except Exception:  # The database failed us, not the client: it may retry.
            logger.exception("event %s failed", echo.get("type"))
            await self._send_error(
                "server_error", "The server could not handle this event; retry it.", echo
            )

    async def on_new_message(self, content: dict[str, Any]) -> None:
        data = _validated(NewMessageEventSerializer, content)
        sent = await run_on_writer(
            data["chat_id"],
            services.message_send,
            batch=services.message_send_many,
            author=self.user,
            chat_id=data["chat_id"],
            text=data["text"],
            client_id=data.get("client_id"),
        )
        stream = self.streams.get(data["chat_id"])
        if not sent.created or stream is None:
            # A repeat of an earlier client_id: answer with the original, to this socket only.
            self._push(sent.frame)
            return
        # Our own copy goes straight to this socket, not through Redis, so the sender gets it
        # even when the channel layer is down; the copy that comes back through it is dropped.
        self._deliver(stream, sent.message.pk, sent.previous_id, sent.frame)

    async def on_read_message(self, content: dict[str, Any]) -> None:
        data = _validated(ReadMessageEventSerializer, content)
        await run_on_writer(
            data["chat_id"],
            services.read_cursor_advance,
            reader=self.user,
            chat_id=data["chat_id"],
            message_id=data["id"],
            origin=self.socket_id,
        )

    async def on_typing(self, content: dict[str, Any]) -> None:
        chat_id = _validated(ChatEventSerializer, content)["chat_id"]
        if chat_id not in self.streams:  # Membership is kept live in memory (see chat_join).
            raise NotFound()
        await events.publish_typing(chat_id=chat_id, user_id=self.user.pk)

    HANDLERS = {
        "new_message": on_new_message,
        "read_message": on_read_message,
        "typing": on_typing,
    }

    # --- Channel layer -> client -----------------------------------------------------------------

    def on_group_event(self, event: dict[str, Any]) -> None:
        """An event of one of this socket's groups, from the process's `GroupFanout`; must not
        block (the other sockets of the group wait for it)."""
        kind = event["type"]
        if kind == "chat.message":
            if stream := self.streams.get(event["chat_id"]):
                self._deliver(stream, event["message_id"], event["previous_id"], event["frame"])
        elif kind == "chat.typing":
            if event["user_id"] != self.user.pk and event["chat_id"] in self.streams:
                self._push(event["frame"])
        elif kind == "user.read":
            if event["origin"] != self.socket_id:
                self._push(event["frame"])
        elif kind == "user.membership":
            # Needs the database: handled by a task, one change at a time, in order.
            self.membership_changes.append(event)
            if self.membership_worker is None:
                self.membership_worker = asyncio.create_task(self._apply_membership_changes())

    async def _apply_membership_changes(self) -> None:
        try:
            while self.membership_changes:
                event = self.membership_changes.pop(0)
                try:
                    await self._apply_membership_change(event)
                except Exception:  # Database or Redis down: the client catches up on reconnect.
                    logger.warning("membership change %s failed", event, exc_info=True)
        finally:
            self.membership_worker = None

    async def _apply_membership_change(self, event: dict[str, Any]) -> None:
        chat_id = event["chat_id"]
        if event["joined"]:
            position = await _chat_position(self.user.pk, chat_id)
            if position is None or chat_id in self.streams:
                return  # Left again already, or a repeated announcement.
            # Start where the chat was when the membership was created, and read what was
            # sent between then and this subscription from the database.
            (newest_id,) = position
            start_id = event.get("since_id", newest_id)
            await self._subscribe(chat_id, start_id)
            if start_id != newest_id:
                self._schedule_gap_fill(chat_id, delay=0)
        elif chat_id in self.streams:
            await self._unsubscribe(chat_id)

    # --- Ordering and gaps -----------------------------------------------------------------------

    def _deliver(
        self, stream: ChatStream, message_id: int, previous_id: int | None, frame: str
    ) -> None:
        for ready in stream.accept(message_id, previous_id, frame):
            self._push(ready)
        if stream.has_gap:
            self._schedule_gap_fill(stream.chat_id, delay=GAP_WAIT_SECONDS)

    def _schedule_gap_fill(self, chat_id: int, *, delay: float) -> None:
        if chat_id not in self.gap_tasks:
            self.gap_tasks[chat_id] = asyncio.create_task(self._fill_gap(chat_id, delay))

    async def _fill_gap(self, chat_id: int, delay: float) -> None:
        """Wait for a missing predecessor; if it does not come, read it from the database.

        Only a message that has waited `delay` is a reason to read: a sender's own copy
        usually arrives before its predecessors' broadcasts, so while a chat is busy there is
        nearly always a short gap open, and it closes by itself."""
        try:
            while delay:
                stream = self.streams.get(chat_id)
                watched = stream.newest_waiting_id() if stream and stream.has_gap else None
                await asyncio.sleep(delay)
                stream = self.streams.get(chat_id)
                if stream is None or not stream.has_gap:
                    return
                if watched in stream.waiting:
                    break  # Still waiting after `delay`: its predecessor is not coming.
            stream = self.streams.get(chat_id)
            if stream is None:
                return
            up_to = stream.newest_waiting_id() if stream.has_gap else MAX_ID
            fetched = await _frames_between(chat_id, stream.last_id, up_to)
            for frame in stream.fill(fetched):
                self._push(frame)
        except Exception:  # Database unreachable: the next message retries the gap.
            logger.warning("could not fill a gap in chat %s", chat_id, exc_info=True)
        finally:
            self.gap_tasks.pop(chat_id, None)

    # --- Sending ---------------------------------------------------------------------------------

    def _push(self, frame: str) -> None:
        """Queue a frame for the client. Never blocks: one task at a time sends the outbox in
        order, so a socket whose server-side send waits (a client that stopped reading, under
        uvicorn) holds up only itself, in memory bounded by WS_MAX_OUTGOING_BUFFER_BYTES."""
        if self.fell_behind:
            return  # Only its close is still to go out.
        self.outbox.append({"type": "websocket.send", "text": frame})
        self.outbox_bytes += len(frame)
        if self.outbox_bytes > settings.WS_MAX_OUTGOING_BUFFER_BYTES:
            # The client reads slower than its chats talk: drop what waits, close with 1013
            # once the socket can take it; the client reconnects and catches up with `after`.
            logger.warning("socket of user %s fell behind; closing it", self.user.pk)
            self.fell_behind = True
            self.outbox.clear()
            self.outbox_bytes = 0
            self.outbox.append({"type": "websocket.close", "code": CLOSE_TRY_AGAIN_LATER})
        self._drain_soon()

    def _drain_soon(self) -> None:
        if self.drainer is None and self.accepted and self.outbox:
            self.drainer = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self.outbox:
                message = self.outbox.popleft()
                self.outbox_bytes -= len(message.get("text", ""))
                await self.asgi_send(message)
        except Exception:  # The client is gone; its disconnect is on its way.
            logger.debug("send to a closed socket", exc_info=True)
            self.outbox.clear()
        finally:
            self.drainer = None

    async def _send_in_order(self, message: dict[str, Any]) -> None:
        """Once the socket is accepted, behind what is already queued: a client sees its error
        before the close that follows it."""
        if not self.accepted:
            await self.asgi_send(message)
            return
        self.outbox.append(message)
        self._drain_soon()

    async def _send_error(self, code: str, detail: str, request: dict[str, Any]) -> None:
        self._push(events.error_frame(code, detail, request))


# One validating instance per serializer class: building a serializer deep-copies its fields,
# which was about a fifth of the event loop's time with 200 sockets sending (bench scenario 2).
# `run_validation` keeps no state on the instance, and consumers all run on the one event loop.
_validators: dict[type, Any] = {}


def _validated(serializer_class: type, content: dict[str, Any]) -> dict[str, Any]:
    validator = _validators.get(serializer_class)
    if validator is None:
        validator = _validators[serializer_class] = serializer_class()
    return validator.run_validation(content)


def _frame_size(text: str | None, data: bytes | None) -> int:
    """Size in bytes; UTF-8 encoding is skipped when the length alone decides."""
    if text is None:
        return len(data or b"")
    if len(text) * 4 <= settings.WS_MAX_FRAME_BYTES:
        return len(text)
    return len(text.encode())


def _decode(text: str | None) -> tuple[Any, str | None]:
    """(the frame's JSON value, None), or (None, why it is not JSON)."""
    if text is None:
        return None, "Frames must be JSON text, not binary."
    try:
        # NaN and Infinity are not JSON: echoed back, they would make our frames invalid.
        content = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):  # Deep nesting fits in 64 KiB: not a crash.
        return None, "The frame is not valid JSON."
    if _nested_deeper_than(content, MAX_JSON_DEPTH):
        # Parsed just under the recursion limit, it would still exhaust it later (validation
        # calls str() on it): refused here, whatever the stack depth happens to be.
        return None, f"The frame is nested deeper than {MAX_JSON_DEPTH} levels."
    return content, None


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether lists/objects nest more than `limit` levels (iterative: no recursion)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return False


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _shown(value: Any, limit: int = 100) -> str:
    """A short repr of a client value for an error detail (repr escapes lone surrogates)."""
    scalar = isinstance(value, str | int | float | type(None))
    shown = repr(value) if scalar else type(value).__name__
    return shown if len(shown) <= limit else shown[:limit] + "..."


def _echoable(value: Any) -> bool:
    if isinstance(value, str):
        # A lone surrogate (from a JSON escape) cannot be encoded into a text frame.
        return value.isascii() or not any("\ud800" <= char <= "\udfff" for char in value)
    return value is None or isinstance(value, int | float)


def _request_echo(content: Any) -> dict[str, Any]:
    """The offending event's type, chat_id and client_id, when it had them (scalars only)."""
    if not isinstance(content, dict):
        return {}
    return {
        key: content[key]
        for key in ("type", "chat_id", "client_id")
        if key in content and _echoable(content[key])
    }
