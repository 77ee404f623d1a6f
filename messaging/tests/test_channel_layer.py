"""The channel layer (messaging/channel_layer.py) against real Redis servers of its own: one or
two, started on free ports (never the shared one), killed and restarted at will.

What the rest of the service relies on: a group's subscription is in place when `group_add`
returns; subscriptions asked for at once share one SUBSCRIBE; each server's reconnect is
announced (`layer.reconnected`) to the channels subscribed there, after resubscribing; with
two servers a group lives on one, and losing one costs only what lives there; the wire format
and the placement of groups are channels-redis's, so both layers can share Redis.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from channels_redis.pubsub import RedisPubSubChannelLayer

from conftest import IN_CI
from liveserver.processes import RedisServer
from messaging.channel_layer import RECONNECTED, ShardedRedisPubSubLayer, shard_of

pytestmark = pytest.mark.timeout(60)


def _needs_redis_server() -> None:
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("CI=true but the redis-server executable is not installed")
        pytest.skip("needs the redis-server executable")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    _needs_redis_server()
    with RedisServer(log_dir=tmp_path) as server:
        yield server


@pytest.fixture
def two_redis_servers(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    _needs_redis_server()
    with RedisServer(log_dir=tmp_path) as first, RedisServer(log_dir=tmp_path) as second:
        yield first, second


async def receive(layer: ShardedRedisPubSubLayer, channel: str, seconds: float = 10) -> dict:
    async with asyncio.timeout(seconds):
        return await layer.receive(channel)


async def nothing_more(layer: ShardedRedisPubSubLayer, channel: str) -> None:
    with pytest.raises(TimeoutError):
        await receive(layer, channel, 0.5)


def groups_on_each_shard(layer: ShardedRedisPubSubLayer, count: int = 2) -> list[str]:
    """A group living on each of the layer's shards, in shard order."""
    found: dict[int, str] = {}
    for n in range(1, 1000):
        found.setdefault(layer.shard_of_group(f"chat.{n}"), f"chat.{n}")
        if len(found) == count:
            return [found[k] for k in range(count)]
    raise AssertionError("no group on some shard")


async def channel_on_first_shard(layer: ShardedRedisPubSubLayer) -> str:
    """A new channel whose name lives on shard 0 (names are random: half of them do)."""
    for _ in range(100):
        if shard_of(name := await layer.new_channel(), len(layer.hosts)) == 0:
            return name
    raise AssertionError("no channel name on the first shard in 100 tries")


def subscribe_calls(server: RedisServer) -> int:
    stats = redis.Redis.from_url(server.url()).info("commandstats")
    return stats.get("cmdstat_subscribe", {}).get("calls", 0)


async def test_a_lost_subscriber_connection_is_announced_on_every_channel_after_resubscribing(
    redis_server: RedisServer,
):
    layer = ShardedRedisPubSubLayer(hosts=[redis_server.url()], prefix="reconnect")
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
    layer = ShardedRedisPubSubLayer(hosts=[redis_server.url()], prefix="quiet")
    channel = await layer.new_channel()
    await layer.group_add("chat.2", channel)
    for n in range(3):
        await layer.group_send("chat.2", {"type": "event", "n": n})

    assert [(await receive(layer, channel))["n"] for _ in range(3)] == [0, 1, 2]
    await nothing_more(layer, channel)
    await layer.flush()


async def test_a_group_is_subscribed_when_group_add_returns(redis_server: RedisServer):
    """Published from another connection the moment group_add returns: every one arrives."""
    layer = ShardedRedisPubSubLayer(hosts=[redis_server.url()], prefix="confirmed")
    other = redis.asyncio.Redis(
        connection_pool=redis.asyncio.BlockingConnectionPool.from_url(
            redis_server.url(), max_connections=20
        )
    )
    channel = await layer.new_channel()

    async def join_then_publish(n: int) -> None:
        await layer.group_add(f"chat.{n}", channel)
        await other.publish(layer.group_channel(f"chat.{n}"), layer.serialize({"n": n}))

    await asyncio.gather(*(join_then_publish(n) for n in range(200)))
    received = {(await receive(layer, channel))["n"] for _ in range(200)}
    assert received == set(range(200))
    await other.aclose()
    await layer.flush()


async def test_the_layer_works_over_resp2_too(redis_server: RedisServer):
    """redis-py speaks RESP3 by default; `?protocol=2` (which Redis servers before 6 need) must
    work as well. A pushed-message handler given to `pubsub()` breaks it: RESP2's parser has no
    place for one, and every connection of the subscriber failed."""
    layer = ShardedRedisPubSubLayer(hosts=[f"{redis_server.url()}?protocol=2"], prefix="resp2")
    channel = await layer.new_channel()
    await layer.group_add("chat.4", channel)
    await layer.group_send("chat.4", {"type": "event"})

    assert (await receive(layer, channel))["type"] == "event"
    await layer.flush()


async def test_subscriptions_asked_for_at_once_share_a_subscribe(redis_server: RedisServer):
    layer = ShardedRedisPubSubLayer(hosts=[redis_server.url()], prefix="batched")
    channel = await layer.new_channel()
    before = subscribe_calls(redis_server)

    await asyncio.gather(*(layer.group_add(f"user.{n}", channel) for n in range(300)))

    # One SUBSCRIBE per group would be 300 calls; a few commands carry them all.
    assert subscribe_calls(redis_server) - before <= 10
    await layer.group_send("user.299", {"type": "last"})
    assert (await receive(layer, channel))["type"] == "last"
    await layer.flush()


async def test_leaving_the_last_group_unsubscribes_and_a_cancelled_receive_drops_the_channel(
    redis_server: RedisServer,
):
    layer = ShardedRedisPubSubLayer(hosts=[redis_server.url()], prefix="leave")
    observer = redis.Redis.from_url(redis_server.url())
    channel = await layer.new_channel()
    await layer.group_add("chat.5", channel)
    await layer.group_add("chat.6", channel)
    assert set(observer.pubsub_channels("leave*")) == {
        channel.encode(),
        b"leave__group__chat.5",
        b"leave__group__chat.6",
    }

    await layer.group_discard("chat.5", channel)
    reader = asyncio.create_task(layer.receive(channel))
    await asyncio.sleep(0.2)
    assert set(observer.pubsub_channels("leave*")) == {channel.encode(), b"leave__group__chat.6"}
    reader.cancel()  # How messaging.fanout gives its channel back.
    await asyncio.gather(reader, return_exceptions=True)
    await asyncio.sleep(0.2)
    assert observer.pubsub_channels("leave*") == []
    await layer.flush()


async def test_two_servers_each_carry_their_groups_and_a_lost_one_costs_only_its_own(
    two_redis_servers: tuple[RedisServer, RedisServer],
):
    first, second = two_redis_servers
    layer = ShardedRedisPubSubLayer(hosts=[first.url(), second.url()], prefix="two")
    on_first, on_second = groups_on_each_shard(layer)
    channel = await layer.new_channel()
    await layer.group_add(on_first, channel)
    await layer.group_add(on_second, channel)
    assert redis.Redis.from_url(first.url()).pubsub_channels(f"two__group__{on_first}")
    assert not redis.Redis.from_url(second.url()).pubsub_channels(f"two__group__{on_first}")
    assert redis.Redis.from_url(second.url()).pubsub_channels(f"two__group__{on_second}")
    await layer.group_send(on_first, {"n": 1})
    await layer.group_send(on_second, {"n": 2})
    assert {(await receive(layer, channel))["n"] for _ in range(2)} == {1, 2}

    second.stop()
    with pytest.raises(Exception):  # noqa: B017 - whatever redis-py raises for a dead server
        await layer.group_send(on_second, {"n": 3})
    await layer.group_send(on_first, {"n": 4})
    assert await receive(layer, channel) == {"n": 4}
    # A group on the dead server can still be joined (no error, no wait): its subscription
    # comes with the server, followed by the announcement.
    async with asyncio.timeout(1):
        await layer.group_add(
            "user.7" if layer.shard_of_group("user.7") == 1 else "user.8", channel
        )

    second.restart(timeout=10)
    assert await receive(layer, channel, 20) == RECONNECTED
    await layer.group_send(on_second, {"n": 5})
    assert await receive(layer, channel) == {"n": 5}
    await nothing_more(layer, channel)
    await layer.flush()


async def test_the_announcement_goes_only_to_channels_subscribed_on_the_server_that_came_back(
    two_redis_servers: tuple[RedisServer, RedisServer],
):
    first, second = two_redis_servers
    layer = ShardedRedisPubSubLayer(hosts=[first.url(), second.url()], prefix="told")
    on_first, on_second = groups_on_each_shard(layer)
    # Each channel's own name is subscribed somewhere too: tell them apart by their groups
    # only, with both names on the first server.
    here, there = await channel_on_first_shard(layer), await channel_on_first_shard(layer)
    await layer.group_add(on_first, here)
    await layer.group_add(on_second, there)

    redis.Redis.from_url(second.url()).client_kill_filter(_type="pubsub")

    assert await receive(layer, there) == RECONNECTED
    await nothing_more(layer, here)
    await layer.flush()


async def test_a_server_down_at_the_first_subscription_is_announced_when_it_comes_up(
    redis_server: RedisServer,
):
    redis_server.stop()
    layer = ShardedRedisPubSubLayer(hosts=[redis_server.url()], prefix="late")
    channel = await layer.new_channel()  # Returns at once: the server is unreachable.
    await layer.group_add("chat.9", channel)

    redis_server.restart(timeout=10)
    assert await receive(layer, channel, 20) == RECONNECTED
    await layer.group_send("chat.9", {"type": "now"})
    assert (await receive(layer, channel))["type"] == "now"
    await layer.flush()


async def test_channels_redis_pubsub_layer_and_this_one_hear_each_other_on_two_servers(
    two_redis_servers: tuple[RedisServer, RedisServer],
):
    """Same Redis channel names, same server for each, same payloads: a rolling upgrade from
    channels-redis's layer (or back) keeps delivering across instances."""
    hosts = [server.url() for server in two_redis_servers]
    ours = ShardedRedisPubSubLayer(hosts=hosts, prefix="compat")
    stock = RedisPubSubChannelLayer(hosts=hosts, prefix="compat")
    groups = [f"chat.{n}" for n in range(1, 9)]
    assert {ours.shard_of_group(group) for group in groups} == {0, 1}
    our_channel, stock_channel = await ours.new_channel(), await stock.new_channel()
    for group in groups:
        await ours.group_add(group, our_channel)
        await stock.group_add(group, stock_channel)
    await asyncio.sleep(0.2)  # The stock layer does not wait for Redis's confirmation.

    for n, group in enumerate(groups):
        await ours.group_send(group, {"type": "from.ours", "n": n})
        await stock.group_send(group, {"type": "from.stock", "n": n})

    got_stock = [await asyncio.wait_for(stock.receive(stock_channel), 5) for _ in range(16)]
    got_ours = [await receive(ours, our_channel) for _ in range(16)]
    for got in (got_stock, got_ours):
        assert sorted((e["type"], e["n"]) for e in got) == sorted(
            (kind, n) for kind in ("from.ours", "from.stock") for n in range(8)
        )
    await ours.flush()
    await stock.flush()


async def test_flush_closes_the_loops_connections(redis_server: RedisServer):
    observer = redis.Redis.from_url(redis_server.url())
    before = len(observer.client_list())
    layer = ShardedRedisPubSubLayer(hosts=[redis_server.url()], prefix="closing")
    channel = await layer.new_channel()
    await layer.group_add("chat.3", channel)
    await layer.group_send("chat.3", {"type": "x"})
    assert len(observer.client_list()) == before + 2  # A subscriber and a publisher.

    await layer.flush()
    await asyncio.sleep(0.1)
    assert len(observer.client_list()) == before


def test_a_loop_that_ends_closes_its_connections(redis_server: RedisServer):
    """asyncio.run cancels the loop's tasks at its end: the layer's connections go with them."""
    observer = redis.Redis.from_url(redis_server.url())
    before = len(observer.client_list())
    layer = ShardedRedisPubSubLayer(hosts=[redis_server.url()], prefix="ending")

    async def publish_and_listen() -> None:
        channel = await layer.new_channel()
        await layer.group_add("chat.4", channel)
        await layer.group_send("chat.4", {"type": "x"})
        assert (await layer.receive(channel))["type"] == "x"

    asyncio.run(publish_and_listen())
    assert len(observer.client_list()) == before


async def test_ping_all_fails_when_one_of_the_servers_is_down(
    two_redis_servers: tuple[RedisServer, RedisServer],
):
    first, second = two_redis_servers
    layer = ShardedRedisPubSubLayer(hosts=[first.url(), second.url()], prefix="ping")
    await layer.ping_all()
    second.stop()
    with pytest.raises(Exception):  # noqa: B017 - whatever redis-py raises for a dead server
        await layer.ping_all()
    await layer.flush()


def test_hosts_must_be_a_list():
    with pytest.raises(ValueError):
        ShardedRedisPubSubLayer(hosts="redis://127.0.0.1:6379/0")  # type: ignore[arg-type]
