"""The server's own ceiling: an ASGI application that accepts every WebSocket and does nothing.

Run by the bench under the primary server (uvicorn, as the service is) in scenario 6, with the
same handshakes from the same client as scenario 3: what is left between its accept rate and
the service's is the application's part of a handshake (the token, the user and memberships
read, the subscriptions), the rest is the server's, the event loop's and the kernel's.
"""

from __future__ import annotations

from typing import Any


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    while (message := await receive())["type"] != "websocket.disconnect":
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
