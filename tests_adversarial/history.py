"""A Jepsen-style history check of one chat: what clients were told against what was stored.

Clients record what they did and saw (`ClientHistory`); `check_history` compares that with the
chat's messages in the database and returns every violation it finds, as readable lines:

- every message acknowledged to its sender is stored, exactly once, under the acknowledged id;
- nothing is stored that no client sent (each send carries a unique client_id);
- every message any socket announced is stored, with the very content announced;
- within one connection, a socket's messages come in increasing id order with nothing skipped
  between two of them (no duplicate, no reordering, no gap);
- each client's view (its live messages, its `after` catch-ups and the answers to its resends,
  deduplicated by id as the protocol guide tells clients to) is the chat's whole history.

A resend's answer is not a live delivery: the contract answers a repeated client_id with the
original message, whatever its place in the stream, and the original's own delivery came (or
comes) live or through a catch-up. Answers are kept apart (`answered`), and a connection may
skip exactly those ids.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ClientHistory:
    name: str
    user_id: int
    # client_id -> message id, for each send the server acknowledged.
    acked: dict[str, int] = field(default_factory=dict)
    # Every client_id this client sent at least once.
    sent: set[str] = field(default_factory=set)
    # The messages each connection delivered, in arrival order (one list per connection).
    sessions: list[list[dict[str, Any]]] = field(default_factory=list)
    # Per connection: ids of the messages that answered a resend.
    answered: list[set[int]] = field(default_factory=list)
    # Every message id the client knows of (live, caught up or answered).
    view: set[int] = field(default_factory=set)
    reconnects: int = 0
    resends: int = 0

    def connected(self) -> None:
        self.sessions.append([])
        self.answered.append(set())

    def see(self, message: dict[str, Any]) -> None:
        """A live message from the current connection."""
        self.sessions[-1].append(message)
        self.view.add(message["id"])

    def answer(self, message: dict[str, Any]) -> None:
        """The answer to a resend on the current connection."""
        self.answered[-1].add(message["id"])
        self.view.add(message["id"])

    def merge(self, ids: list[int]) -> None:
        """Messages from a catch-up."""
        self.view.update(ids)

    def newest(self) -> int:
        """Where a catch-up starts: the newest id known (anything missing below it stays
        missing, which is what the check is for)."""
        return max(self.view, default=0)


def check_history(clients: list[ClientHistory], stored: dict[int, dict[str, Any]]) -> list[str]:
    """Every violation found; `stored` is the chat's messages by id (author_id, text,
    client_id)."""
    problems: list[str] = []
    history = sorted(stored)
    by_sender = Counter((row["author_id"], row["client_id"]) for row in stored.values())
    sent = {(client.user_id, client_id) for client in clients for client_id in client.sent}
    for (author_id, client_id), count in by_sender.items():
        if count > 1:
            problems.append(f"client_id {client_id!r} of user {author_id} stored {count} times")
        if (author_id, client_id) not in sent:
            problems.append(f"stored but never sent: user {author_id}, client_id {client_id!r}")
    for client in clients:
        problems += _acknowledged_are_stored(client, stored)
        problems += _announced_are_stored(client, stored)
        problems += _sessions_are_gapless(client, history)
        if sorted(client.view) != history:
            problems.append(_view_difference(client, history))
    return problems


def _acknowledged_are_stored(client: ClientHistory, stored: dict[int, dict[str, Any]]) -> list:
    problems = []
    for client_id, message_id in client.acked.items():
        row = stored.get(message_id)
        if row is None or row["client_id"] != client_id or row["author_id"] != client.user_id:
            problems.append(f"{client.name}: ack {client_id!r} -> {message_id} not stored: {row}")
    return problems


def _announced_are_stored(client: ClientHistory, stored: dict[int, dict[str, Any]]) -> list:
    problems = []
    for session in client.sessions:
        for message in session:
            row = stored.get(message["id"])
            announced = {key: message[key] for key in ("author_id", "text", "client_id")}
            if row != announced:
                problems.append(f"{client.name}: announced {message} but stored {row}")
    return problems


def _sessions_are_gapless(client: ClientHistory, history: list[int]) -> list[str]:
    problems = []
    pairs = zip(client.sessions, client.answered, strict=True)
    for number, (session, answered) in enumerate(pairs):
        ids = [message["id"] for message in session]
        for before, after in zip(ids, ids[1:], strict=False):
            if after <= before:
                problems.append(f"{client.name} connection {number}: {after} after {before}")
                continue
            between = history[bisect_right(history, before) : bisect_left(history, after)]
            skipped = [message_id for message_id in between if message_id not in answered]
            if skipped:
                problems.append(
                    f"{client.name} connection {number}: {skipped[:5]} skipped between "
                    f"{before} and {after}"
                )
    return problems


def _view_difference(client: ClientHistory, history: list[int]) -> str:
    missing = [message_id for message_id in history if message_id not in client.view]
    extra = sorted(client.view - set(history))
    return (
        f"{client.name}: view differs from the history ({len(client.view)} vs {len(history)}): "
        f"missing {missing[:10]}, not stored {extra[:10]}"
    )
