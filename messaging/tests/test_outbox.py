"""The socket's outbox: in order, never blocking the fan-out, bounded."""

from __future__ import annotations

import asyncio
from typing import Any

from messaging.outbox import CLOSE_TRY_AGAIN_LATER, Outbox


class StalledClient:
    """A server-side send that waits, like uvicorn's for a client that stopped reading."""

    def __init__(self, reading: bool = False) -> None:
        self.sent: list[dict[str, Any]] = []
        self.reading = asyncio.Event()
        if reading:
            self.reading.set()

    async def __call__(self, message: dict[str, Any]) -> None:
        await self.reading.wait()
        self.sent.append(message)


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_frames_wait_for_the_accept_then_go_out_in_the_order_they_were_queued():
    client = StalledClient(reading=True)
    outbox = Outbox(client, max_bytes=10_000)

    for n in range(3):
        outbox.push(f"frame {n}")
    await settle()
    assert client.sent == []  # Not accepted yet.
    outbox.start()
    outbox.push("frame 3")
    outbox.put({"type": "websocket.close", "code": 4000})
    outbox.push("after the close")
    await settle()

    assert [m.get("text") for m in client.sent[:4]] == [f"frame {n}" for n in range(4)]
    assert client.sent[4:] == [{"type": "websocket.close", "code": 4000}]


async def test_a_socket_that_falls_behind_is_closed_and_holds_no_more_than_the_bound():
    client = StalledClient()
    outbox = Outbox(client, max_bytes=1000)
    outbox.start()

    outbox.push("x" * 400)  # Taken by the drainer, which then waits on the client.
    await settle()
    for _ in range(10):
        outbox.push("y" * 400)

    # Past the bound, what waited is dropped: only the close is left to send.
    assert list(outbox.queue) == [{"type": "websocket.close", "code": CLOSE_TRY_AGAIN_LATER}]
    client.reading.set()
    await settle()
    assert [m["type"] for m in client.sent] == ["websocket.send", "websocket.close"]
    assert client.sent[1]["code"] == CLOSE_TRY_AGAIN_LATER


async def test_one_stalled_socket_does_not_hold_up_the_others():
    stalled_client, reading_client = StalledClient(), StalledClient(reading=True)
    stalled, reading = (
        Outbox(stalled_client, max_bytes=10_000),
        Outbox(reading_client, max_bytes=10_000),
    )
    stalled.start()
    reading.start()

    for n in range(1, 4):  # What the fan-out does: hand each frame to each socket in turn.
        stalled.push(f"message {n}")
        reading.push(f"message {n}")
    await settle()

    assert [m["text"] for m in reading_client.sent] == ["message 1", "message 2", "message 3"]
    assert stalled_client.sent == []
    stalled_client.reading.set()
    await settle()
    assert [m["text"] for m in stalled_client.sent] == ["message 1", "message 2", "message 3"]


async def test_a_stopped_outbox_sends_nothing_more():
    client = StalledClient(reading=True)
    outbox = Outbox(client, max_bytes=10_000)
    outbox.start()
    outbox.stop()

    outbox.push("too late")
    await settle()

    assert client.sent == []
