"""A Jepsen-style history check of one chat: what clients were told against what was stored.

Clients record what they did and saw (`ClientHistory`); `check_history` compares that with the
chat's messages in the database and returns every violation it finds, as readable lines:

- every message acknowledged to its sender is stored, exactly once, under the acknowledged id;
- nothing is stored that no client sent (each send carries a unique client_id);
- every message any socket announced is stored, with the very content announced;
- within one connection, a socket's messages come in increasing id order with nothing skipped
  between two of them (no duplicate, no reordering, no gap);
- each client's view (its live messages plus its `after` catch-ups, merged by id) is the
  chat's whole history, in order: nothing missing, nothing twice.
"""

from __future__ import annotations

from bisect import bisect_right
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
    # The client's merged view: ids from live events and catch-ups, each appended once, in order.
    view: list[int] = field(default_factory=list)
    reconnects: int = 0
    resends: int = 0

    def see(self, message: dict[str, Any]) -> None:
        """A live message from the current connection."""
        self.sessions[-1].append(message)
        self.merge([message["id"]])

    def merge(self, ids: list[int]) -> None:
        """Append what is newer than the view (a catch-up overlaps the live stream)."""
        for message_id in ids:
            if not self.view or message_id > self.view[-1]:
                self.view.append(message_id)


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
        if client.view != history:
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
    for number, session in enumerate(client.sessions):
        ids = [message["id"] for message in session]
        for before, after in zip(ids, ids[1:], strict=False):
            if after <= before:
                problems.append(f"{client.name} connection {number}: {after} after {before}")
            elif bisect_right(history, before) < len(history) and (
                history[bisect_right(history, before)] != after
            ):
                skipped = history[bisect_right(history, before)]
                problems.append(
                    f"{client.name} connection {number}: {skipped} skipped between "
                    f"{before} and {after}"
                )
    return problems


def _view_difference(client: ClientHistory, history: list[int]) -> str:
    view = set(client.view)
    missing = [message_id for message_id in history if message_id not in view]
    extra = sorted(view - set(history))
    duplicates = [item for item, count in Counter(client.view).items() if count > 1]
    return (
        f"{client.name}: view differs from the history ({len(client.view)} vs {len(history)}): "
        f"missing {missing[:10]}, not stored {extra[:10]}, twice {duplicates[:10]}, "
        f"in order: {client.view == sorted(client.view)}"
    )
