"""What one socket sends to its client: one ordered queue, drained by one task at a time.

Nothing that queues a frame ever waits: the fan-out hands a frame to hundreds of sockets in a
row, and one socket whose server-side send blocks (a client that stopped reading, under an
ASGI server whose send waits, such as uvicorn) must hold up only itself. Memory is bounded by
`max_bytes`: past it, what waits is dropped and the socket is closed with 1013 as soon as it
can take the close (the client reconnects and catches up). Under daphne, whose send never
waits, serving/backpressure.py bounds the transport's buffer instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)

CLOSE_TRY_AGAIN_LATER = 1013

Send = Callable[[dict[str, Any]], Awaitable[None]]


class Outbox:
    def __init__(self, send: Send, *, max_bytes: int, name: str = "socket") -> None:
        self.send = send
        self.max_bytes = max_bytes
        self.name = name
        self.queue: deque[dict[str, Any]] = deque()
        self.queued_bytes = 0
        # Frames are held until the socket is accepted, then sent in order.
        self.open = False
        self.fell_behind = False
        self.closing = False
        self.stopped = False
        self.drainer: asyncio.Task[None] | None = None

    def push(self, frame: str) -> None:
        """Queue a text frame for the client."""
        if self.fell_behind or self.closing or self.stopped:
            return  # Only the close is still to go out, or nothing at all.
        self.queue.append({"type": "websocket.send", "text": frame})
        self.queued_bytes += len(frame)
        if self.queued_bytes > self.max_bytes:
            logger.warning("%s fell behind; closing it", self.name)
            self.fell_behind = True
            self.queue.clear()
            self.queued_bytes = 0
            self.queue.append({"type": "websocket.close", "code": CLOSE_TRY_AGAIN_LATER})
        self._drain_soon()

    def put(self, message: dict[str, Any]) -> None:
        """Queue any ASGI message (a close, say) behind what is already queued."""
        if message.get("type") == "websocket.close":
            if self.closing:
                return
            self.closing = True
        self.queue.append(message)
        self._drain_soon()

    def start(self) -> None:
        """The socket is accepted: send what waits, and from now on as it comes."""
        self.open = True
        self._drain_soon()

    def stop(self) -> None:
        """The socket is gone: drop what waits and stop sending."""
        self.open = False
        self.stopped = True
        self.queue.clear()
        self.queued_bytes = 0
        if self.drainer is not None:
            self.drainer.cancel()
            self.drainer = None

    def _drain_soon(self) -> None:
        if self.drainer is None and self.open and self.queue:
            self.drainer = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self.queue:
                message = self.queue.popleft()
                self.queued_bytes -= len(message.get("text", ""))
                await self.send(message)
        except Exception:  # The client is gone; its disconnect is on its way.
            logger.debug("send to a closed socket", exc_info=True)
            self.queue.clear()
            self.queued_bytes = 0
        finally:
            self.drainer = None
