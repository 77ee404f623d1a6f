"""A bound on what daphne buffers for a WebSocket client that does not read.

ASGI gives an application no way to see that a client has stopped reading: under daphne,
`websocket.send` returns at once and the frame joins the connection's Twisted write buffer,
which has no limit. A client that keeps its socket open without reading (a stalled phone, a
hostile script) makes the server hold every broadcast for it in memory until daphne's ping
timeout drops it (`--ping-interval` 20 s + `--ping-timeout` 30 s by default), and a client
that answers pings but reads slower than its chats talk is never dropped at all.

Twisted's public flow-control API tells when a connection falls behind: a producer registered
on the transport is paused once more than 64 KiB wait in its write buffer, and resumed when the
buffer has drained. Each WebSocket registers one; when more than WS_MAX_OUTGOING_BUFFER_BYTES
are sent while it stays paused, the connection is aborted. The application sees an ordinary
`websocket.disconnect`, and the client, when it comes back, catches up with `?after=`.

`install()` applies this to daphne's WebSocket protocol (the stock one and subclasses of it);
it does nothing when the process is not running daphne.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from django.conf import settings
from zope.interface import implementer

logger = logging.getLogger(__name__)

try:  # Twisted comes with daphne; under another server there is nothing to bound here.
    from twisted.internet.interfaces import IPushProducer
except ImportError:  # pragma: no cover
    IPushProducer = None


class SendBufferGuard:
    """The Twisted producer of one WebSocket connection: counts what is sent while the
    connection's write buffer is over Twisted's high-water mark.

    The transport already has a producer: the HTTP channel the WebSocket was upgraded from,
    which stops reading from a client that does not read. The guard takes its place and
    passes every call on to it, so that behaviour stays."""

    def __init__(self, protocol: Any, limit: int, wrapped: Any = None) -> None:
        self.protocol = protocol
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


if IPushProducer is not None:
    SendBufferGuard = implementer(IPushProducer)(SendBufferGuard)


def _guarded_on_open(original: Any) -> Any:
    def onOpen(self: Any) -> None:  # noqa: N802 - daphne's method name.
        original(self)
        transport = self.transport
        wrapped = getattr(transport, "producer", None)
        if wrapped is not None and not getattr(transport, "streamingProducer", True):
            return  # A pull producer we cannot stand in for: leave the connection as is.
        guard = SendBufferGuard(self, settings.WS_MAX_OUTGOING_BUFFER_BYTES, wrapped)
        if wrapped is not None:
            transport.unregisterProducer()
        transport.registerProducer(guard, True)
        self.send_buffer_guard = guard

    return onOpen


def _guarded_server_send(original: Any) -> Any:
    def serverSend(self: Any, content: str | bytes, binary: bool = False) -> None:  # noqa: N802
        guard = getattr(self, "send_buffer_guard", None)
        if guard is not None and not guard.admit(len(content)):
            if not getattr(self, "dropped_for_backlog", False):
                self.dropped_for_backlog = True
                logger.warning(
                    "dropping WebSocket client %s: more than %d bytes waiting for it",
                    self.client_addr,
                    guard.limit,
                )
                self.dropConnection(abort=True)
            return
        original(self, content, binary)

    return serverSend


def install() -> None:
    """Bound the send buffers of daphne's WebSocket connections (once; no-op without daphne)."""
    module = sys.modules.get("daphne.ws_protocol")
    if module is None or IPushProducer is None:
        return
    protocol = module.WebSocketProtocol
    if getattr(protocol, "send_buffers_bounded", False):
        return
    protocol.onOpen = _guarded_on_open(protocol.onOpen)
    protocol.serverSend = _guarded_server_send(protocol.serverSend)
    protocol.send_buffers_bounded = True
