"""A client that stops reading while its chat gets 500 broadcasts, on a real daphne.

What must hold: the sender and the other members see nothing of it (every message, in order,
promptly), and the server does not keep the stalled client's backlog in memory without bound:
once more than WS_MAX_OUTGOING_BUFFER_BYTES wait for it, daphne aborts the connection
(serving/backpressure.py). Without that bound, the backlog stayed in daphne's memory until
the ping timeout (50 s), and a client that answers pings but reads slowly was never dropped.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from websockets.asyncio.client import connect

from conftest import access_token
from tests_adversarial.live import running_cluster

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.multiprocess,
    pytest.mark.django_db(transaction=True),
]

BROADCASTS = 500
TEXT = "é" * 4090  # About the longest text: 8 KiB of UTF-8 per frame, 4 MiB in all.
BUFFER_LIMIT = 512 * 1024
# RSS is not an exact measure (allocator arenas, the 500 messages' own processing): the bound
# is the limit, a few frames in flight, and slack; without the guard the whole backlog stays.
RSS_GROWTH_BOUND = 3 * 1024 * 1024


def _open_stalled_client(host: str, port: int, token: str) -> socket.socket:
    """A raw WebSocket handshake, then never another read (and a 4 KiB receive window)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /chats/ws?token={token} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)  # One byte at a time: no frame is read by accident.
    assert b" 101 " in response.split(b"\r\n")[0], response
    return sock


def _closed_by_server(sock: socket.socket, within: float) -> tuple[bool, int]:
    """Read what is left; (whether the server ended the connection, bytes read)."""
    sock.settimeout(0.5)
    deadline, received = time.monotonic() + within, 0
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True, received
        if not chunk:
            return True, received
        received += len(chunk)
    return False, received


async def test_a_stalled_reader_is_dropped_and_nobody_else_notices(
    make_user, make_chat, tmp_path: Path
) -> None:
    sender, member, stalled = [await sync_to_async(make_user)() for _ in range(3)]
    chat = await sync_to_async(make_chat)(sender, [member, stalled])
    env = {"WS_MAX_OUTGOING_BUFFER_BYTES": str(BUFFER_LIMIT)}
    with running_cluster(tmp_path, instances=1, extra_env=env) as cluster:
        server = cluster.instances[0]
        url = server.ws_url
        async with (
            connect(url(token=access_token(sender)), proxy=None, max_size=None) as sending,
            connect(url(token=access_token(member)), proxy=None, max_size=None) as reading,
        ):
            stalled_socket = _open_stalled_client(server.host, server.port, access_token(stalled))
            await asyncio.sleep(0.5)  # Let the server settle before measuring.
            rss_before = cluster.rss(server)
            received: list[int] = []

            async def read_all() -> None:
                async for raw in reading:
                    received.append(json.loads(raw)["message"]["id"])
                    if len(received) == BROADCASTS + 1:
                        return

            reader = asyncio.create_task(read_all())
            acked = []
            started = time.monotonic()
            for n in range(BROADCASTS):
                await sending.send(
                    json.dumps({"type": "new_message", "chat_id": chat.pk, "text": f"{n}{TEXT}"})
                )
                acked.append(json.loads(await sending.recv())["message"]["id"])
            sending_seconds = time.monotonic() - started
            rss_after = cluster.rss(server)

            closed, read = await asyncio.to_thread(_closed_by_server, stalled_socket, 10.0)
            stalled_socket.close()
            # The others never noticed: one more message, and everything arrived, in order.
            await sending.send(json.dumps({"type": "new_message", "chat_id": chat.pk, "text": "!"}))
            acked.append(json.loads(await sending.recv())["message"]["id"])
            await asyncio.wait_for(reader, 30)

    assert closed, "the stalled client was never dropped"
    assert read < BROADCASTS * len(TEXT.encode()) // 2, read
    assert received == acked
    assert sending_seconds < 60, sending_seconds
    assert rss_after - rss_before < RSS_GROWTH_BOUND, (rss_before, rss_after)
    assert "dropping WebSocket client" in cluster.logs()
