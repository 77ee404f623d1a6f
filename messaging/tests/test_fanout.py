"""The per-process fan-out of group events, and the socket's outbox in front of the server."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer
from django.test import override_settings

from messaging import events
from messaging.consumers import CLOSE_TRY_AGAIN_LATER, ChatConsumer
from messaging.fanout import GroupFanout, local_fanout
from messaging.streams import ChatStream


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def on_group_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)


class Broken:
    def on_group_event(self, event: dict[str, Any]) -> None:
        raise RuntimeError("this socket is broken")


def chat_event(chat_id: int, n: int) -> dict[str, Any]:
    return {
        "type": "chat.message",
        "group": events.chat_group(chat_id),
        "chat_id": chat_id,
        "message_id": n,
        "previous_id": None,
    }


CHAT_1, CHAT_2 = events.chat_group(1), events.chat_group(2)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_each_event_is_received_once_per_process_and_handed_to_every_local_socket():
    layer = InMemoryChannelLayer()
    fanout = GroupFanout(layer)
    first, second, elsewhere = Recorder(), Recorder(), Recorder()
    await fanout.join(CHAT_1, first)
    await fanout.join(CHAT_1, second)
    await fanout.join(CHAT_2, elsewhere)

    # One subscription per chat for the whole process, not one per socket.
    assert layer.groups[events.chat_group(1)].keys() == {fanout.channel}

    await layer.group_send(events.chat_group(1), chat_event(1, 10))
    await layer.group_send(events.chat_group(1), chat_event(1, 11))
    await settle()

    assert [e["message_id"] for e in first.events] == [10, 11]
    assert [e["message_id"] for e in second.events] == [10, 11]
    assert elsewhere.events == []
    await fanout.leave(CHAT_1, first)
    await fanout.leave(CHAT_1, second)
    await fanout.leave(CHAT_2, elsewhere)


async def test_the_last_socket_to_leave_unsubscribes_and_stops_the_reader():
    layer = InMemoryChannelLayer()
    fanout = GroupFanout(layer)
    first, second = Recorder(), Recorder()
    await fanout.join(CHAT_1, first)
    await fanout.join(CHAT_1, second)
    reader = fanout.reader

    await fanout.leave(CHAT_1, first)
    assert events.chat_group(1) in layer.groups  # `second` still needs it.
    await fanout.leave(CHAT_1, second)
    await settle()

    assert events.chat_group(1) not in layer.groups
    assert fanout.listeners == {} and fanout.channel is None
    assert reader is not None and reader.cancelled()
    await fanout.leave(CHAT_1, second)  # Leaving twice is harmless.

    # And it starts again on the next join.
    third = Recorder()
    await fanout.join(CHAT_1, third)
    await layer.group_send(events.chat_group(1), chat_event(1, 12))
    await settle()
    assert [e["message_id"] for e in third.events] == [12]
    await fanout.leave(CHAT_1, third)


class SlowLayer(InMemoryChannelLayer):
    """Subscribing and unsubscribing take a round trip, as they do with Redis."""

    async def group_add(self, group: str, channel: str) -> None:
        await asyncio.sleep(0.01)
        await super().group_add(group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        await asyncio.sleep(0.01)
        await super().group_discard(group, channel)


@pytest.mark.parametrize("join_first", [False, True])
async def test_a_join_racing_the_last_leave_keeps_the_subscription(join_first):
    layer = SlowLayer()
    fanout = GroupFanout(layer)
    leaving, joining = Recorder(), Recorder()
    await fanout.join(CHAT_1, leaving)

    racing = [fanout.leave(CHAT_1, leaving), fanout.join(CHAT_1, joining)]
    await asyncio.gather(*(reversed(racing) if join_first else racing))
    assert layer.groups[events.chat_group(1)].keys() == {fanout.channel}
    await layer.group_send(events.chat_group(1), chat_event(1, 13))
    await settle()

    assert [e["message_id"] for e in joining.events] == [13]
    assert leaving.events == []
    await fanout.leave(CHAT_1, joining)


async def test_a_failing_socket_does_not_cost_the_others_their_event():
    layer = InMemoryChannelLayer()
    fanout = GroupFanout(layer)
    broken, healthy = Broken(), Recorder()
    await fanout.join(CHAT_1, broken)
    await fanout.join(CHAT_1, healthy)

    await layer.group_send(events.chat_group(1), chat_event(1, 14))
    await settle()

    assert [e["message_id"] for e in healthy.events] == [14]
    await fanout.leave(CHAT_1, broken)
    await fanout.leave(CHAT_1, healthy)


async def test_a_failed_subscription_raises_and_leaves_nothing_behind():
    class DownLayer(InMemoryChannelLayer):
        async def group_add(self, group: str, channel: str) -> None:
            raise ConnectionError("Redis is down")

    fanout = GroupFanout(DownLayer())
    with pytest.raises(ConnectionError):
        await fanout.join(CHAT_1, Recorder())
    assert fanout.listeners == {} and fanout.reader is None


async def test_there_is_one_fanout_per_event_loop_and_layer():
    layer = InMemoryChannelLayer()
    assert local_fanout(layer) is local_fanout(layer)
    assert local_fanout(InMemoryChannelLayer()) is not local_fanout(layer)


# --- The socket's outbox --------------------------------------------------------------------------


class StalledClient:
    """A server-side send that waits, like uvicorn's for a client that stopped reading."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.reading = asyncio.Event()

    async def __call__(self, message: dict[str, Any]) -> None:
        await self.reading.wait()
        self.sent.append(message)


def accepted_consumer(asgi_send: Any) -> ChatConsumer:
    consumer = ChatConsumer()
    consumer.user = SimpleNamespace(pk=1)
    consumer.asgi_send = asgi_send
    consumer.accepted = True
    return consumer


async def test_frames_go_out_in_the_order_they_were_queued():
    client = StalledClient()
    client.reading.set()
    consumer = accepted_consumer(client)

    for n in range(5):
        consumer._push(f"frame {n}")
    await consumer.close(code=4000)
    await settle()

    assert [m.get("text") for m in client.sent[:5]] == [f"frame {n}" for n in range(5)]
    assert client.sent[5] == {"type": "websocket.close", "code": 4000}


@override_settings(WS_MAX_OUTGOING_BUFFER_BYTES=1000)
async def test_a_socket_that_falls_behind_is_closed_and_holds_no_more_than_the_bound():
    client = StalledClient()
    consumer = accepted_consumer(client)

    consumer._push("x" * 400)  # Taken by the drainer, which then waits on the client.
    await settle()
    for _ in range(10):
        consumer._push("y" * 400)

    # Past the bound, what waited is dropped: only the close is left to send.
    assert list(consumer.outbox) == [{"type": "websocket.close", "code": CLOSE_TRY_AGAIN_LATER}]
    client.reading.set()
    await settle()
    assert [m["type"] for m in client.sent] == ["websocket.send", "websocket.close"]
    assert client.sent[1]["code"] == CLOSE_TRY_AGAIN_LATER


async def test_one_stalled_socket_does_not_hold_up_the_others():
    stalled_client, reading_client = StalledClient(), StalledClient()
    reading_client.reading.set()
    stalled, reading = accepted_consumer(stalled_client), accepted_consumer(reading_client)
    fanout = GroupFanout(InMemoryChannelLayer())
    await fanout.join(CHAT_1, stalled)
    await fanout.join(CHAT_1, reading)
    for consumer in (stalled, reading):
        consumer.streams[1] = ChatStream(chat_id=1, last_id=None)

    for n in range(1, 4):
        fanout._hand_out(
            {**chat_event(1, n), "previous_id": n - 1 or None, "frame": f"message {n}"}
        )
    await settle()

    assert [m["text"] for m in reading_client.sent] == ["message 1", "message 2", "message 3"]
    assert stalled_client.sent == []
    stalled_client.reading.set()
    await settle()
    assert [m["text"] for m in stalled_client.sent] == ["message 1", "message 2", "message 3"]
    await fanout.leave(CHAT_1, stalled)
    await fanout.leave(CHAT_1, reading)


async def test_gaps_that_close_by_themselves_are_not_read_from_the_database(monkeypatch):
    """A busy chat nearly always has a short gap open at a sender's socket; only a message
    that waits the whole GAP_WAIT_SECONDS is a reason to read the database."""
    client = StalledClient()
    client.reading.set()
    consumer = accepted_consumer(client)
    consumer.streams[1] = ChatStream(chat_id=1, last_id=None)
    reads = []

    async def frames_between(*args: Any) -> list[tuple[int, str]]:
        reads.append(args)
        return []

    monkeypatch.setattr("messaging.consumers._frames_between", frames_between)
    monkeypatch.setattr("messaging.consumers.GAP_WAIT_SECONDS", 0.2)

    def arrives(n: int) -> None:
        event = {**chat_event(1, n), "previous_id": n - 1 or None, "frame": f"message {n}"}
        consumer.on_group_event(event)

    arrives(2)  # Ahead of 1: a gap opens.
    await asyncio.sleep(0.12)
    arrives(1)
    arrives(4)  # A new gap, 0.12 s into the first one's wait.
    await asyncio.sleep(0.12)
    arrives(3)
    await asyncio.sleep(0.3)

    assert reads == []
    assert [m["text"] for m in client.sent] == [f"message {n}" for n in range(1, 5)]

    arrives(6)  # 5 never comes: read once its successor has waited the whole delay.
    await asyncio.sleep(0.35)
    assert reads == [(1, 4, 6)]
