"""Per-socket, per-chat ordering of `new_message` events.

Messages of a chat commit in id order (the chat row is locked while sending), but their
broadcasts race: two instances may publish 101 and 102 in either order, and a sender's own
copy is delivered directly, not through Redis. Each message therefore carries the id of the
chat's previous message, and a `ChatStream` delivers a message only once its predecessor has
been delivered. A predecessor that does not arrive in time (its broadcast was lost while Redis
was down, or it was deleted) is fetched from the database instead, so a socket never skips
a message and never sees one twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Frame = str


@dataclass
class ChatStream:
    chat_id: int
    # Id of the newest message this socket has delivered or need not deliver (None: none yet).
    last_id: int | None
    # Messages waiting for their predecessor: message id -> (previous id, frame).
    waiting: dict[int, tuple[int | None, Frame]] = field(default_factory=dict)

    def accept(self, message_id: int, previous_id: int | None, frame: Frame) -> list[Frame]:
        """Take one message; return the frames now deliverable, in order."""
        if self.last_id is not None and message_id <= self.last_id:
            return []  # Already delivered (or older than this socket's start).
        if not self.waiting and self._ready(previous_id):
            self.last_id = message_id  # The usual case, in order: no need to scan `waiting`.
            return [frame]
        self.waiting[message_id] = (previous_id, frame)
        return self._drain()

    def fill(self, fetched: list[tuple[int, Frame]]) -> list[Frame]:
        """Deliver what the database returned for a gap, then whatever that unblocked."""
        frames = []
        for message_id, frame in fetched:
            self.waiting.pop(message_id, None)
            if self.last_id is None or message_id > self.last_id:
                self.last_id = message_id
                frames.append(frame)
        return frames + self._drain()

    @property
    def has_gap(self) -> bool:
        return bool(self.waiting)

    def newest_waiting_id(self) -> int:
        return max(self.waiting)

    def _ready(self, previous_id: int | None) -> bool:
        # No predecessor (first message, or the chain was cut by a deletion), or one at or
        # behind what was delivered: nothing is missing before this message.
        return previous_id is None or (self.last_id is not None and previous_id <= self.last_id)

    def _drain(self) -> list[Frame]:
        frames = []
        while True:
            ready = [mid for mid, (prev, _) in self.waiting.items() if self._ready(prev)]
            if not ready:
                return frames
            message_id = min(ready)
            _, frame = self.waiting.pop(message_id)
            if self.last_id is None or message_id > self.last_id:
                self.last_id = message_id
                frames.append(frame)
