"""Per-user limits of the WebSocket, shared by all of a user's sockets on one instance."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


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


@dataclass
class UserSockets:
    """The sockets a user holds on this instance and the event budget they share."""

    bucket: TokenBucket
    count: int = 0


class SocketRegistry:
    """A user's entry outlives their last socket until its bucket has refilled: dropping a
    spent bucket at once would hand a fresh burst to whoever reconnects, and a loop of
    reconnects could then flood at will."""

    # How often idle entries with a full bucket are forgotten.
    PRUNE_INTERVAL_SECONDS = 1.0

    def __init__(self) -> None:
        self._users: dict[int, UserSockets] = {}
        self._pruned_at = time.monotonic()

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

    def allow_event(self, user_id: int) -> bool:
        entry = self._users.get(user_id)
        return entry is not None and entry.bucket.take()

    def socket_count(self, user_id: int) -> int:
        entry = self._users.get(user_id)
        return entry.count if entry else 0

    def clear(self) -> None:
        """Forget every user (tests start each with fresh budgets, as with DRF's throttles)."""
        self._users.clear()

    def tracked_users(self) -> int:
        """Users with an entry (sockets open, or a budget still refilling)."""
        return len(self._users)

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
