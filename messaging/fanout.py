"""One subscription per group per process, and the membership gate every chat event passes.

Channels gives every socket its own channel: a message to a chat of 100 local members is put
in 100 queues, decoded 100 times, and woken up in 100 tasks. Here a process (more exactly, an
event loop) holds one channel of its own, subscribed to every group (`chat.<id>`, `user.<id>`)
that has a socket on this instance; each event is received and decoded once, then handed to
each local socket of its group by a plain function call, which must not block (it queues
frames for the socket). Events name their group (`events.group_send` adds it).

Subscribing and unsubscribing a group are serialized by a lock of that group's, so its Redis
subscription never lags behind the sockets that need it: `join` returns once the subscription
is in place (the layer waits for Redis to confirm it), so nothing published after it can be
missed. Different groups are subscribed concurrently, which lets the channel layer put the
subscriptions of many sockets connecting at once into one SUBSCRIBE (a reconnect storm).

**Membership is authoritative.** An event about a chat (a change, its ChatInfo, typing, a
read receipt) reaches a socket only with the chat's membership as of the event's revision or
later, read from the database: the gate keeps, per chat, who is a member as of some revision
(`ChatMembers`), and an event with a newer revision (a membership changed since) is held, in
order with the chat's other events, until the members are read again. Each socket then
compares its own membership with it (messaging/delivery.py), so no change committed after a
user's removal reaches their sockets, even when the removal's own announcement was lost.
Cost: one query per chat per instance per membership change, and a dict lookup per delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from channels.db import database_sync_to_async

from chatproject import metrics
from messaging import positions
from messaging.positions import ChatMembers

logger = logging.getLogger(__name__)

# Pause before reading a chat's members again after the database failed.
RELOAD_PAUSE_SECONDS = 0.5
# Events of one chat held while its members are read; past this the oldest are dropped (the
# sockets fill the gap from the database once it answers again).
MAX_HELD_EVENTS = 10_000
# Event types about one chat, gated by its membership.
GATED_TYPES = frozenset({"chat.change", "chat.info", "chat.typing", "user.read"})


class Listener(Protocol):
    user_id: int

    def on_group_event(self, event: dict[str, Any]) -> None: ...

    def on_chat_event(
        self, event: dict[str, Any], members_revision: int, joined_revision: int | None
    ) -> None: ...

    def on_layer_reconnected(self) -> None: ...


LoadMembers = Callable[[int], Awaitable[ChatMembers]]


class MembershipGate:
    """Per chat: its members as of a revision, and the events waiting for a newer one."""

    def __init__(self, load: LoadMembers) -> None:
        self.load = load
        self.members: dict[int, ChatMembers] = {}
        self.held: dict[int, list[tuple[dict[str, Any], tuple[Listener, ...]]]] = {}

    def pass_on(self, event: dict[str, Any], listeners: tuple[Listener, ...]) -> None:
        chat_id = event["chat_id"]
        if (held := self.held.get(chat_id)) is not None:
            held.append((event, listeners))  # Behind the chat's earlier events.
            if len(held) > MAX_HELD_EVENTS:
                del held[0]
            return
        members = self.members.get(chat_id)
        if members is None or event.get("rev", -1) > members.revision:
            self.held[chat_id] = [(event, listeners)]
            asyncio.ensure_future(self._reload(chat_id))
            return
        _deliver(event, listeners, members)

    def forget(self, chat_id: int) -> None:
        """No socket here follows the chat any more."""
        self.members.pop(chat_id, None)

    def forget_all(self) -> None:
        """Events may have been lost (the layer reconnected): read every chat's members anew."""
        self.members.clear()

    async def _reload(self, chat_id: int) -> None:
        while True:
            try:
                members = await self.load(chat_id)
            except Exception:  # The database is away: hold on, in order, and try again.
                logger.warning("could not read the members of chat %s", chat_id, exc_info=True)
                await asyncio.sleep(RELOAD_PAUSE_SECONDS)
                continue
            self.members[chat_id] = members
            held = self.held[chat_id]
            while held and held[0][0].get("rev", -1) <= members.revision:
                event, listeners = held.pop(0)
                _deliver(event, listeners, members)
            if not held:  # Else a later change of the members: read them again.
                del self.held[chat_id]
                return


def _deliver(event: dict[str, Any], listeners: tuple[Listener, ...], members: ChatMembers) -> None:
    if metrics.ON:
        _count_delivered(event, len(listeners))
    for listener in listeners:
        try:
            listener.on_chat_event(event, members.revision, members.joined.get(listener.user_id))
        except Exception:  # One socket's failure must not cost the others their event.
            logger.exception("delivering a %s event failed", event.get("type"))


# The frame each layer event becomes on a socket (metrics: events delivered by type).
_FRAME_TYPES = {
    "chat.info": "chat_updated",
    "chat.typing": "typing",
    "user.read": "message_read",
    "user.membership": "membership_hint",
    "user.revoked": "session_revoked",
}
_delivered: dict[str, Any] = {}


def _count_delivered(event: dict[str, Any], sockets: int) -> None:
    kind = event.get("type", "?")
    if kind == "chat.change":
        kind = "new_message" if event.get("new") else "message_updated"
    else:
        kind = _FRAME_TYPES.get(kind, kind)
    counter = _delivered.get(kind)
    if counter is None:
        counter = _delivered[kind] = metrics.DELIVERED.labels(kind)
    counter.inc(sockets)


class GroupFanout:
    def __init__(self, layer: Any, load_members: LoadMembers | None = None) -> None:
        self.layer = layer
        # Groups subscribed on this event loop -> their local sockets. A group is a key only
        # while its subscription is in place.
        self.listeners: dict[str, set[Listener]] = {}
        # One lock per group being subscribed or unsubscribed (with how many hold or await
        # it), and one for making the loop's channel.
        self.locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self.channel_lock = asyncio.Lock()
        self.joining = 0  # Subscriptions in progress.
        self.channel: str | None = None
        self.reader: asyncio.Task[None] | None = None
        self.gate = MembershipGate(load_members or database_sync_to_async(positions.chat_members))

    async def join(self, group: str, listener: Listener) -> None:
        """Deliver the group's events to `listener` from now on. Raises if the layer fails."""
        if (listeners := self.listeners.get(group)) is not None:
            listeners.add(listener)  # Already subscribed: the usual case.
            return
        async with self._locked(group):
            if group not in self.listeners:
                self.joining += 1
                try:
                    await self.layer.group_add(group, await self._channel())
                except BaseException:
                    self.joining -= 1
                    self._stop_if_idle()
                    raise
                self.joining -= 1
                self.listeners[group] = set()
            self.listeners[group].add(listener)

    @contextlib.asynccontextmanager
    async def _locked(self, group: str) -> AsyncIterator[None]:
        """The group's lock, made on first use and dropped when nobody holds or awaits it."""
        lock, users = self.locks.get(group, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self.locks[group] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self.locks[group]
            if users == 1:
                del self.locks[group]
            else:
                self.locks[group] = (lock, users - 1)

    async def leave(self, group: str, listener: Listener) -> None:
        """Stop delivering the group to `listener`; unsubscribe when it was the last one."""
        if self._discard(group, listener):
            await self._unsubscribe_if_idle(group)

    def leave_soon(self, group: str, listener: Listener) -> None:
        """`leave`, for a caller that cannot wait: the listener gets nothing more of the group
        from now on (a join that follows at once is not undone), and the unsubscription, if
        any, happens in the background."""
        if self._discard(group, listener):
            asyncio.ensure_future(self._unsubscribe_if_idle(group))

    def _discard(self, group: str, listener: Listener) -> bool:
        """Whether the group is left without listeners."""
        listeners = self.listeners.get(group)
        if listeners is None:
            return False
        listeners.discard(listener)
        return not listeners

    async def _unsubscribe_if_idle(self, group: str) -> None:
        async with self._locked(group):
            current = self.listeners.get(group)
            if current is None or current:
                return  # Another leave unsubscribed already, or someone joined meanwhile.
            del self.listeners[group]
            if group.startswith("chat."):
                self.gate.forget(int(group.removeprefix("chat.")))
            try:
                await self.layer.group_discard(group, self.channel)
            except Exception:  # Redis down: its subscriptions are gone with the connection.
                logger.debug("group_discard of %s failed", group, exc_info=True)
            self._stop_if_idle()

    async def _channel(self) -> str:
        if self.channel is not None:
            return self.channel
        async with self.channel_lock:
            if self.channel is None:
                channel = await self.layer.new_channel()
                self.reader = asyncio.create_task(self._read(channel))
                self.channel = channel
        return self.channel

    def _stop_if_idle(self) -> None:
        if not self.listeners and not self.joining and self.reader is not None:
            # Cancelling `receive` makes the layer drop the channel and its subscription.
            self.reader.cancel()
            self.reader = None
            self.channel = None

    async def _read(self, channel: str) -> None:
        while True:
            try:
                event = await self.layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception:  # Should not happen: the layer reconnects on its own.
                logger.exception("receiving group events failed")
                await asyncio.sleep(0.1)
                continue
            self.hand_out(event)

    def hand_out(self, event: dict[str, Any]) -> None:
        if event.get("type") == "layer.reconnected":
            self._reconnected()
            return
        listeners = tuple(self.listeners.get(event.get("group"), ()))  # type: ignore[arg-type]
        if not listeners:
            return
        if event.get("type") in GATED_TYPES:
            if f"chat.{event['chat_id']}" in self.listeners:
                self.gate.pass_on(event, listeners)
            # Else no socket here follows that chat: nobody to deliver to.
            return
        if metrics.ON:
            _count_delivered(event, len(listeners))
        for listener in listeners:
            try:
                listener.on_group_event(event)
            except Exception:  # One socket's failure must not cost the others their event.
                logger.exception("delivering a %s event failed", event.get("type"))

    def _reconnected(self) -> None:
        """Events published while the layer was away are lost: every socket reads its
        memberships and its chats' changes from the database again."""
        listeners = {listener for group in self.listeners.values() for listener in group}
        logger.info("channel layer reconnected: resynchronising %d sockets", len(listeners))
        self.gate.forget_all()
        for listener in listeners:
            try:
                listener.on_layer_reconnected()
            except Exception:
                logger.exception("resynchronising a socket after a reconnect failed")


_fanouts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GroupFanout] = (
    weakref.WeakKeyDictionary()
)


def local_fanout(layer: Any) -> GroupFanout:
    """The fan-out of the running event loop for `layer` (one per loop: tests run several)."""
    loop = asyncio.get_running_loop()
    fanout = _fanouts.get(loop)
    if fanout is None or fanout.layer is not layer:
        fanout = _fanouts[loop] = GroupFanout(layer)
    return fanout
