"""One subscription per group per process: the events of all local sockets, received once.

Channels gives every socket its own channel: a message to a chat of 100 local members is put
in 100 queues, decoded 100 times, and woken up in 100 tasks, each created anew per message by
the consumer's `await_many_dispatch`. That was most of the server's CPU per delivered frame
(docs/performance.md), and each socket's channel cost it a Redis subscription, a queue and a
waiting task. Here a process (more exactly, an event loop) holds one channel of its own,
subscribed to every group (`chat.<id>`, `user.<id>`) that has a socket on this instance; each
event is received and decoded once, then handed to each local socket of its group by a plain
function call (`Listener.on_group_event`), which must not block: it queues frames for the
socket. Events name their group (`events.group_send` adds it).

Subscribing and unsubscribing are serialized by one lock, so a group's Redis subscription
never lags behind the sockets that need it: `join` returns once the subscription is in place,
so nothing published after it can be missed.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class Listener(Protocol):
    def on_group_event(self, event: dict[str, Any]) -> None: ...


class GroupFanout:
    def __init__(self, layer: Any) -> None:
        self.layer = layer
        # Groups subscribed on this event loop -> their local sockets. A group is a key only
        # while its subscription is in place.
        self.listeners: dict[str, set[Listener]] = {}
        self.lock = asyncio.Lock()
        self.channel: str | None = None
        self.reader: asyncio.Task[None] | None = None

    async def join(self, group: str, listener: Listener) -> None:
        """Deliver the group's events to `listener` from now on. Raises if the layer fails."""
        if (listeners := self.listeners.get(group)) is not None:
            listeners.add(listener)  # Already subscribed: the usual case.
            return
        async with self.lock:
            if group not in self.listeners:
                try:
                    await self.layer.group_add(group, await self._channel())
                except BaseException:
                    self._stop_if_idle()
                    raise
                self.listeners[group] = set()
            self.listeners[group].add(listener)

    async def leave(self, group: str, listener: Listener) -> None:
        """Stop delivering the group to `listener`; unsubscribe when it was the last one."""
        listeners = self.listeners.get(group)
        if listeners is None:
            return
        listeners.discard(listener)
        if listeners:
            return
        async with self.lock:
            current = self.listeners.get(group)
            if current is None or current:
                return  # Another leave unsubscribed already, or someone joined meanwhile.
            del self.listeners[group]
            try:
                await self.layer.group_discard(group, self.channel)
            except Exception:  # Redis down: its subscriptions are gone with the connection.
                logger.debug("group_discard of %s failed", group, exc_info=True)
            self._stop_if_idle()

    async def _channel(self) -> str:
        if self.channel is None:
            self.channel = await self.layer.new_channel()
            self.reader = asyncio.create_task(self._read(self.channel))
        return self.channel

    def _stop_if_idle(self) -> None:
        if not self.listeners and self.reader is not None:
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
            self._hand_out(event)

    def _hand_out(self, event: dict[str, Any]) -> None:
        for listener in tuple(self.listeners.get(event.get("group"), ())):  # type: ignore[arg-type]
            try:
                listener.on_group_event(event)
            except Exception:  # One socket's failure must not cost the others their event.
                logger.exception("delivering a %s event failed", event.get("type"))


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
