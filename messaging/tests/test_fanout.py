"""The per-process fan-out of group events, and the membership gate chat events pass."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer

from messaging import events
from messaging.fanout import GroupFanout, local_fanout
from messaging.positions import ChatMembers


class Recorder:
    def __init__(self, user_id: int = 1) -> None:
        self.user_id = user_id
        self.events: list[dict[str, Any]] = []
        self.chat_events: list[tuple[Any, int, int | None]] = []
        self.reconnects = 0

    def on_group_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def on_chat_event(self, event: dict[str, Any], revision: int, joined: int | None) -> None:
        self.chat_events.append((event.get("seq", event["type"]), revision, joined))

    def on_layer_reconnected(self) -> None:
        self.reconnects += 1

    def seqs(self) -> list[Any]:
        return [seq for seq, _, _ in self.chat_events]


class Broken(Recorder):
    def on_chat_event(self, event: dict[str, Any], revision: int, joined: int | None) -> None:
        raise RuntimeError("this socket is broken")


class Members:
    """A stand-in for the database's membership reads: counts them, can fail or stall."""

    def __init__(self, revision: int = 1, joined: dict[int, int] | None = None) -> None:
        self.current = ChatMembers(revision, joined if joined is not None else {1: 1})
        self.reads = 0
        self.failures = 0
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, chat_id: int) -> ChatMembers:
        await self.release.wait()
        self.reads += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database restarting")
        return self.current


def change(chat_id: int, seq: int, rev: int = 1) -> dict[str, Any]:
    return {
        "type": "chat.change",
        "group": events.chat_group(chat_id),
        "chat_id": chat_id,
        "seq": seq,
        "rev": rev,
        "message_id": seq,
        "new": True,
        "frame": f"m{seq}",
    }


CHAT_1, CHAT_2 = events.chat_group(1), events.chat_group(2)


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


# --- One subscription per group per process -------------------------------------------------------


async def test_each_event_is_received_once_per_process_and_handed_to_every_local_socket():
    layer = InMemoryChannelLayer()
    fanout = GroupFanout(layer, load_members=Members(joined={1: 1, 2: 1}))
    first, second, elsewhere = Recorder(1), Recorder(2), Recorder(1)
    await fanout.join(CHAT_1, first)
    await fanout.join(CHAT_1, second)
    await fanout.join(CHAT_2, elsewhere)

    # One subscription per chat for the whole process, not one per socket.
    assert layer.groups[CHAT_1].keys() == {fanout.channel}

    await layer.group_send(CHAT_1, change(1, 10))
    await layer.group_send(CHAT_1, change(1, 11))
    await settle()

    assert first.seqs() == second.seqs() == [10, 11]
    assert elsewhere.chat_events == []
    for group, listener in [(CHAT_1, first), (CHAT_1, second), (CHAT_2, elsewhere)]:
        await fanout.leave(group, listener)


async def test_the_last_socket_to_leave_unsubscribes_and_stops_the_reader():
    layer = InMemoryChannelLayer()
    fanout = GroupFanout(layer, load_members=Members())
    first, second = Recorder(), Recorder()
    await fanout.join(CHAT_1, first)
    await fanout.join(CHAT_1, second)
    reader = fanout.reader

    await fanout.leave(CHAT_1, first)
    assert CHAT_1 in layer.groups  # `second` still needs it.
    await fanout.leave(CHAT_1, second)
    await settle()

    assert CHAT_1 not in layer.groups
    assert fanout.listeners == {} and fanout.channel is None
    assert reader is not None and reader.cancelled()
    await fanout.leave(CHAT_1, second)  # Leaving twice is harmless.

    # And it starts again on the next join.
    third = Recorder()
    await fanout.join(CHAT_1, third)
    await layer.group_send(CHAT_1, change(1, 12))
    await settle()
    assert third.seqs() == [12]
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
    fanout = GroupFanout(layer, load_members=Members(joined={1: 1, 2: 1}))
    leaving, joining = Recorder(1), Recorder(2)
    await fanout.join(CHAT_1, leaving)

    racing = [fanout.leave(CHAT_1, leaving), fanout.join(CHAT_1, joining)]
    await asyncio.gather(*(reversed(racing) if join_first else racing))
    assert layer.groups[CHAT_1].keys() == {fanout.channel}
    await layer.group_send(CHAT_1, change(1, 13))
    await settle()

    assert joining.seqs() == [13]
    assert leaving.chat_events == []
    await fanout.leave(CHAT_1, joining)


async def test_leaving_soon_then_joining_again_at_once_keeps_the_socket_in_the_group():
    """A socket that drops a chat and follows it again (left, then added back) must not
    lose the group to its own late unsubscription."""
    layer = SlowLayer()
    fanout = GroupFanout(layer, load_members=Members())
    socket = Recorder()
    await fanout.join(CHAT_1, socket)

    fanout.leave_soon(CHAT_1, socket)
    await fanout.join(CHAT_1, socket)
    await asyncio.sleep(0.05)
    await layer.group_send(CHAT_1, change(1, 1))
    await settle()

    assert socket.seqs() == [1]
    await fanout.leave(CHAT_1, socket)


async def test_a_failing_socket_does_not_cost_the_others_their_event():
    layer = InMemoryChannelLayer()
    fanout = GroupFanout(layer, load_members=Members(joined={1: 1, 2: 1}))
    broken, healthy = Broken(1), Recorder(2)
    await fanout.join(CHAT_1, broken)
    await fanout.join(CHAT_1, healthy)

    await layer.group_send(CHAT_1, change(1, 14))
    await settle()

    assert healthy.seqs() == [14]
    await fanout.leave(CHAT_1, broken)
    await fanout.leave(CHAT_1, healthy)


async def test_a_failed_subscription_raises_and_leaves_nothing_behind():
    class DownLayer(InMemoryChannelLayer):
        async def group_add(self, group: str, channel: str) -> None:
            raise ConnectionError("Redis is down")

    fanout = GroupFanout(DownLayer(), load_members=Members())
    with pytest.raises(ConnectionError):
        await fanout.join(CHAT_1, Recorder())
    assert fanout.listeners == {} and fanout.reader is None


async def test_there_is_one_fanout_per_event_loop_and_layer():
    layer = InMemoryChannelLayer()
    assert local_fanout(layer) is local_fanout(layer)
    assert local_fanout(InMemoryChannelLayer()) is not local_fanout(layer)


# --- The membership gate --------------------------------------------------------------------------


async def joined_fanout(members: Members, *listeners: Recorder) -> GroupFanout:
    fanout = GroupFanout(InMemoryChannelLayer(), load_members=members)
    for listener in listeners:
        await fanout.join(CHAT_1, listener)
    return fanout


async def test_each_socket_is_told_its_membership_as_of_the_events_revision():
    members = Members(revision=3, joined={1: 2, 2: 3})
    alice, bob, carol = Recorder(1), Recorder(2), Recorder(3)
    fanout = await joined_fanout(members, alice, bob, carol)

    fanout.hand_out(change(1, 1, rev=3))
    await settle()

    assert alice.chat_events == [(1, 3, 2)]
    assert bob.chat_events == [(1, 3, 3)]
    assert carol.chat_events == [(1, 3, None)]  # Not a member: its socket drops the chat.


async def test_members_are_read_once_per_revision_not_once_per_event():
    members = Members(revision=1)
    socket = Recorder()
    fanout = await joined_fanout(members, socket)

    for seq in range(1, 6):
        fanout.hand_out(change(1, seq, rev=1))
    await settle()
    assert members.reads == 1
    members.current = ChatMembers(2, {1: 1})
    fanout.hand_out(change(1, 6, rev=2))
    fanout.hand_out(change(1, 7, rev=2))
    await settle()

    assert members.reads == 2
    assert socket.seqs() == [1, 2, 3, 4, 5, 6, 7]


async def test_a_newer_revision_holds_the_chats_events_in_order_until_members_are_read():
    members = Members(revision=1)
    socket = Recorder()
    fanout = await joined_fanout(members, socket)
    fanout.hand_out(change(1, 1, rev=1))
    await settle()
    members.release.clear()  # The next read stalls.
    members.current = ChatMembers(2, {1: 1})

    fanout.hand_out(change(1, 2, rev=2))
    fanout.hand_out(change(1, 3, rev=1))  # Older revision, but behind 2: it waits too.
    typing = {"type": "chat.typing", "group": CHAT_1, "chat_id": 1, "user_id": 9, "frame": "t"}
    fanout.hand_out(typing)
    await settle()
    assert socket.seqs() == [1]
    members.release.set()
    await settle()

    assert socket.seqs() == [1, 2, 3, "chat.typing"]
    assert [revision for _, revision, _ in socket.chat_events] == [1, 2, 2, 2]


async def test_a_database_failure_holds_the_events_and_tries_again(monkeypatch):
    monkeypatch.setattr("messaging.fanout.RELOAD_PAUSE_SECONDS", 0.01)
    members = Members(revision=1)
    members.failures = 2
    socket = Recorder()
    fanout = await joined_fanout(members, socket)

    fanout.hand_out(change(1, 1))
    fanout.hand_out(change(1, 2))
    await asyncio.sleep(0.1)

    assert members.reads == 3 and socket.seqs() == [1, 2]


async def test_read_receipts_pass_the_gate_of_their_chat_and_only_when_followed_here():
    members = Members(revision=1, joined={1: 1})
    socket = Recorder(1)
    fanout = await joined_fanout(members)
    user_group = events.user_group(1)
    await fanout.join(user_group, socket)
    read = {"type": "user.read", "group": user_group, "chat_id": 1, "rev": 1, "frame": "r"}

    fanout.hand_out(read)  # No socket here follows chat 1: nothing to deliver to.
    await fanout.join(CHAT_1, socket)
    fanout.hand_out(read)
    await settle()

    assert socket.chat_events == [("user.read", 1, 1)]
    assert members.reads == 1


async def test_a_reconnected_layer_makes_every_socket_resync_once_and_members_be_read_again():
    members = Members(revision=1, joined={1: 1, 2: 1})
    alice, bob = Recorder(1), Recorder(2)
    fanout = await joined_fanout(members, alice, bob)
    await fanout.join(events.user_group(1), alice)
    fanout.hand_out(change(1, 1))
    await settle()

    fanout.hand_out({"type": "layer.reconnected"})
    fanout.hand_out(change(1, 2))
    await settle()

    assert (alice.reconnects, bob.reconnects) == (1, 1)
    assert members.reads == 2
