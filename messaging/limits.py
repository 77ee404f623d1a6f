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


@dataclass
class UserSockets:
    """The sockets a user holds on this instance and the event budget they share."""

    bucket: TokenBucket
    count: int = 0


class SocketRegistry:
    def __init__(self) -> None:
        self._users: dict[int, UserSockets] = {}

    def open(self, user_id: int, *, max_sockets: int, burst: int, per_second: float) -> bool:
        """Count a new socket of the user; False when the user already holds `max_sockets`."""
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
        entry.count -= 1
        if entry.count <= 0:
            del self._users[user_id]

    def allow_event(self, user_id: int) -> bool:
        entry = self._users.get(user_id)
        return entry is not None and entry.bucket.take()

    def socket_count(self, user_id: int) -> int:
        entry = self._users.get(user_id)
        return entry.count if entry else 0


sockets = SocketRegistry()
