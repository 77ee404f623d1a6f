"""Per-user limits of the WebSocket: the sockets a user holds on this instance, and the budget
of events they share, which is the user's on every instance.

The budget is a token bucket: a burst of WS_RATE_BURST events, refilled at WS_RATE_PER_SECOND.
With Redis (REDIS_URL), the bucket lives there, one per user, so every socket of the user on
every instance, and a reconnect to another instance, draws from the same budget. Not one round
trip per event: an instance *leases* a few tokens of a user's bucket at a time (one atomic Lua
call), spends them locally, and asks for the next lease in the background while it still holds
some, so the event that spends the last leased token seldom waits. What a lease costs: tokens
leased by one instance and not spent there are not available to the others, so across N
instances a user may get at most N x 1.5 x LEASE events beyond the burst, where LEASE is
WS_RATE_BURST / 10, at most 100 (the default 200 gives 20): 15 % of the burst per instance.
A lease call cost 0.3-0.8 ms of CPU on the (busy) development machine, with redis-py's asyncio
client: 15-20 us per event at LEASE = 20, 5-9 us at 100, against 1-2 us for the local bucket
alone (a loop of `allow_event` calls; docs/websocket.md). A user whose bucket is empty is
refused locally until the next token is due, so a flood costs Redis one call per refill
interval per instance, not one per frame.

When Redis cannot be reached (an error, or no answer within LEASE_TIMEOUT_SECONDS), each
instance falls back to a local bucket of the same size per user, which it keeps up to date all
along, and tries Redis again RETRY_SECONDS later: during an outage a user's budget is per
instance again, never unlimited. Without REDIS_URL (one process) the local bucket is the budget.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)

# Longest wait for a lease before the local bucket decides; and how long Redis is left alone
# after it failed.
LEASE_TIMEOUT_SECONDS = 0.5
RETRY_SECONDS = 1.0
MAX_LEASE = 100

# KEYS[1]: the user's bucket (a hash: tokens, at). ARGV: capacity, rate (tokens/s), wanted.
# Returns {tokens granted, milliseconds until the next token when none was}. The clock is
# Redis's own (TIME), the same for every instance. A bucket expires once it would be full
# again: a missing bucket is a full one.
LEASE_SCRIPT = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local granted = math.min(wanted, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
local wait_ms = 0
if granted == 0 then
  if rate > 0 then wait_ms = math.ceil((1 - tokens) / rate * 1000) else wait_ms = 1000 end
end
if rate > 0 then
  redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + 1000)
else
  redis.call('PEXPIRE', KEYS[1], 86400000)
end
return {granted, wait_ms}
"""


@dataclass
class TokenBucket:
    """Allows a burst of `capacity` events, refilled at `rate` events per second."""

    capacity: float
    rate: float
    tokens: float = field(init=False)
    updated: float = field(init=False, default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.capacity

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def full_at(self) -> float:
        """The monotonic time at which the bucket is full again."""
        if self.rate <= 0:
            return float("inf") if self.tokens < self.capacity else self.updated
        return self.updated + (self.capacity - self.tokens) / self.rate


class SharedBuckets:
    """The users' token buckets in Redis, leased out a few tokens at a time."""

    def __init__(self, url: str, key_prefix: str) -> None:
        self.url = url
        self.key_prefix = key_prefix
        self.unavailable_until = 0.0  # Monotonic: Redis failed; the local buckets decide.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._script: Any = None
        self.calls = 0  # Lease calls made (tests and benchmarks read it).

    def available(self) -> bool:
        return time.monotonic() >= self.unavailable_until

    def key(self, user_id: int) -> str:
        return f"{self.key_prefix}:{user_id}"

    async def lease(
        self, user_id: int, *, wanted: int, capacity: float, rate: float
    ) -> tuple[int, float] | None:
        """(tokens granted, seconds until the next token when none was); None when Redis
        failed or took too long (then it is left alone for RETRY_SECONDS)."""
        self.calls += 1
        try:
            async with asyncio.timeout(LEASE_TIMEOUT_SECONDS):
                granted, wait_ms = await self._lease_script()(
                    keys=[self.key(user_id)], args=[capacity, rate, wanted]
                )
        except Exception as exc:  # Down, hung, or refusing: the local budget decides.
            if self.available():
                logger.warning(
                    "WebSocket budgets are per instance for %g s: Redis failed (%r)",
                    RETRY_SECONDS,
                    exc,
                )
            self.unavailable_until = time.monotonic() + RETRY_SECONDS
            return None
        return int(granted), int(wait_ms) / 1000

    def _lease_script(self) -> Any:
        """The script on a client of the running event loop (an asyncio Redis connection
        belongs to the loop it was made in; tests run one loop per test)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            import redis.asyncio

            # A few connections at most, whatever the number of users leasing at once.
            pool = redis.asyncio.BlockingConnectionPool.from_url(self.url, max_connections=8)
            client = redis.asyncio.Redis(connection_pool=pool)
            self._script = client.register_script(LEASE_SCRIPT)
            self._loop = loop
        return self._script


def _shared_buckets_from_settings() -> SharedBuckets | None:
    if not settings.REDIS_URL:
        return None
    # The channel layer's prefix names this deployment (and, in tests, this test run).
    layer_config = settings.CHANNEL_LAYERS["default"].get("CONFIG", {})
    prefix = layer_config.get("prefix") or settings.CHANNEL_LAYER_PREFIX
    return SharedBuckets(settings.REDIS_URL, f"{prefix}:ws-budget")


@dataclass
class UserSockets:
    """The sockets a user holds on this instance and the event budget they share."""

    bucket: TokenBucket  # The local budget: decides without Redis, kept up to date with it.
    count: int = 0
    leased: int = 0  # Tokens of the shared bucket leased to this instance, not spent yet.
    refused_until: float = 0.0  # Monotonic: the shared bucket is empty until then.
    leasing: asyncio.Future[None] | None = None  # The lease call in flight, if any.


_FROM_SETTINGS: Any = object()


class SocketRegistry:
    """A user's entry outlives their last socket until its local bucket has refilled: dropping
    a spent bucket at once would hand a fresh burst to whoever reconnects (when Redis is out of
    reach), and a loop of reconnects could then flood at will."""

    # How often idle entries with a full bucket are forgotten.
    PRUNE_INTERVAL_SECONDS = 1.0

    def __init__(self, shared: SharedBuckets | None = _FROM_SETTINGS) -> None:
        self._users: dict[int, UserSockets] = {}
        self._pruned_at = time.monotonic()
        self._shared = shared

    @property
    def shared(self) -> SharedBuckets | None:
        if self._shared is _FROM_SETTINGS:
            self._shared = _shared_buckets_from_settings()
        return self._shared

    def open(self, user_id: int, *, max_sockets: int, burst: int, per_second: float) -> bool:
        """Count a new socket of the user; False when the user already holds `max_sockets`."""
        self._forget_refilled_idle_users()
        entry = self._users.get(user_id)
        if entry is None:
            entry = self._users[user_id] = UserSockets(TokenBucket(burst, per_second))
        if entry.count >= max_sockets:
            return False
        entry.count += 1
        return True

    def close(self, user_id: int) -> None:
        entry = self._users.get(user_id)
        if entry is None:
            return
        entry.count = max(entry.count - 1, 0)
        self._forget_refilled_idle_users()

    async def allow_event(self, user_id: int) -> bool:
        """Whether the user may send one more event (and it is counted). Usually answered from
        the tokens this instance holds, without waiting; waits for Redis (at most
        LEASE_TIMEOUT_SECONDS) only when they are all spent."""
        entry = self._users.get(user_id)
        if entry is None:
            return False
        allowed_locally = entry.bucket.take()
        shared = self.shared
        if shared is None or not shared.available():
            entry.leased = 0  # From a Redis that may have lost its state: given up.
            return allowed_locally
        if entry.leased == 0:
            if time.monotonic() < entry.refused_until:
                return False
            await asyncio.shield(self._lease_soon(user_id, entry, shared))
            if entry.leased == 0:
                return allowed_locally if not shared.available() else False
        entry.leased -= 1
        if entry.leased <= self._lease_size(entry) // 2 and time.monotonic() >= entry.refused_until:
            self._lease_soon(user_id, entry, shared)  # The next lease, in the background.
        return True

    def socket_count(self, user_id: int) -> int:
        entry = self._users.get(user_id)
        return entry.count if entry else 0

    def clear(self) -> None:
        """Forget every user and any Redis failure (tests start each with fresh budgets, as
        with DRF's throttles; the shared buckets are per test run in Redis)."""
        self._users.clear()
        if isinstance(self._shared, SharedBuckets):
            self._shared.unavailable_until = 0.0

    def tracked_users(self) -> int:
        """Users with an entry (sockets open, or a budget still refilling)."""
        return len(self._users)

    @staticmethod
    def _lease_size(entry: UserSockets) -> int:
        return max(1, min(MAX_LEASE, int(entry.bucket.capacity // 10)))

    def _lease_soon(
        self, user_id: int, entry: UserSockets, shared: SharedBuckets
    ) -> asyncio.Future[None]:
        """The lease in flight for this user, or a new one; one at a time per user."""
        if entry.leasing is None or entry.leasing.done():
            entry.leasing = asyncio.ensure_future(self._lease(user_id, entry, shared))
        return entry.leasing

    async def _lease(self, user_id: int, entry: UserSockets, shared: SharedBuckets) -> None:
        if time.monotonic() < entry.refused_until:
            return
        result = await shared.lease(
            user_id,
            wanted=self._lease_size(entry),
            capacity=entry.bucket.capacity,
            rate=entry.bucket.rate,
        )
        if result is None:
            return
        granted, wait = result
        entry.leased += granted
        if granted == 0:
            entry.refused_until = time.monotonic() + (wait if math.isfinite(wait) else 1.0)

    def _forget_refilled_idle_users(self) -> None:
        now = time.monotonic()
        if now - self._pruned_at < self.PRUNE_INTERVAL_SECONDS:
            return
        self._pruned_at = now
        idle = [
            user_id
            for user_id, entry in self._users.items()
            if entry.count == 0 and entry.bucket.full_at() <= now
        ]
        for user_id in idle:
            del self._users[user_id]


sockets = SocketRegistry()
