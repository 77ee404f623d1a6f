"""The channel layer: Redis pub/sub over one or more Redis servers, on redis-py's public API.

Channels' layer interface (`new_channel`, `receive`, `send`, `group_add`, `group_discard`,
`group_send`, `flush`) over plain Redis PUBLISH/SUBSCRIBE, as channels-redis's
`RedisPubSubChannelLayer` does, and wire-compatible with it (the same Redis channel names, the
same shard of each name, msgpack payloads), so instances of either kind can share Redis during
a rolling upgrade. Written against redis-py's public API (`redis.asyncio.Redis`, its pipelines
and `PubSub`), it needs none of channels-redis's internals; what it does on top:

- **Several Redis servers.** `hosts` lists one URL per server (`REDIS_URL` may be a
  comma-separated list); each Redis channel (a group's, or a local channel's) lives on one of
  them, chosen by channels-redis's consistent hash of its name. Publishing, subscribing and
  reconnecting are per server: losing one loses live delivery only for what lives on it.
- **Pipelined publishing.** Every publish waiting for a server at one moment goes to it in one
  pipelined round trip, in the order asked (one batch in flight per server). The stock layer
  publishes one message at a time, each waiting for its reply, which under fan-out load made
  publishes time out and live sockets miss messages (docs/performance.md).
- **Subscriptions that are in place when `group_add` returns.** Redis confirms each SUBSCRIBE
  on the subscriber connection; `group_add` waits for that confirmation (redis-py's `subscribe`
  only sends the command), so nothing published after it returns can be missed. Subscriptions
  asked for at the same moment go in one SUBSCRIBE, and are confirmed together: a burst of
  sockets connecting at once (a reconnect storm) costs a few round trips, not one each.
- **Reconnects are announced.** Pub/sub is at most once: what is published while a server is
  unreachable is lost to its subscribers. When the subscriber connection to a server comes
  back (or first comes up after failing), every channel wanted there is subscribed again and,
  once Redis has confirmed them all, every local channel with a group on that server receives
  `{"type": "layer.reconnected"}`, in order with what follows; `messaging.fanout` then makes
  its sockets read what they may have missed from the database. While a server is down,
  `group_add` does not fail on its account: it returns at once, and the announcement comes
  when the server is back (so a socket can open while one of several Redis servers is down,
  with live delivery for what lives on the others).

One layer object serves every event loop of the process (as channels-redis's does); each loop
has connections of its own, closed when the loop ends (a task of each loop's state closes them
when it is cancelled, which asyncio.run, asgiref and pytest-asyncio all do at a loop's end).
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import uuid
import weakref
from collections import Counter
from typing import Any

import msgpack
from channels.layers import BaseChannelLayer
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from chatproject import metrics

logger = logging.getLogger(__name__)

RECONNECTED = {"type": "layer.reconnected"}
# Longest wait for Redis to confirm a subscription; past it the connection is taken for dead
# (dropped and made again, which ends in an announcement).
SUBSCRIBE_CONFIRM_SECONDS = 5.0
# Pauses between attempts to reach a server that failed (doubling up to the second figure).
RECONNECT_FIRST_PAUSE_SECONDS = 0.1
RECONNECT_MAX_PAUSE_SECONDS = 2.0


def shard_of(name: str, shards: int) -> int:
    """Which of `shards` servers a Redis channel lives on: channels-redis's consistent hash
    (CRC32 of the name to one of 4096 slots, the slots cut into equal ranges), so an instance
    of either layer finds a group on the same server."""
    if shards == 1:
        return 0
    return int((binascii.crc32(name.encode()) & 0xFFF) / (4096 / shards))


def _client(host: str | dict[str, Any]) -> Redis:
    """A redis-py client for one `hosts` entry: a URL, or {"address": url, **client options}.
    No retries inside redis-py: a failure comes back to us, which is how a lost connection is
    noticed (and a publish is never sent twice)."""
    options = dict(host) if isinstance(host, dict) else {"address": host}
    address = options.pop("address")
    options.setdefault("retry", Retry(NoBackoff(), 0))
    return Redis.from_url(address, **options)


class _Shard:
    """What one event loop does with one Redis server: publish, subscribe, receive."""

    def __init__(self, layer: _LoopLayer, host: str | dict[str, Any], index: int) -> None:
        self.layer = layer
        self.host = host
        self.index = index
        self.publisher: Redis | None = None
        self.subscriber: Redis | None = None
        # Publishing: what waits for the next pipelined batch.
        self.pending: list[tuple[str, bytes, asyncio.Future[None]]] = []
        self.flushing: asyncio.Task[None] | None = None
        # Subscribing: the channels this loop wants here (the source of truth), the commands
        # not sent yet, and per channel the SUBSCRIBEs sent and confirmed on this connection.
        self.wanted: set[str] = set()
        self.commands: list[tuple[str, str, asyncio.Future[None] | None]] = []
        self.sending: asyncio.Task[None] | None = None
        self.sent: Counter[str] = Counter()
        self.confirmed: Counter[str] = Counter()
        self.waiters: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}
        self.pubsub: PubSub | None = None
        self.reader: asyncio.Task[None] | None = None
        self.ready = False  # A connection is up and the wanted channels were sent on it.
        self.broken = False  # The connection failed and is not back yet.
        self.missed = False  # Something may have been missed here: announce when back.
        self.resubscribing: set[str] = set()  # Not confirmed yet since the (re)connection.

    # --- Publishing --------------------------------------------------------------------------

    async def publish(self, channel: str, data: bytes) -> None:
        done = asyncio.get_running_loop().create_future()
        self.pending.append((channel, data, done))
        if self.flushing is None or self.flushing.done():
            # A task of its own: a caller that stops waiting (timeout) must not cancel a batch.
            self.flushing = asyncio.ensure_future(self._flush())
        await done

    async def _flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending, []
            try:
                if self.publisher is None:
                    self.publisher = _client(self.host)
                pipeline = self.publisher.pipeline(transaction=False)
                for channel, data, _ in batch:
                    pipeline.publish(channel, data)
                await pipeline.execute()
            except BaseException as exc:  # Redis down: every caller of this batch hears of it.
                for _, _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for _, _, done in batch:
                if not done.done():
                    done.set_result(None)

    # --- Subscribing -------------------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        """Returns once Redis confirmed the subscription, or at once while the server is
        unreachable (its return is then announced)."""
        self.wanted.add(channel)
        self._start_reader()
        if self.broken:
            self.missed = True
            return
        confirmed = asyncio.get_running_loop().create_future()
        self.commands.append(("subscribe", channel, confirmed))
        self._send_soon()
        try:
            async with asyncio.timeout(SUBSCRIBE_CONFIRM_SECONDS):
                await asyncio.shield(confirmed)
        except TimeoutError:
            self._fail(TimeoutError(f"no confirmation of SUBSCRIBE {channel}"), close=True)

    def unsubscribe(self, channel: str) -> None:
        self.wanted.discard(channel)
        if self.ready:
            self.commands.append(("unsubscribe", channel, None))
            self._send_soon()

    def _send_soon(self) -> None:
        if self.ready and (self.sending is None or self.sending.done()):
            self.sending = asyncio.ensure_future(self._send_commands())

    async def _send_commands(self) -> None:
        """Send what was asked, in order: consecutive requests of a kind in one command."""
        while self.commands and self.ready and self.pubsub is not None:
            pubsub = self.pubsub
            batch, self.commands = self.commands, []
            runs: list[tuple[str, list[tuple[str, asyncio.Future[None] | None]]]] = []
            for kind, channel, future in batch:
                if runs and runs[-1][0] == kind:
                    runs[-1][1].append((channel, future))
                else:
                    runs.append((kind, [(channel, future)]))
            try:
                for kind, entries in runs:
                    channels = list(dict.fromkeys(channel for channel, _ in entries))
                    if kind == "subscribe":
                        for channel in channels:
                            self.sent[channel] += 1
                        for channel, future in entries:
                            assert future is not None
                            self._wait_for(channel, self.sent[channel], future)
                        await pubsub.subscribe(*channels)
                    else:
                        await pubsub.unsubscribe(*channels)
            except Exception as exc:  # The connection failed: start again from `wanted`.
                self._fail(exc, close=True)
                return

    def _wait_for(self, channel: str, count: int, future: asyncio.Future[None]) -> None:
        """Resolve `future` once `count` SUBSCRIBEs of `channel` are confirmed."""
        if self.confirmed[channel] >= count:
            _resolve(future)
        else:
            self.waiters.setdefault(channel, []).append((count, future))

    def _confirmed(self, channel: str) -> None:
        self.confirmed[channel] += 1
        waiting = self.waiters.get(channel)
        if waiting:
            count = self.confirmed[channel]
            still = [(target, future) for target, future in waiting if target > count]
            for target, future in waiting:
                if target <= count:
                    _resolve(future)
            if still:
                self.waiters[channel] = still
            else:
                del self.waiters[channel]
        self.resubscribing.discard(channel)
        if not self.resubscribing and self.missed:
            self.missed = False
            self.layer.announce_reconnect(self)

    def _fail(self, error: BaseException, *, close: bool = False) -> None:
        """The subscriber connection is lost: release every waiter (they will hear of the
        return) and, with `close`, drop the connection (which ends the reader's read); the
        reader makes a new one."""
        if self.broken:
            return
        logger.warning("Redis subscriber connection to %s lost: %r", _shown(self.host), error)
        self.broken, self.ready, self.missed = True, False, True
        for waiting in self.waiters.values():
            for _, future in waiting:
                _resolve(future)
        self.waiters.clear()
        for _, _, future in self.commands:
            if future is not None:
                _resolve(future)
        self.commands.clear()
        if close and self.pubsub is not None:
            asyncio.ensure_future(_close_quietly(self.pubsub))

    # --- Receiving ---------------------------------------------------------------------------

    def _start_reader(self) -> None:
        if self.reader is None or self.reader.done():
            self.reader = asyncio.ensure_future(self._read_forever())

    async def _read_forever(self) -> None:
        pause = RECONNECT_FIRST_PAUSE_SECONDS
        while True:
            pubsub = None
            try:
                if self.subscriber is None:
                    self.subscriber = _client(self.host)
                pubsub = self.pubsub = self.subscriber.pubsub()
                await self._resubscribe(pubsub)
                pause = RECONNECT_FIRST_PAUSE_SECONDS
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None:
                        self._receive(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._fail(exc)
                if pubsub is not None:
                    await _close_quietly(pubsub)
                await asyncio.sleep(pause)
                pause = min(pause * 2, RECONNECT_MAX_PAUSE_SECONDS)

    async def _resubscribe(self, pubsub: PubSub) -> None:
        """On a new connection: subscribe every wanted channel in one command. The requests
        queued before it are covered by it (or no longer wanted)."""
        self.sent.clear()
        self.confirmed.clear()
        wanted = sorted(self.wanted)
        for _, channel, future in self.commands:
            if future is not None:
                if channel in self.wanted:
                    self._wait_for(channel, 1, future)
                else:
                    _resolve(future)
        self.commands.clear()
        self.resubscribing = set(wanted)
        if wanted:
            for channel in wanted:
                self.sent[channel] += 1
            await pubsub.subscribe(*wanted)
        self.broken, self.ready = False, True
        if not wanted and self.missed:  # Nothing to wait for: nothing can have been missed.
            self.missed = False
        self._send_soon()

    def _receive(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        name = message["channel"]
        if isinstance(name, bytes):
            name = name.decode()
        if kind in ("message", b"message"):
            self.layer.deliver(name, message["data"])
        elif kind in ("subscribe", b"subscribe"):
            self._confirmed(name)

    async def close(self) -> None:
        for task in (self.reader, self.sending, self.flushing):
            if task is not None and not task.done():
                task.cancel()
        for client in (self.pubsub, self.subscriber, self.publisher):
            if client is not None:
                await _close_quietly(client)
        self.pubsub = self.subscriber = self.publisher = None
        self.reader = self.sending = self.flushing = None
        self.ready = False


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _close_quietly(client: Any) -> None:
    try:
        await client.aclose()
    except Exception:  # Closing a connection that is already gone.
        logger.debug("closing a Redis connection failed", exc_info=True)


def _shown(host: str | dict[str, Any]) -> str:
    """A host for a log line, without its password."""
    address = host.get("address", "?") if isinstance(host, dict) else host
    scheme, _, rest = str(address).partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


class _LoopLayer:
    """The layer's state on one event loop: local channels, their groups, and the shards."""

    def __init__(self, layer: ShardedRedisPubSubLayer) -> None:
        self.layer = layer
        self.channels: dict[str, asyncio.Queue[bytes]] = {}
        self.groups: dict[str, set[str]] = {}  # Redis channel of a group -> local channels
        self.shards = [_Shard(self, host, index) for index, host in enumerate(layer.hosts)]
        # Cancelled when the loop ends (see the module's docstring): closes the connections.
        self.keeper = asyncio.ensure_future(self._keep())

    async def _keep(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    def shard(self, name: str) -> _Shard:
        return self.shards[shard_of(name, len(self.shards))]

    def deliver(self, name: str, data: bytes) -> None:
        queue = self.channels.get(name)
        if queue is not None:
            queue.put_nowait(data)
        for channel in self.groups.get(name, ()):
            if (queue := self.channels.get(channel)) is not None:
                queue.put_nowait(data)

    def announce_reconnect(self, shard: _Shard) -> None:
        """Tell every local channel that was subscribed on `shard` (itself or by a group)."""
        logger.info("Redis subscriber connection to %s is back", _shown(shard.host))
        if metrics.ON:
            metrics.RECONNECTS.labels(str(shard.index)).inc()
        told = {name for name in self.channels if self.shard(name) is shard}
        for group, members in self.groups.items():
            if self.shard(group) is shard:
                told |= members
        marker = self.layer.serialize(RECONNECTED)
        for name in told:
            if (queue := self.channels.get(name)) is not None:
                queue.put_nowait(marker)

    async def close(self) -> None:
        for shard in self.shards:
            await shard.close()
        self.channels.clear()
        self.groups.clear()


class ShardedRedisPubSubLayer(BaseChannelLayer):
    extensions = ["groups", "flush"]

    def __init__(
        self,
        hosts: list[str | dict[str, Any]] | None = None,
        prefix: str = "asgi",
        expiry: int = 60,
        capacity: int = 100,
        channel_capacity: dict[str, int] | None = None,
    ) -> None:
        super().__init__(expiry=expiry, capacity=capacity, channel_capacity=channel_capacity)
        if isinstance(hosts, str | bytes):
            raise ValueError("hosts must be a list of Redis URLs, even for one server")
        self.hosts = list(hosts or ["redis://localhost:6379"])
        self.prefix = prefix
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopLayer] = (
            weakref.WeakKeyDictionary()
        )

    # Payloads: msgpack, as channels-redis's pub/sub layer (without encryption or a prefix).
    def serialize(self, message: dict[str, Any]) -> bytes:
        return msgpack.packb(message)

    def deserialize(self, data: bytes) -> dict[str, Any]:
        return msgpack.unpackb(data)

    def _here(self) -> _LoopLayer:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _LoopLayer(self)
        return state

    def group_channel(self, group: str) -> str:
        """The Redis channel of a group (channels-redis's name for it)."""
        return f"{self.prefix}__group__{group}"

    def shard_count(self) -> int:
        return len(self.hosts)

    def shard_of_group(self, group: str) -> int:
        return shard_of(self.group_channel(group), len(self.hosts))

    # --- Channels' layer interface ---------------------------------------------------------

    async def new_channel(self, prefix: str = "specific.") -> str:
        name = f"{self.prefix}{prefix}{uuid.uuid4().hex}"
        here = self._here()
        here.channels[name] = asyncio.Queue()
        await here.shard(name).subscribe(name)
        return name

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        await self._here().shard(channel).publish(channel, self.serialize(message))

    async def receive(self, channel: str) -> dict[str, Any]:
        """The next message of a local channel. Cancelling it drops the channel (as Channels'
        consumers leave: channels-redis's pub/sub layer behaves the same)."""
        here = self._here()
        queue = here.channels.get(channel)
        if queue is None:
            queue = here.channels[channel] = asyncio.Queue()
            await here.shard(channel).subscribe(channel)
        try:
            data = await queue.get()
        except asyncio.CancelledError:
            self._drop(here, channel)
            raise
        return self.deserialize(data)

    def _drop(self, here: _LoopLayer, channel: str) -> None:
        if here.channels.pop(channel, None) is None:
            return
        here.shard(channel).unsubscribe(channel)
        for name, members in list(here.groups.items()):
            members.discard(channel)
            if not members:
                del here.groups[name]
                here.shard(name).unsubscribe(name)

    async def group_add(self, group: str, channel: str) -> None:
        here = self._here()
        if channel not in here.channels:
            raise RuntimeError("group_add() needs a channel of this process (new_channel())")
        name = self.group_channel(group)
        members = here.groups.setdefault(name, set())
        members.add(channel)
        await here.shard(name).subscribe(name)

    async def group_discard(self, group: str, channel: str) -> None:
        here = self._here()
        name = self.group_channel(group)
        members = here.groups.get(name)
        if members is None or channel not in members:
            return
        members.discard(channel)
        if not members:
            del here.groups[name]
            here.shard(name).unsubscribe(name)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        name = self.group_channel(group)
        await self._here().shard(name).publish(name, self.serialize(message))

    async def ping_all(self) -> None:
        """Publish a probe (to nobody) on every server; raises if one does not take it (the
        health check: with several servers, one down is a degraded service)."""
        here = self._here()
        await asyncio.gather(
            *(shard.publish(f"{self.prefix}__probe__{shard.index}", b"") for shard in here.shards)
        )

    async def flush(self) -> None:
        """Close this loop's connections and forget its channels and groups."""
        loop = asyncio.get_running_loop()
        state = self._loops.pop(loop, None)
        if state is not None:
            state.keeper.cancel()
            await state.close()
