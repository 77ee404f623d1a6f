"""The channel layer: channels-redis's `RedisPubSubChannelLayer`, with pipelined publishing.

The stock layer publishes one message at a time under a per-connection lock, each PUBLISH
waiting for its reply, which the event loop reads only when it comes round. Under fan-out load
(one loop iteration delivering hundreds of frames) that caps publishing at the loop's iteration
rate: publishes queue, exceed `events.PUBLISH_TIMEOUT_SECONDS`, and are given up, so live
sockets miss messages until the next one shows the gap. Here every publish waiting at that
moment goes to Redis in one pipelined round trip, still one batch at a time and in the order
they were asked for (docs/performance.md has the numbers). Subscribing and receiving are the
stock layer's.

This reaches into channels-redis internals (`_get_layer`, `_get_group_channel_name`,
`_get_shard`, and the shard's `_lock`, `_ensure_redis` and `_redis`), which is why
channels-redis is pinned; the Redis tests of the suite run through this class.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from channels_redis.pubsub import RedisPubSubChannelLayer, RedisSingleShardConnection


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


class PipelinedRedisPubSubChannelLayer(RedisPubSubChannelLayer):
    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        layer = self._get_layer()
        channel = layer._get_group_channel_name(group)
        shard = layer._get_shard(channel)
        publisher = _publishers.get(shard)
        if publisher is None:
            publisher = _publishers[shard] = _ShardPublisher(shard)
        await publisher.publish(channel, self.serialize(message))
