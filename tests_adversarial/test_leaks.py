"""1,000 connect/disconnect cycles leave nothing behind.

On a real daphne with a private Redis: the channel layer's subscriptions (PUBSUB CHANNELS and
NUMSUB of the groups), the instance's PostgreSQL connections (pg_stat_activity) and its memory
(RSS, after a warm-up) come back to where they were. In process: the per-user socket registry
forgets users once their sockets are closed and their budget has refilled.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
import redis
from asgiref.sync import sync_to_async
from django.db import connection
from websockets.asyncio.client import connect

from conftest import access_token
from messaging import events
from messaging.limits import SocketRegistry, sockets
from tests_adversarial.live import Cluster, running_cluster
from tests_adversarial.sockets import next_event

pytestmark = pytest.mark.django_db(transaction=True)

CYCLES = int(os.environ.get("LEAK_CYCLES", "1000"))
# RSS climbs over the first ~1,000 sockets (allocator arenas, caches) and then levels off
# (measured: +6 MiB by 1,000, +1 MiB from 1,000 to 2,000, +1.3 MiB from 2,000 to 4,000).
WARM_UP = int(os.environ.get("LEAK_WARM_UP", "1000"))
CONCURRENCY = 10
# After the warm-up, what a leak of 8 KiB per socket would add over the cycles. RSS is noisy
# over only 1,000 cycles: 1.8-4.6 KiB per cycle in runs of the same code, falling to 1.0 KiB per
# cycle over 5,000 and 0.6 over 10,000 (`make soak`), so growth levels off rather than leaking
# per socket. A retained consumer (its queue, scope and streams) costs far more than 8 KiB.
RSS_SLACK = 8 * CYCLES * 1024
APPLICATION_NAME = "adversarial-leaks"
# `make soak` writes the figures here.
REPORT = os.environ.get("LEAK_REPORT")


def _layer_state(client: redis.Redis, groups: list[str]) -> tuple[int, dict[str, int]]:
    """(channels with a subscriber, subscribers of each of our groups). A group's Redis
    channel is `<layer prefix>__group__<group>`; the prefix is the instance's setting."""
    channels = [name.decode() for name in client.pubsub_channels()]
    subscribers = {}
    for group in groups:
        names = [name for name in channels if name.endswith(f"__group__{group}")]
        subscribers[group] = sum(count for _, count in client.pubsub_numsub(*names)) if names else 0
    return len(channels), subscribers


def _database_connections() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s",
            [APPLICATION_NAME],
        )
        return cursor.fetchone()[0]


async def _cycles(url: str, count: int) -> None:
    """`count` sockets opened (and accepted) and closed again, CONCURRENCY at a time."""

    async def worker(share: int) -> None:
        for _ in range(share):
            async with connect(url, proxy=None, open_timeout=10) as socket:
                await socket.ping()  # The server accepted and serves this socket.

    shares = [count // CONCURRENCY + (n < count % CONCURRENCY) for n in range(CONCURRENCY)]
    await asyncio.gather(*(worker(share) for share in shares))


async def _settled(cluster: Cluster, client: redis.Redis, groups: list[str]) -> tuple:
    await asyncio.sleep(1.0)  # Disconnects are handled asynchronously by the server.
    layer = await asyncio.to_thread(_layer_state, client, groups)
    return layer, await sync_to_async(_database_connections)(), cluster.rss(cluster.instances[0])


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.multiprocess
async def test_connect_disconnect_cycles_leak_no_subscriptions_connections_or_memory(
    make_user, make_chat, tmp_path: Path
) -> None:
    user, friend = await sync_to_async(make_user)(), await sync_to_async(make_user)()
    chats = [await sync_to_async(make_chat)(user, [friend]) for _ in range(3)]
    groups = [events.user_group(user.pk)] + [events.chat_group(chat.pk) for chat in chats]
    with running_cluster(tmp_path, instances=1, application_name=APPLICATION_NAME) as cluster:
        server = cluster.instances[0]
        client = redis.Redis(host=cluster.redis.host, port=cluster.redis.port)
        token = access_token(user)
        url = server.ws_url(token=token)
        # The friend stays connected throughout, so the groups have a member to keep.
        async with connect(server.ws_url(token=access_token(friend)), proxy=None):
            await _cycles(url, WARM_UP)
            before = await _settled(cluster, client, groups)
            await _cycles(url, CYCLES)
            after = await _settled(cluster, client, groups)
        client.close()
        logs = cluster.logs()
    if REPORT:
        figures = {"cycles": CYCLES, "warm_up": WARM_UP, "before": before, "after": after}
        await asyncio.to_thread(Path(REPORT).write_text, json.dumps(figures, indent=2) + "\n")
    # Every handshake carried the token in its query string: none may be in a log line.
    assert logs.count("/chats/ws") >= CYCLES, "the access log was not captured"
    assert token.rsplit(".", 1)[1] not in logs
    (channels_before, groups_before), connections_before, rss_before = before
    (channels_after, groups_after), connections_after, rss_after = after
    assert channels_after == channels_before, (channels_before, channels_after)
    assert groups_after == groups_before, (groups_before, groups_after)
    # The user's own group is empty again; the chats' groups keep the friend's socket (one
    # subscription of the instance to each).
    assert groups_after == {groups[0]: 0, **{group: 1 for group in groups[1:]}}, groups_after
    assert connections_after <= max(connections_before, 10), (connections_before, connections_after)
    assert rss_after - rss_before < RSS_SLACK, (rss_before, rss_after)


async def test_the_socket_registry_forgets_closed_sockets(
    ws, make_user, monkeypatch, settings
) -> None:
    settings.WS_RATE_PER_SECOND = 1000.0  # Budgets refill in milliseconds.
    users = [await sync_to_async(make_user)() for _ in range(5)]
    before = sockets.tracked_users()
    for n in range(100):
        sock = await ws(users[n % len(users)])
        await sock.send_json_to({"type": "typing", "chat_id": 1})
        assert (await next_event(sock))["code"] == "not_found"  # Spends from the budget.
        await sock.disconnect()
    assert all(sockets.socket_count(user.pk) == 0 for user in users)
    # Entries with a refilled budget are forgotten at the next prune.
    monkeypatch.setattr(SocketRegistry, "PRUNE_INTERVAL_SECONDS", 0.0)
    await asyncio.sleep(0.1)  # Every budget has refilled (20 events at 1,000 a second).
    sockets.close(users[0].pk)  # Any open or close prunes.
    assert sockets.tracked_users() == before
