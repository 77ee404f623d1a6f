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

`BoundedWebSocketProtocol` is daphne's WebSocket protocol with this bound; `serving.server`
builds its sockets with it (plain `daphne` does not have the bound). It overrides two methods of
autobahn's public WebSocket interface, `onOpen` and `sendMessage` (daphne sends every
application frame through `sendMessage`). One internal remains, Twisted's `transport.producer`
(docs/internals.md, DA-6).
"""

from __future__ import annotations

import logging
from typing import Any

from daphne.ws_protocol import WebSocketProtocol
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


class BoundedWebSocketProtocol(WebSocketProtocol):
    """Daphne's WebSocket protocol, aborting a client that falls too far behind."""

    send_buffer_guard: SendBufferGuard | None = None
    dropped_for_backlog = False

    def onOpen(self) -> None:  # noqa: N802 - autobahn's interface.
        super().onOpen()
        self.send_buffer_guard = guard_transport(
            self.transport, settings.WS_MAX_OUTGOING_BUFFER_BYTES
        )

    def sendMessage(  # noqa: N802 - autobahn's interface (IWebSocketChannel.sendMessage).
        self,
        payload: bytes,
        isBinary: bool = False,  # noqa: N803
        fragmentSize: int | None = None,  # noqa: N803
        sync: bool = False,
        doNotCompress: bool = False,  # noqa: N803
    ) -> None:
        # Every frame of every socket passes here: the usual case (not paused) is one attribute
        # test, and autobahn's method is called as a plain function. Measured per frame with
        # timeit (daphne's serverSend down to a no-op send, the quieter runs): 0.54-0.60 us,
        # against 0.56-0.64 us for the monkeypatched serverSend this replaced; a super() call
        # with *args here cost 0.6-0.9 us more.
        guard = self.send_buffer_guard
        if guard is not None and guard.paused and not guard.admit(len(payload)):
            self._drop_for_backlog(guard.limit)
            return
        _autobahn_send_message(self, payload, isBinary, fragmentSize, sync, doNotCompress)

    def _drop_for_backlog(self, limit: int) -> None:
        if not self.dropped_for_backlog:
            self.dropped_for_backlog = True
            logger.warning(
                "dropping WebSocket client %s: more than %d bytes waiting for it", self.peer, limit
            )
            self.dropConnection(abort=True)


_autobahn_send_message = WebSocketProtocol.sendMessage
