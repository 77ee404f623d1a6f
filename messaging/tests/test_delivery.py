"""A socket's chat subscriptions: what is read from the database, and when."""

from __future__ import annotations

import asyncio
from typing import Any

from channels.layers import InMemoryChannelLayer

from messaging.delivery import ChatSubscriptions
from messaging.fanout import GroupFanout
from messaging.positions import ChatMembers, Missed
from messaging.streams import ChatStream, Found


class Socket:
    user_id = 1

    def __init__(self) -> None:
        self.frames: list[str] = []

    def on_chat_event(self, *args: Any) -> None:
        pass


async def members(chat_id: int) -> ChatMembers:
    return ChatMembers(1, {1: 1})


def subscriptions(socket: Socket) -> ChatSubscriptions:
    chats = ChatSubscriptions(
        user_id=1,
        socket_id="s",
        fanout=GroupFanout(InMemoryChannelLayer(), load_members=members),
        listener=socket,  # type: ignore[arg-type]
        push=socket.frames.append,
    )
    chats.streams[1] = ChatStream(chat_id=1, last_seq=0, newest_id=0, joined_revision=1)
    return chats


def change(seq: int) -> dict[str, Any]:
    return {
        "type": "chat.change",
        "chat_id": 1,
        "seq": seq,
        "rev": 1,
        "message_id": seq,
        "new": True,
        "frame": f"message {seq}",
    }


async def test_gaps_that_close_by_themselves_are_not_read_from_the_database(monkeypatch):
    """A busy chat nearly always has a short gap open at an actor's socket; only a change
    that waits the whole GAP_WAIT_SECONDS is a reason to read the database."""
    socket = Socket()
    chats = subscriptions(socket)
    reads = []

    async def missed_changes(**kwargs: Any) -> Missed:
        reads.append(kwargs["after_seq"])
        found = [
            Found(seq, seq, False, lambda n=seq: f"message {n} (read)", lambda: "")
            for seq in (5, 6)
        ]
        return Missed(found=found, up_to_seq=6, chat_seq=6)

    monkeypatch.setattr("messaging.delivery._missed_changes", missed_changes)
    monkeypatch.setattr("messaging.delivery.GAP_WAIT_SECONDS", 0.2)

    def arrives(seq: int) -> None:
        chats.on_chat_event(change(seq), 1, 1)

    arrives(2)  # Ahead of 1: a gap opens.
    await asyncio.sleep(0.12)
    arrives(1)
    arrives(4)  # A new gap, 0.12 s into the first one's wait.
    await asyncio.sleep(0.12)
    arrives(3)
    await asyncio.sleep(0.3)

    assert reads == []
    assert socket.frames == [f"message {n}" for n in range(1, 5)]

    arrives(6)  # 5 never comes: read once its successor has waited the whole delay.
    await asyncio.sleep(0.35)
    assert reads == [4]
    assert socket.frames[4:] == ["message 5 (read)", "message 6 (read)"]


async def test_a_membership_that_ended_drops_the_chat_at_the_first_sign(monkeypatch):
    socket = Socket()
    chats = subscriptions(socket)
    chats.started = True
    reconciled = []

    async def reconcile(chat_id: int | None) -> None:
        reconciled.append(chat_id)

    monkeypatch.setattr(chats, "_reconcile", reconcile)

    chats.on_chat_event(change(1), 2, None)  # Members as of revision 2: not among them.
    chats.on_chat_event(change(2), 2, None)
    await asyncio.sleep(0.01)

    assert socket.frames == ['{"type":"chat_removed","chat_id":1}']
    assert not chats.follows(1) and reconciled == [1]


async def test_events_from_before_the_membership_began_are_ignored_not_taken_for_a_removal():
    socket = Socket()
    chats = subscriptions(socket)
    chats.streams[1].joined_revision = 5

    chats.on_chat_event({**change(1), "type": "chat.typing", "user_id": 2}, 4, None)

    assert socket.frames == [] and chats.follows(1)
