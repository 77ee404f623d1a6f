"""The WebSocket event budget: one per user across instances (Redis), local when Redis fails."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
import uuid

import pytest
from django.conf import settings

from liveserver.processes import RedisServer, free_port
from messaging.limits import (
    LEASE_TIMEOUT_SECONDS,
    MAX_LEASE,
    RETRY_SECONDS,
    SharedBuckets,
    SocketRegistry,
)

# Budgets that do not refill within a test: what is allowed is exactly what was leased.
BURST = 50
SLOW = 0.001
_users = itertools.count(1)


def open_socket(registry: SocketRegistry, user_id: int, burst: int = BURST, rate: float = SLOW):
    assert registry.open(user_id, max_sockets=20, burst=burst, per_second=rate)


async def allowed(registry: SocketRegistry, user_id: int, events: int) -> int:
    return sum([await registry.allow_event(user_id) for _ in range(events)])


def private_buckets(url: str) -> SharedBuckets:
    """Buckets under a prefix of their own, so tests never share a user's bucket."""
    return SharedBuckets(url, f"test-ws-budget-{uuid.uuid4().hex}")


# --- Without Redis: the local bucket -------------------------------------------------------------


async def test_without_redis_the_local_bucket_allows_the_burst_then_refuses():
    registry = SocketRegistry(shared=None)
    open_socket(registry, 1)

    assert await allowed(registry, 1, BURST + 10) == BURST


async def test_a_user_without_a_socket_here_may_send_nothing():
    registry = SocketRegistry(shared=None)

    assert await registry.allow_event(99) is False


# --- With Redis: one budget for every instance --------------------------------------------------


@pytest.fixture
def redis_url() -> str:
    if not settings.REDIS_URL:
        pytest.skip("needs Redis (set REDIS_URL=redis://...)")
    return settings.REDIS_URL


@pytest.mark.redis
async def test_two_instances_share_one_budget(redis_url):
    buckets = private_buckets(redis_url)
    one, two = (
        SocketRegistry(shared=buckets),
        SocketRegistry(shared=SharedBuckets(redis_url, buckets.key_prefix)),
    )
    user = next(_users)
    open_socket(one, user)
    open_socket(two, user)

    on_one = await allowed(one, user, 2 * BURST)
    on_two = await allowed(two, user, 2 * BURST)

    assert (on_one, on_two) == (BURST, 0)


@pytest.mark.redis
async def test_sockets_on_two_instances_draw_from_one_budget_in_turns(redis_url):
    prefix = private_buckets(redis_url).key_prefix
    one = SocketRegistry(shared=SharedBuckets(redis_url, prefix))
    two = SocketRegistry(shared=SharedBuckets(redis_url, prefix))
    user = next(_users)
    open_socket(one, user)
    open_socket(two, user)

    total = 0
    for _ in range(BURST):  # Interleaved: each instance holds a lease of its own.
        total += await one.allow_event(user)
        total += await two.allow_event(user)

    assert total == BURST


@pytest.mark.redis
async def test_a_reconnect_to_another_instance_gets_no_fresh_budget(redis_url):
    prefix = private_buckets(redis_url).key_prefix
    one = SocketRegistry(shared=SharedBuckets(redis_url, prefix))
    two = SocketRegistry(shared=SharedBuckets(redis_url, prefix))
    user = next(_users)
    open_socket(one, user)
    assert await allowed(one, user, BURST) == BURST
    one.close(user)

    open_socket(two, user)

    assert await allowed(two, user, 10) == 0


@pytest.mark.redis
async def test_the_budget_refills_at_its_rate(redis_url):
    registry = SocketRegistry(shared=private_buckets(redis_url))
    user = next(_users)
    # A slow rate, so that a loaded machine's delays add no token between the steps below.
    open_socket(registry, user, burst=10, rate=2.0)
    assert await allowed(registry, user, 10) == 10
    assert await registry.allow_event(user) is False

    await asyncio.sleep(1.5)  # 3 tokens at 2 a second (more if this sleep runs long).

    assert 2 <= await allowed(registry, user, 20) <= 10


@pytest.mark.redis
async def test_events_cost_one_redis_call_per_lease_not_one_per_event(redis_url):
    buckets = private_buckets(redis_url)
    registry = SocketRegistry(shared=buckets)
    user = next(_users)
    open_socket(registry, user, burst=1000, rate=SLOW)

    assert await allowed(registry, user, 400) == 400

    assert buckets.calls <= 400 // MAX_LEASE + 2


@pytest.mark.redis
async def test_a_flood_past_the_budget_costs_no_redis_call_per_frame(redis_url):
    buckets = private_buckets(redis_url)
    registry = SocketRegistry(shared=buckets)
    user = next(_users)
    open_socket(registry, user, burst=10, rate=1.0)  # The next token in about a second.
    assert await allowed(registry, user, 10) == 10
    calls = buckets.calls

    assert await allowed(registry, user, 500) == 0

    assert buckets.calls - calls <= 2


@pytest.mark.redis
async def test_a_bucket_in_redis_expires_once_it_would_be_full_again(redis_url):
    import redis.asyncio

    buckets = private_buckets(redis_url)
    registry = SocketRegistry(shared=buckets)
    user = next(_users)
    open_socket(registry, user, burst=10, rate=5.0)
    assert await allowed(registry, user, 1) == 1

    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        # Leases are taken in the background: wait for the bucket to be written, then read its
        # tokens and its expiry together (a lease between two reads would pair one write's
        # tokens with another's expiry).
        for _ in range(500):
            async with client.pipeline(transaction=True) as pipe:
                ttl_ms, raw = (
                    await pipe.pttl(buckets.key(user)).hget(buckets.key(user), "tokens").execute()
                )
            if raw is not None:
                break
            await asyncio.sleep(0.01)
        tokens = float(raw)
    finally:
        await client.aclose()
    # Full again after (10 - tokens) / 5 seconds; forgotten one second after that.
    assert tokens < 10
    assert 1000 < ttl_ms <= (10 - tokens) / 5.0 * 1000 + 1000 + 50


# --- Redis failing: per instance for a while, never unlimited ------------------------------------


async def test_with_redis_unreachable_the_local_bucket_decides(caplog):
    registry = SocketRegistry(shared=private_buckets(f"redis://127.0.0.1:{free_port()}/0"))
    open_socket(registry, 1)

    assert await allowed(registry, 1, BURST + 10) == BURST
    assert "per instance" in caplog.text
    assert caplog.text.count("Redis failed") == 1  # Said once, not per event.


async def test_a_redis_that_never_answers_delays_one_event_by_the_lease_timeout_at_most():
    with socket.create_server(("127.0.0.1", 0)) as silent:  # Accepts, never answers.
        port = silent.getsockname()[1]
        registry = SocketRegistry(shared=private_buckets(f"redis://127.0.0.1:{port}/0"))
        open_socket(registry, 1)

        started = time.monotonic()
        results = [await registry.allow_event(1) for _ in range(5)]
        waited = time.monotonic() - started

    assert results == [True] * 5
    assert waited < LEASE_TIMEOUT_SECONDS + 2.0  # One timeout, then local decisions.


@pytest.mark.multiprocess
async def test_when_redis_comes_back_the_shared_budget_is_used_again(tmp_path, monkeypatch):
    monkeypatch.setattr("messaging.limits.RETRY_SECONDS", 0.2)
    with RedisServer(log_dir=tmp_path) as server:
        prefix = private_buckets(server.url()).key_prefix
        one = SocketRegistry(shared=SharedBuckets(server.url(), prefix))
        two = SocketRegistry(shared=SharedBuckets(server.url(), prefix))
        user = next(_users)
        open_socket(one, user, burst=20)
        open_socket(two, user, burst=20)
        assert await allowed(one, user, 5) == 5

        server.kill()
        # Down: each instance's own bucket (it counted the 5 already spent on `one`).
        assert await allowed(one, user, 30) == 15
        assert await allowed(two, user, 30) == 20

        server.restart()
        await asyncio.sleep(0.3)  # RETRY_SECONDS (shortened) passes.
        # Back: the shared bucket (Redis restarted without its data, so full) is the one
        # budget again: what one instance spends, the other cannot.
        assert await allowed(one, user, 30) == 20
        assert await allowed(two, user, 30) == 0


def test_the_retry_delay_is_short_enough_for_a_passing_outage():
    assert RETRY_SECONDS <= 5


# --- Two real instances --------------------------------------------------------------------------


async def _answers(url: str, events: int) -> list[str]:
    """The error codes answering `events` typing events to a chat that does not exist (each
    spends a token: `not_found` while the budget lasts, `rate_limited` after)."""
    from websockets.asyncio.client import connect

    codes = []
    async with connect(url) as sock:
        for _ in range(events):
            await sock.send(json.dumps({"type": "typing", "chat_id": 2_000_000_000}))
            codes.append(json.loads(await asyncio.wait_for(sock.recv(), 20))["code"])
    return codes


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.multiprocess
@pytest.mark.django_db(transaction=True)
async def test_a_reconnect_to_the_other_instance_finds_the_budget_spent(tmp_path, make_user):
    from channels.db import database_sync_to_async

    from conftest import access_token
    from tests_adversarial.live import running_cluster

    user = await database_sync_to_async(make_user)()
    token = await database_sync_to_async(access_token)(user)
    budget = {"WS_RATE_BURST": "10", "WS_RATE_PER_SECOND": "0.01"}
    with running_cluster(tmp_path, extra_env=budget) as cluster:
        one, two = cluster.instances

        first = await _answers(one.ws_url(token=token), 12)
        second = await _answers(two.ws_url(token=token), 5)

    assert first == ["not_found"] * 10 + ["rate_limited"] * 2
    assert second == ["rate_limited"] * 5
