"""The chats one socket follows: which, from where, and each one's changes in order.

`ChatSubscriptions` holds a socket's `ChatStream`s (messaging/streams.py) and keeps them true
to the database:
- at connect, one per membership, starting where the chat stands;
- on a membership hint (`user.membership`, sent after any membership change of the user), on
  a sign from the gate that the membership it delivers for has ended (messaging/fanout.py), and
  after the channel layer reconnected, it re-reads the membership (`reconcile`): a chat left
  is dropped (`chat_removed`); a chat joined is followed from where the membership began
  (`chat_updated`, then every change after the join, read from the database if needed);
- a change that does not come in time (a lost broadcast) is read from the database (`fill`).
Reconciling runs one chat at a time, in order, in one task per socket. Reading all of a
user's memberships (at connect, and to reconcile every chat) goes in a batch with every other
socket's of the moment (chatproject/batching.py): one query per batch in a reconnect storm.

Frames go to the socket through `push`, which never blocks.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async

from chatproject import metrics
from chatproject.batching import BatchedRead
from messaging import events, positions, services
from messaging.fanout import GroupFanout, Listener
from messaging.positions import Membership
from messaging.streams import Change, ChatStream

logger = logging.getLogger(__name__)

# How long a change may wait for its predecessor before the gap is read from the database.
GAP_WAIT_SECONDS = 0.3
# Pause before retrying to reconcile after the database or the layer failed.
RETRY_PAUSE_SECONDS = 1.0
ALL_CHATS = 0  # In the reconcile queue: every chat of the user (chat ids start at 1).

_memberships = database_sync_to_async(positions.memberships)
memberships_of_users: BatchedRead[int, dict[int, Membership]] = BatchedRead(
    positions.memberships_of_users, name="memberships"
)


async def _all_memberships(user_id: int) -> dict[int, Membership]:
    """Every membership of the user, read in a batch with other sockets' (by chat id)."""
    return await memberships_of_users.get(user_id) or {}


_missed_changes = database_sync_to_async(positions.missed_changes)
_chat_info = database_sync_to_async(services.chat_info_load)


class ChatSubscriptions:
    def __init__(
        self,
        *,
        user_id: int,
        socket_id: str,
        fanout: GroupFanout,
        listener: Listener,
        push: Callable[[str], None],
    ) -> None:
        self.user_id = user_id
        self.socket_id = socket_id
        self.fanout = fanout
        self.listener = listener  # What the fan-out calls (the consumer, which forwards here).
        self.push = push
        self.streams: dict[int, ChatStream] = {}
        self.groups: set[str] = set()
        self.gap_tasks: dict[int, asyncio.Task[None]] = {}
        self.to_reconcile: OrderedDict[int, None] = OrderedDict()
        self.reconciler: asyncio.Task[None] | None = None
        self.reconciling = asyncio.Lock()
        self.started = False

    # --- Lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Follow the user's group and every chat they are a member of. Raises when the
        channel layer or the database fails (the socket is then refused with 1013)."""
        await self._join(events.user_group(self.user_id))
        memberships = (await _all_memberships(self.user_id)).values()
        for membership in memberships:
            self.streams[membership.chat_id] = ChatStream(
                chat_id=membership.chat_id,
                last_seq=membership.chat_seq,
                newest_id=membership.newest_id or 0,
                joined_revision=membership.joined_revision,
                info_revision=membership.chat_revision,
            )
        # Each stream is there before its chat's events can come; subscribed all at once (the
        # channel layer puts new subscriptions in one SUBSCRIBE).
        await asyncio.gather(
            *(self._join(events.chat_group(membership.chat_id)) for membership in memberships)
        )
        # Then everything is checked once more against the database, now that every
        # subscription is in place: a change committed between the read above and its chat's
        # subscription is read (`fill`), a membership ended meanwhile is dropped, one begun is
        # followed. Hints that came while subscribing are applied after that, in order.
        self.started = True
        self.to_reconcile[ALL_CHATS] = None
        self.to_reconcile.move_to_end(ALL_CHATS, last=False)
        self._reconcile_soon()

    def stop(self) -> None:
        """The socket is gone: stop every task, leave every group (in the background)."""
        for task in self.gap_tasks.values():
            task.cancel()
        self.gap_tasks.clear()
        if self.reconciler is not None:
            self.reconciler.cancel()
            self.reconciler = None
        self.streams.clear()
        for group in self.groups:
            self.fanout.leave_soon(group, self.listener)
        self.groups.clear()

    async def _join(self, group: str) -> None:
        # Noted first: if this is cancelled halfway (the socket closing), `stop` still leaves
        # the group, and leaving a group never joined is harmless.
        self.groups.add(group)
        try:
            await self.fanout.join(group, self.listener)
        except BaseException:
            self.groups.discard(group)
            raise

    # --- Events --------------------------------------------------------------------------------

    def on_chat_event(
        self, event: dict[str, Any], members_revision: int, joined_revision: int | None
    ) -> None:
        """An event about one chat, with the chat's members as of `members_revision` (at or
        after the event's own revision): `joined_revision` is this user's membership then."""
        chat_id = event["chat_id"]
        stream = self.streams.get(chat_id)
        if stream is None:
            return
        if members_revision < stream.joined_revision:
            return  # From before this membership began.
        if joined_revision != stream.joined_revision:
            # Removed (perhaps back again since): nothing more of this membership.
            self._drop(chat_id)
            self.reconcile_soon(chat_id)
            return
        kind = event["type"]
        if kind == "chat.change":
            change = Change(event["seq"], event["message_id"], event["new"], event["frame"])
            self._deliver(stream, change)
        elif kind == "chat.info":
            if event["rev"] > stream.info_revision:
                stream.info_revision = event["rev"]
                self.push(event["frame"])
        elif kind == "chat.typing":
            if event["user_id"] != self.user_id:
                self.push(event["frame"])
        elif kind == "user.read":
            if event["origin"] != self.socket_id:
                self.push(event["frame"])

    def deliver_own(self, change: Change, chat_id: int) -> None:
        """The socket's own change (its send's result), in order with the rest."""
        stream = self.streams.get(chat_id)
        if stream is None:
            self.push(change.frame)
        else:
            self._deliver(stream, change)

    async def catch_up_to(self, chat_id: int, seq: int) -> None:
        """Show every change of the chat up to `seq` now, from the database if need be: what
        comes next (a resend's answer, which carries its message's latest seq) must not run
        ahead of the socket's seq order, or a client catching up from the largest seq it saw
        would skip what lay between. Raises when the database fails."""
        while (stream := self.streams.get(chat_id)) is not None and stream.last_seq < seq:
            if not await self._read_missed(chat_id, stream):
                return

    def follows(self, chat_id: int) -> bool:
        return chat_id in self.streams

    async def follow(self, chat_id: int) -> bool:
        """Make sure the socket follows the chat if the user is a member (a send to a chat
        created a moment ago may come before its membership hint); True when it does."""
        if chat_id not in self.streams:
            await self._reconcile(chat_id)
        return chat_id in self.streams

    def reconcile_soon(self, chat_id: int) -> None:
        """Re-read the user's membership of the chat (ALL_CHATS: of every chat) and act on it."""
        self.to_reconcile[chat_id] = None
        self._reconcile_soon()

    def resync(self) -> None:
        """Events may have been lost (the layer reconnected): check every chat."""
        self.reconcile_soon(ALL_CHATS)

    # --- Reconciling with the database ---------------------------------------------------------

    def _reconcile_soon(self) -> None:
        if self.started and self.reconciler is None and self.to_reconcile:
            self.reconciler = asyncio.create_task(self._reconcile_all_queued())

    async def _reconcile_all_queued(self) -> None:
        try:
            while self.to_reconcile:
                chat_id, _ = self.to_reconcile.popitem(last=False)
                try:
                    await self._reconcile(None if chat_id == ALL_CHATS else chat_id)
                except Exception:  # Database or Redis away: try again in a moment.
                    logger.warning("reconciling chat %s failed", chat_id, exc_info=True)
                    self.to_reconcile[chat_id] = None
                    await asyncio.sleep(RETRY_PAUSE_SECONDS)
        finally:
            self.reconciler = None

    async def _reconcile(self, chat_id: int | None) -> None:
        async with self.reconciling:
            if chat_id is None:
                found = await _all_memberships(self.user_id)
            else:
                found = await _memberships(self.user_id, chat_id)
            chat_ids = set(self.streams) | set(found) if chat_id is None else {chat_id}
            for one in sorted(chat_ids):
                await self._reconcile_one(one, found.get(one))

    async def _reconcile_one(self, chat_id: int, membership: Membership | None) -> None:
        stream = self.streams.get(chat_id)
        if stream is not None and (
            membership is None or membership.joined_revision != stream.joined_revision
        ):
            self._drop(chat_id)
            stream = None
        if membership is None:
            return
        if stream is not None:
            if membership.chat_seq > stream.last_seq:
                self._schedule_fill(chat_id, delay=0)  # Changes lost on the way: read them.
            return
        loaded = await _chat_info(chat_id)
        if loaded is None:
            return  # Deleted meanwhile.
        info_revision, info = loaded
        await self._join(events.chat_group(chat_id))
        self.streams[chat_id] = ChatStream(
            chat_id=chat_id,
            last_seq=membership.joined_seq,
            newest_id=membership.joined_message_id or 0,
            joined_revision=membership.joined_revision,
            info_revision=info_revision,
        )
        self.push(events.chat_updated_frame(info))
        # Changes committed since the join, up to the subscription: from the database (read
        # now that the subscription is in place, so nothing falls between the two).
        self._schedule_fill(chat_id, delay=0)

    def _drop(self, chat_id: int) -> None:
        if self.streams.pop(chat_id, None) is None:
            return
        if task := self.gap_tasks.pop(chat_id, None):
            task.cancel()
        self.push(events.chat_removed_frame(chat_id))
        group = events.chat_group(chat_id)
        self.groups.discard(group)
        self.fanout.leave_soon(group, self.listener)

    # --- Order and gaps ------------------------------------------------------------------------

    def _deliver(self, stream: ChatStream, change: Change) -> None:
        for frame in stream.accept(change):
            self.push(frame)
        if stream.has_gap:
            self._schedule_fill(stream.chat_id, delay=GAP_WAIT_SECONDS)

    def _schedule_fill(self, chat_id: int, *, delay: float) -> None:
        if chat_id not in self.gap_tasks:
            self.gap_tasks[chat_id] = asyncio.create_task(self._fill(chat_id, delay))

    async def _fill(self, chat_id: int, delay: float) -> None:
        """Wait for a missing change; if it does not come, read what was missed.

        Only a change that has waited `delay` is a reason to read: an actor's own copy
        usually arrives before its predecessors' broadcasts, so while a chat is busy there is
        nearly always a short gap open, and it closes by itself."""
        try:
            if delay and not await self._gap_outlasts(chat_id, delay):
                return
            while (stream := self.streams.get(chat_id)) is not None:
                if not await self._read_missed(chat_id, stream):
                    return
        except asyncio.CancelledError:
            raise
        except Exception:  # Database unreachable: the next change retries the gap.
            logger.warning("could not fill a gap in chat %s", chat_id, exc_info=True)
        finally:
            if self.gap_tasks.get(chat_id) is asyncio.current_task():
                del self.gap_tasks[chat_id]

    async def _read_missed(self, chat_id: int, stream: ChatStream) -> bool:
        """Read one page of the changes after the stream's last seq and show them; True when
        the database has more."""
        if metrics.ON:
            metrics.GAP_FILLS.inc()
        missed = await _missed_changes(
            chat_id=chat_id,
            user_id=self.user_id,
            joined_revision=stream.joined_revision,
            after_seq=stream.last_seq,
        )
        if self.streams.get(chat_id) is not stream:
            return False  # Dropped meanwhile.
        if missed is None:  # The membership ended: nothing of it after all.
            self._drop(chat_id)
            self.reconcile_soon(chat_id)
            return False
        for frame in stream.fill(missed.found, missed.up_to_seq):
            self.push(frame)
        return missed.up_to_seq < missed.chat_seq

    async def _gap_outlasts(self, chat_id: int, delay: float) -> bool:
        """Whether some change still waits after waiting `delay` itself."""
        while True:
            stream = self.streams.get(chat_id)
            watched = stream.newest_waiting_seq() if stream and stream.has_gap else None
            await asyncio.sleep(delay)
            stream = self.streams.get(chat_id)
            if stream is None or not stream.has_gap:
                return False
            if watched in stream.waiting:
                return True
