"""The chat WebSocket: decode, check limits, dispatch by type to a service, relay events.

Protocol: docs/websocket.md. Rules live in `messaging.services`; which chats a socket follows
and in what order their changes go out live in `messaging.delivery`; what the socket sends
waits in its `messaging.outbox`; when its session ends is `messaging.sessions`' business.
This module translates between frames and those.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from rest_framework.exceptions import ValidationError

from accounts.auth import access_token_check
from chatproject import metrics
from chatproject.errors import ApplicationError, NotFound
from messaging import events, frames, services
from messaging.delivery import ChatSubscriptions
from messaging.fanout import local_fanout
from messaging.limits import sockets
from messaging.outbox import CLOSE_TRY_AGAIN_LATER, Outbox
from messaging.serializers import (
    AuthEventSerializer,
    ChatEventSerializer,
    NewMessageEventSerializer,
    ReadMessageEventSerializer,
    first_error,
)
from messaging.sessions import local_watch
from messaging.streams import Change
from messaging.writers import run_on_writer

logger = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_MANY_SOCKETS = 4429
CLOSE_TOO_BIG = 1009

_check_token = database_sync_to_async(access_token_check)


class EventError(Exception):
    """A client event was refused; becomes an `error` frame to the sending socket only."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class ChatConsumer(AsyncJsonWebsocketConsumer):
    """One socket. Its events (its chats', its user's) come from the process's `GroupFanout`
    (`on_group_event`, `on_chat_event`), not from a channel of its own."""

    user: Any
    chats: ChatSubscriptions
    outbox: Outbox

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Names this socket in its own read receipts (`origin`), which it does not echo.
        self.socket_id = uuid.uuid4().hex
        self.counted = False  # Whether this socket counts against its user's socket cap.
        self.accepted = False  # Whether it was accepted (not refused at its handshake).
        self.released = False
        self.token_version = 0
        self.token_expires_at: float | None = None
        self.base_send = self._send_in_order  # Where Channels' send, accept and close end.

    @property
    def user_id(self) -> int:
        return self.user.pk

    # --- Lifecycle ---------------------------------------------------------------------------

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch, without its `aclose_old_connections()` before every handler: that
        is a hop to the one shared sync thread for each client frame, queued behind every
        query, and it is not needed here, since this consumer's database work goes through
        `database_sync_to_async` or the writer threads, which close stale connections around
        each call themselves (docs/internals.md)."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Channels' `AsyncConsumer.__call__`, without the channel it would give the socket
        (a Redis subscription, a queue and a waiting task per socket, and a new task per frame
        to wait on both): layer events come through `GroupFanout` instead, so only the
        client's frames are read here, one at a time (docs/internals.md)."""
        self.scope = scope
        self.asgi_send = send
        self.channel_layer = get_channel_layer()
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        finally:  # Also when the server cancels us without a disconnect (its close timeout).
            self._release()

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self._refuse(CLOSE_UNAUTHORIZED)
            return
        self.user = user
        self.token_version = self.scope.get("token_version", 0)
        self.token_expires_at = self.scope.get("token_expires_at")
        if not sockets.open(
            user.pk,
            max_sockets=settings.WS_MAX_SOCKETS_PER_USER,
            burst=settings.WS_RATE_BURST,
            per_second=settings.WS_RATE_PER_SECOND,
        ):
            await self._refuse(CLOSE_TOO_MANY_SOCKETS)
            return
        self.counted = True
        self.outbox = Outbox(
            self.asgi_send,
            max_bytes=settings.WS_MAX_OUTGOING_BUFFER_BYTES,
            name=f"socket of user {user.pk}",
        )
        self.chats = ChatSubscriptions(
            user_id=user.pk,
            socket_id=self.socket_id,
            fanout=local_fanout(self.channel_layer),
            listener=self,
            push=self.outbox.push,
        )
        try:
            await self.chats.start()
        except Exception:  # The channel layer or the database is down: come back later.
            logger.warning("could not subscribe socket of user %s", user.pk, exc_info=True)
            await self._refuse(CLOSE_TRY_AGAIN_LATER)
            return
        await self.accept()
        self.accepted = True
        if metrics.ON:
            metrics.CONNECTS.inc()
            metrics.SOCKETS_OPEN.inc()
        self.outbox.start()  # With the events that came during the handshake.
        local_watch().watch(self)

    async def _refuse(self, code: int) -> None:
        await self.accept()
        await self.close(code=code)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """Channels' handler, without its `aclose_old_connections()` after `disconnect`: one
        more hop to the shared sync thread for each socket that goes, which a storm of
        reconnects pays thousands of times over, for the reason given in `dispatch`
        (docs/internals.md, CH-2). This consumer joins no `self.groups`."""
        await self.disconnect(message["code"])
        raise StopConsumer()

    async def disconnect(self, code: int) -> None:
        if metrics.ON:  # Refused at the handshake too: then with the code it was refused with.
            metrics.CLOSES.labels(str(code)).inc()
        self._release()

    def _release(self) -> None:
        """Give back all the socket holds, once: its slot, its tasks, its groups."""
        if self.released:
            return
        self.released = True
        if metrics.ON and self.accepted:
            metrics.SOCKETS_OPEN.dec()
        if not self.counted:
            return
        sockets.close(self.user.pk)
        local_watch().forget(self)
        self.outbox.stop()
        self.chats.stop()

    # --- Events from the fan-out (must not block) --------------------------------------------

    def on_group_event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "user.membership":
            self.chats.reconcile_soon(event["chat_id"])
        elif kind == "user.revoked":
            if event["token_version"] > self.token_version:
                self.end_session()

    def on_chat_event(
        self, event: dict[str, Any], members_revision: int, joined_revision: int | None
    ) -> None:
        self.chats.on_chat_event(event, members_revision, joined_revision)

    def on_layer_reconnected(self) -> None:
        self.chats.resync()

    def end_session(self) -> None:
        """The token expired or was revoked: close with 4401, after what is already queued."""
        local_watch().forget(self)
        self.outbox.put({"type": "websocket.close", "code": CLOSE_UNAUTHORIZED})

    # --- Client -> server ------------------------------------------------------------------------

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        """Replaces Channels' decoding, which lets a binary or non-JSON frame kill the socket."""
        if not self.counted or self.outbox.closing:
            return  # Refused at connect, or closing: frames sent meanwhile are ignored.
        text = message.get("text")
        if frames.frame_size(text, message.get("bytes")) > settings.WS_MAX_FRAME_BYTES:
            await self.close(code=CLOSE_TOO_BIG)
            return
        allowed = await sockets.allow_event(self.user.pk)
        content, problem = frames.decode(text)
        if not allowed:
            # Echoed like any error, so the client knows which client_id to send again.
            echo = frames.request_echo(content) if problem is None else {}
            self._send_error("rate_limited", "Too many events; slow down.", echo)
            return
        if problem is not None:
            self._send_error("invalid_json", problem, {})
            return
        await self.receive_json(content)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        echo = frames.request_echo(content)
        try:
            if not isinstance(content, dict):
                raise EventError("validation_error", "An event must be a JSON object.")
            event_type = content.get("type")
            # Only the client event names: a list or object as `type` is not a crash.
            handler = self.HANDLERS.get(event_type) if isinstance(event_type, str) else None
            if handler is None:
                raise EventError("unknown_type", f"Unknown event type: {frames.shown(event_type)}.")
            await handler(self, content)
        except EventError as exc:
            self._send_error(exc.code, exc.detail, echo)
        except ApplicationError as exc:
            self._send_error(exc.code, exc.detail, echo)
        except ValidationError as exc:
            self._send_error("validation_error", first_error(exc.detail), echo)
        except Exception:  # The database failed us, not the client: it may retry.
            logger.exception("event %s failed", echo.get("type"))
            self._send_error(
                "server_error", "The server could not handle this event; retry it.", echo
            )

    async def on_new_message(self, content: dict[str, Any]) -> None:
        data = _validated(NewMessageEventSerializer, content)
        chat_id = data["chat_id"]
        if not self.chats.follows(chat_id):
            # Joined a moment ago (the hint is on its way) or not a member: the send decides.
            await self.chats.follow(chat_id)
        try:
            sent = await run_on_writer(
                chat_id,
                services.message_send,
                batch=services.message_send_many,
                author=self.user,
                chat_id=chat_id,
                text=data["text"],
                client_id=data.get("client_id"),
            )
        except NotFound:
            if self.chats.follows(chat_id):  # Removed, and the socket has not heard yet.
                self.chats.reconcile_soon(chat_id)
            raise
        if not sent.created:
            # A repeat of an earlier client_id: answer with the original, to this socket only,
            # once the socket has shown every change of the chat up to the answer's seq.
            await self.chats.catch_up_to(chat_id, sent.message.seq)
            self.outbox.push(sent.frame)
            return
        # Our own copy goes straight to this socket, not through Redis, so the sender gets it
        # even when the channel layer is down; the copy that comes back through it is dropped.
        message = sent.message
        self.chats.deliver_own(Change(message.seq, message.pk, True, sent.frame), chat_id)

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
        if not self.chats.follows(chat_id) and not await self.chats.follow(chat_id):
            raise NotFound()
        await events.publish_typing(chat_id=chat_id, user_id=self.user.pk)

    async def on_auth(self, content: dict[str, Any]) -> None:
        """Renew the session in band with a newer access token of the same user."""
        token = _validated(AuthEventSerializer, content)["token"]
        checked = await _check_token(token)
        if checked is None or checked.user.pk != self.user.pk:
            self.end_session()
            return
        self.token_version = checked.token_version
        self.token_expires_at = checked.expires_at
        local_watch().watch(self)
        expires_at = datetime.fromtimestamp(checked.expires_at, tz=UTC)
        self.outbox.push(
            events.encode({"type": "authenticated", "expires_at": events.timestamp(expires_at)})
        )

    HANDLERS = {
        "new_message": on_new_message,
        "read_message": on_read_message,
        "typing": on_typing,
        "auth": on_auth,
    }

    # --- Sending ---------------------------------------------------------------------------------

    async def _send_in_order(self, message: dict[str, Any]) -> None:
        """Once the socket is accepted, behind what is already queued: a client sees its error
        before the close that follows it."""
        if self.counted and self.outbox.open:
            self.outbox.put(message)
        else:
            await self.asgi_send(message)

    def _send_error(self, code: str, detail: str, request: dict[str, Any]) -> None:
        self.outbox.push(events.error_frame(code, detail, request))


# One validating instance per serializer class: building a serializer deep-copies its fields,
# which was about a fifth of the event loop's time with 200 sockets sending (bench scenario 2).
# `run_validation` keeps no state on the instance, and consumers all run on the one event loop
# (docs/internals.md).
_validators: dict[type, Any] = {}


def _validated(serializer_class: type, content: dict[str, Any]) -> dict[str, Any]:
    validator = _validators.get(serializer_class)
    if validator is None:
        validator = _validators[serializer_class] = serializer_class()
    return validator.run_validation(content)
