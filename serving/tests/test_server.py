"""Our daphne (`python -m serving.server`) as a process, on the embedded defaults (a SQLite file,
the in-memory layer), so these run without PostgreSQL or Redis: what serving/server.py and
serving/backpressure.py add to stock daphne, through the internals docs/internals.md lists
(DA-1 to DA-6). CI runs the same behaviours through the Docker entrypoint as well
(chatproject/tests/test_deploy.py, tests_adversarial/test_slow_reader.py).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from bench.embedded import embedded_server
from liveserver.processes import DaphneServer, http_status

pytestmark = pytest.mark.multiprocess

# Small, so that a client that stops reading is dropped soon after the kernel's buffers fill.
BUFFER_LIMIT = 64 * 1024
# 8 MB in all, twice what the kernel may buffer for the stalled client (tcp_wmem max 4 MiB).
MAX_BROADCASTS = 1000


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaphneServer, dict[str, Any]]]:
    """One server for the module (the SIGTERM test, last, stops it): two members of a room."""
    env = {
        "WS_MAX_OUTGOING_BUFFER_BYTES": str(BUFFER_LIMIT),
        # The sender sends hundreds of messages in a few seconds: not what is tested here.
        "WS_RATE_BURST": "10000",
        "WS_RATE_PER_SECOND": "10000",
    }
    with embedded_server(tmp_path_factory.mktemp("serving"), users=2, extra_env=env) as started:
        yield started


def wait_for_log(server: DaphneServer, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while text not in (log := server.read_log()):
        assert time.monotonic() < deadline, f"{text!r} never logged:\n{server.log_tail()}"
        time.sleep(0.05)
    return log


def test_an_oversized_frame_closes_with_1009(live: tuple[DaphneServer, dict[str, Any]]) -> None:
    """Stock daphne turns the consumer's 1009 into 1011 (autobahn's sendClose refuses it)."""
    server, seeded = live
    with connect(server.ws_url(token=seeded["tokens"][0])) as ws:
        ws.send("x" * (64 * 1024 + 1))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_the_access_log_redacts_the_token(live: tuple[DaphneServer, dict[str, Any]]) -> None:
    server, seeded = live
    token = seeded["tokens"][1]
    assert http_status(server.http_url(f"/users/me?token={token}&limit=5")) == 401
    with connect(server.ws_url(token=token)):
        pass
    log = wait_for_log(server, '"action": "disconnected"')
    assert "/users/me?token=[redacted]&limit=5" in log
    assert '"path": "/chats/ws"' in log  # daphne gives WebSocket actions the path alone.
    assert token not in log and token.split(".")[2] not in log


def open_stalled_client(server: DaphneServer, token: str) -> socket.socket:
    """A raw WebSocket handshake, then never another read (and a 4 KiB receive window)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((server.host, server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /chats/ws?token={token} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)  # One byte at a time: no frame is read by accident.
    assert b" 101 " in response.split(b"\r\n")[0], response
    return sock


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Read what is left: whether the server ended the connection within `within` seconds."""
    sock.settimeout(0.5)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True
    return False


def test_a_client_that_stops_reading_is_dropped(live: tuple[DaphneServer, dict[str, Any]]) -> None:
    """The kernel's send buffer (up to 4 MiB here) takes what the client does not read first;
    only then does daphne's buffer grow, and the guard counts."""
    server, seeded = live
    dropped = f"more than {BUFFER_LIMIT} bytes waiting for it"
    stalled = open_stalled_client(server, seeded["tokens"][1])
    try:
        text = "é" * 4090  # 8 KB of UTF-8 a frame.
        with connect(server.ws_url(token=seeded["tokens"][0]), max_size=None) as sending:
            for n in range(MAX_BROADCASTS):
                event = {"type": "new_message", "chat_id": seeded["room"], "text": f"{n}{text}"}
                sending.send(json.dumps(event))
                answer = json.loads(sending.recv(timeout=10))
                assert answer["type"] == "new_message", answer  # The sender is unaffected.
                if n % 20 == 0 and dropped in server.read_log():
                    break
        assert closed_by_server(stalled, within=10), "the stalled client was never dropped"
    finally:
        stalled.close()
    assert dropped in server.read_log()


# Last: it stops the module's server.
def test_sigterm_closes_sockets_with_1001_and_exits(
    live: tuple[DaphneServer, dict[str, Any]],
) -> None:
    server, seeded = live
    with connect(server.ws_url(token=seeded["tokens"][0])) as ws:
        server.terminate()  # SIGTERM
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert server.wait_exit(timeout=10) == 0, server.log_tail()
    assert "closing 1 WebSocket(s) with 1001" in server.read_log()
