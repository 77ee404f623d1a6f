"""Per-socket, per-chat ordering of a chat's changes (`new_message`, `message_updated`).

Every change of a chat takes the chat's next `seq` (1, 2, 3, ...) under the chat's row lock,
so changes commit in seq order; but their broadcasts race: two instances may publish 101 and
102 in either order, and an actor's own copy is delivered directly, not through Redis. A
`ChatStream` therefore delivers change N only once N-1 has been delivered, drops what it has
delivered already, and, when a change does not arrive in time (its broadcast was lost while
Redis was down), takes what the database says instead (`fill`). A socket thus sees each change
of a chat once, in seq order, and its `new_message` events in id order.

A fill returns messages in their current state: a message created and edited while its
broadcasts were lost comes once, as it is now. One the client never had comes as
`new_message` when its id is above every id the socket has shown, else as `message_updated`
(clients apply both by id), so `new_message` ids still only grow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

Frame = str


class Change(NamedTuple):
    """A change that arrived live."""

    seq: int
    message_id: int
    created: bool
    frame: Frame


class Found(NamedTuple):
    """A message as the database has it now, for a fill; frames are built only when needed."""

    seq: int
    message_id: int
    deleted: bool
    new_frame: Callable[[], Frame]
    updated_frame: Callable[[], Frame]


@dataclass
class ChatStream:
    chat_id: int
    # The newest seq delivered, or not to be delivered (where the socket started).
    last_seq: int
    # The largest message id the socket has shown (or that existed when it started).
    newest_id: int
    # The membership this stream delivers for (ChatMember.joined_revision).
    joined_revision: int
    # The newest ChatInfo revision the socket has shown (`chat_updated`).
    info_revision: int = 0
    # Changes waiting for their predecessors: seq -> change.
    waiting: dict[int, Change] = field(default_factory=dict)

    def accept(self, change: Change) -> list[Frame]:
        """Take one live change; return the frames now deliverable, in order."""
        if change.seq <= self.last_seq:
            return []  # Delivered already, or older than this socket's start.
        if change.seq == self.last_seq + 1 and not self.waiting:
            return [self._take(change)]  # The usual case, in order: nothing to scan.
        self.waiting[change.seq] = change
        return self._drain()

    def fill(self, found: list[Found], up_to_seq: int) -> list[Frame]:
        """What the database returned for seqs (last_seq, up_to_seq], by seq; then whatever
        was waiting beyond it."""
        frames = []
        for item in found:
            if item.seq <= self.last_seq:
                continue
            self.last_seq = item.seq
            if item.message_id > self.newest_id:
                self.newest_id = item.message_id
                frames.append(item.updated_frame() if item.deleted else item.new_frame())
            else:
                frames.append(item.updated_frame())
        self.last_seq = max(self.last_seq, up_to_seq)
        for seq in [seq for seq in self.waiting if seq <= self.last_seq]:
            del self.waiting[seq]
        return frames + self._drain()

    @property
    def has_gap(self) -> bool:
        return bool(self.waiting)

    def newest_waiting_seq(self) -> int:
        return max(self.waiting)

    def _take(self, change: Change) -> Frame:
        self.last_seq = change.seq
        if change.created:
            self.newest_id = max(self.newest_id, change.message_id)
        return change.frame

    def _drain(self) -> list[Frame]:
        frames = []
        while (change := self.waiting.pop(self.last_seq + 1, None)) is not None:
            frames.append(self._take(change))
        return frames
