"""The reference ceiling: a bare `websockets` broadcast server (no framework, no database).

It speaks just enough of the contract for the load generator's room fan-out: each
`new_message` gets an id and is broadcast, encoded once, to every open socket (one room).
Whatever the service reaches is read as a fraction of what this reaches on the same machine.
Run as `python -m bench.reference_server PORT`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from datetime import UTC, datetime

from websockets.asyncio.server import ServerConnection, broadcast, serve

CLIENTS: set[ServerConnection] = set()
IDS = itertools.count(1)


async def handle(ws: ServerConnection) -> None:
    CLIENTS.add(ws)
    try:
        async for raw in ws:
            event = json.loads(raw)
            message = {
                "id": next(IDS),
                "chat_id": event.get("chat_id"),
                "author_id": 0,
                "text": event.get("text"),
                "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "client_id": event.get("client_id"),
            }
            broadcast(CLIENTS, json.dumps({"type": "new_message", "message": message}))
    finally:
        CLIENTS.discard(ws)


async def main(port: int) -> None:
    async with serve(handle, "127.0.0.1", port, compression=None, ping_interval=None):
        await asyncio.Future()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main(int(sys.argv[1])))
    except ImportError:  # pragma: no cover - bench/requirements.txt installs uvloop
        asyncio.run(main(int(sys.argv[1])))
