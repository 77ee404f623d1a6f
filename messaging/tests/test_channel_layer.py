"""The channel layer against a real Redis of its own: it tells the process when its subscriber
connection came back, after which every local channel gets `layer.reconnected` (what the
fan-out resynchronises sockets on). This relies on channels-redis and redis-py internals
(docs/internals.md): an upgrade that changes them fails here."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
import redis

from conftest import IN_CI
from liveserver.processes import RedisServer
from messaging.channel_layer import RECONNECTED, PipelinedRedisPubSubChannelLayer


@pytest.fixture
def redis_server(tmp_path: Path):
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("CI=true but the redis-server executable is not installed")
        pytest.skip("needs the redis-server executable")
    with RedisServer(log_dir=tmp_path) as server:
        yield server


async def receive(layer: PipelinedRedisPubSubChannelLayer, channel: str) -> dict:
    async with asyncio.timeout(15):
        return await layer.receive(channel)


async def test_a_lost_subscriber_connection_is_announced_on_every_channel_after_resubscribing(
    redis_server: RedisServer,
):
    layer = PipelinedRedisPubSubChannelLayer(hosts=[redis_server.url()], prefix="reconnect")
    first, second = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("chat.1", first)
    await layer.group_add("chat.1", second)
    await layer.group_send("chat.1", {"type": "before"})
    assert (await receive(layer, first))["type"] == "before"
    assert (await receive(layer, second))["type"] == "before"

    killed = redis.Redis.from_url(redis_server.url()).client_kill_filter(_type="pubsub")
    assert killed >= 1
    assert await receive(layer, first) == RECONNECTED
    assert await receive(layer, second) == RECONNECTED
    # Subscribed again before the announcement: what is published now arrives.
    await layer.group_send("chat.1", {"type": "after"})

    assert (await receive(layer, first))["type"] == "after"
    await layer.flush()


async def test_nothing_is_announced_without_a_reconnect(redis_server: RedisServer):
    layer = PipelinedRedisPubSubChannelLayer(hosts=[redis_server.url()], prefix="quiet")
    channel = await layer.new_channel()
    await layer.group_add("chat.2", channel)
    for n in range(3):
        await layer.group_send("chat.2", {"type": "event", "n": n})

    assert [(await receive(layer, channel))["n"] for _ in range(3)] == [0, 1, 2]
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await layer.receive(channel)
    await layer.flush()
