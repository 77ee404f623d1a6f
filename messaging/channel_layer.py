"""The channel layer: channels-redis's `RedisPubSubChannelLayer`, with pipelined publishing.

The stock layer publishes one message at a time under a per-connection lock, each PUBLISH
waiting for its reply, which the event loop reads only when it comes round. Under fan-out load
(one loop iteration delivering hundreds of frames) that caps publishing at the loop's iteration
rate: publishes queue, exceed `events.PUBLISH_TIMEOUT_SECONDS`, and are given up, so live
sockets miss messages until the next one shows the gap. Here every publish waiting at that
moment goes to Redis in one pipelined round trip, still one batch at a time and in the order
they were asked for (docs/performance.md has the numbers). Subscribing and receiving are the
stock layer's.

It also tells the process when a shard's subscriber connection came back after Redis was
away: pub/sub is at most once, so what was published meanwhile is lost to this instance. Once
redis-py has reconnected and subscribed again, every local channel receives a
`{"type": "layer.reconnected"}` event, in order with the events that follow, and
`messaging.fanout` makes each socket read from the database what it may have missed (its
memberships, its chats' changes, its user's token version).

This reaches into channels-redis internals (`_get_layer`, `_get_group_channel_name`,
`_get_shard`, `_shards`, `channels`, and the shard's `_lock`, `_ensure_redis`, `_redis` and
`_pubsub`), which is why channels-redis is pinned (docs/internals.md); the Redis tests of the
suite run through this class.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from channels_redis.pubsub import (
    RedisPubSubChannelLayer,
    RedisPubSubLoopLayer,
    RedisSingleShardConnection,
)
from redis.asyncio.client import PubSub

RECONNECTED = {"type": "layer.reconnected"}


class _ShardPublisher:
    """Publishes what was asked of one shard connection, in order, a pipelined batch at a time."""

    def __init__(self, shard: RedisSingleShardConnection) -> None:
        self.shard = shard
        self.pending: list[tuple[str, bytes, asyncio.Future[None]]] = []
        self.flushing: asyncio.Task[None] | None = None

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
                async with self.shard._lock:
                    self.shard._ensure_redis()
                    pipeline = self.shard._redis.pipeline(transaction=False)
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


_publishers: weakref.WeakKeyDictionary[RedisSingleShardConnection, _ShardPublisher] = (
    weakref.WeakKeyDictionary()
)


class _ReconnectAwarePubSub(PubSub):
    """redis-py's PubSub, which subscribes again to its channels when its connection comes
    back (`on_connect`, which redis-py calls on each reconnect of the connection, not on the
    first connect), and then reports the reconnect."""

    def __init__(self, *args: Any, on_reconnect: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_reconnect = on_reconnect

    async def on_connect(self, connection: Any) -> None:
        subscribed = bool(self.channels or self.patterns)
        await super().on_connect(connection)
        if subscribed:  # Something may have been published to them meanwhile.
            self.on_reconnect()


def _watch_reconnects(loop_layer: RedisPubSubLoopLayer) -> None:
    """Give each shard of the loop's layer a PubSub that reports its reconnects."""
    for shard in loop_layer._shards:
        if getattr(shard, "reconnects_watched", False):
            continue
        shard.reconnects_watched = True
        ensure_redis = shard._ensure_redis

        def ensure_watched_redis(shard: Any = shard, ensure_redis: Any = ensure_redis) -> None:
            fresh = shard._redis is None
            ensure_redis()
            if fresh:
                shard._pubsub = _ReconnectAwarePubSub(
                    shard._redis.connection_pool,
                    on_reconnect=lambda: _announce_reconnect(loop_layer),
                )

        shard._ensure_redis = ensure_watched_redis


def _announce_reconnect(loop_layer: RedisPubSubLoopLayer) -> None:
    marker = loop_layer.channel_layer.serialize(RECONNECTED)
    for queue in loop_layer.channels.values():
        queue.put_nowait(marker)


class PipelinedRedisPubSubChannelLayer(RedisPubSubChannelLayer):
    def _get_layer(self) -> RedisPubSubLoopLayer:
        layer = super()._get_layer()
        _watch_reconnects(layer)
        return layer

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        layer = self._get_layer()
        channel = layer._get_group_channel_name(group)
        shard = layer._get_shard(channel)
        publisher = _publishers.get(shard)
        if publisher is None:
            publisher = _publishers[shard] = _ShardPublisher(shard)
        await publisher.publish(channel, self.serialize(message))
