"""A bound on what daphne buffers for a WebSocket client that does not read.

ASGI gives an application no way to see that a client has stopped reading: under daphne,
`websocket.send` returns at once and the frame joins the connection's Twisted write buffer,
which has no limit. A client that keeps its socket open without reading (a stalled phone, a
hostile script) makes the server hold every broadcast for it in memory until daphne's ping
timeout drops it (`--ping-interval` 20 s + `--ping-timeout` 30 s by default), and a client
that answers pings but reads slower than its chats talk is never dropped at all.

Twisted's flow-control API tells when a connection falls behind: a streaming producer
registered on the transport is paused once more than the transport's `bufferSize` (64 KiB)
waits in its write buffer, and resumed when the buffer has drained. Each WebSocket registers
one; when more than WS_MAX_OUTGOING_BUFFER_BYTES are sent while it stays paused, the connection
is aborted. The application sees an ordinary `websocket.disconnect`, and the client, when it
comes back, catches up with `?after=`.

`BoundedSendBuffer` is a mixin for daphne's WebSocket protocol; `serving.server` builds its
sockets with it (plain `daphne` does not have this bound). It overrides two methods of
autobahn's public WebSocket interface, `onOpen` and `sendMessage` (daphne sends every
application frame through `sendMessage`). One internal remains, Twisted's `transport.producer`
(docs/internals.md, DA-6).
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

logger = logging.getLogger(__name__)


@implementer(IPushProducer)
class SendBufferGuard:
    """The Twisted producer of one WebSocket connection: counts what is sent while the
    connection's write buffer is over Twisted's high-water mark.

    The transport already has a producer: the HTTP channel the WebSocket was upgraded from,
    which stops reading from a client that does not read. The guard takes its place and
    passes every call on to it, so that behaviour stays."""

    def __init__(self, limit: int, wrapped: Any = None) -> None:
        self.limit = limit
        self.wrapped = wrapped
        self.paused = False
        self.sent_while_paused = 0

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's interface.
        self.paused = True
        if self.wrapped is not None:
            self.wrapped.pauseProducing()

    def resumeProducing(self) -> None:  # noqa: N802
        self.paused = False
        self.sent_while_paused = 0
        if self.wrapped is not None:
            self.wrapped.resumeProducing()

    def stopProducing(self) -> None:  # noqa: N802
        self.paused = False
        if self.wrapped is not None:
            self.wrapped.stopProducing()

    def admit(self, size: int) -> bool:
        """Count a frame about to be sent; False when the client is too far behind."""
        if not self.paused:
            return True
        self.sent_while_paused += size
        return self.sent_while_paused <= self.limit


def guard_transport(transport: Any, limit: int) -> SendBufferGuard | None:
    """Register a guard as the transport's producer, standing in for the one it had; None
    when that one is a pull producer, which a push producer cannot stand in for."""
    # Not part of ITransport: an attribute of Twisted's FileDescriptor (docs/internals.md DA-6).
    wrapped = getattr(transport, "producer", None)
    if wrapped is not None and not getattr(transport, "streamingProducer", True):
        return None
    guard = SendBufferGuard(limit, wrapped)
    if wrapped is not None:
        transport.unregisterProducer()
    transport.registerProducer(guard, True)
    return guard


class BoundedSendBuffer:
    """Mixin for daphne's `WebSocketProtocol`: aborts a client that falls too far behind."""

    send_buffer_guard: SendBufferGuard | None = None
    dropped_for_backlog = False

    def onOpen(self) -> None:  # noqa: N802 - autobahn's interface.
        super().onOpen()  # type: ignore[misc]
        self.send_buffer_guard = guard_transport(
            self.transport,  # type: ignore[attr-defined]
            settings.WS_MAX_OUTGOING_BUFFER_BYTES,
        )

    def sendMessage(  # noqa: N802 - autobahn's interface.
        self,
        payload: bytes,
        isBinary: bool = False,
        *args: Any,
        **kwargs: Any,  # noqa: N803
    ) -> None:
        guard = self.send_buffer_guard
        if guard is not None and not guard.admit(len(payload)):
            if not self.dropped_for_backlog:
                self.dropped_for_backlog = True
                logger.warning(
                    "dropping WebSocket client %s: more than %d bytes waiting for it",
                    self.peer,  # type: ignore[attr-defined]
                    guard.limit,
                )
                self.dropConnection(abort=True)  # type: ignore[attr-defined]
            return
        super().sendMessage(payload, isBinary, *args, **kwargs)  # type: ignore[misc]
