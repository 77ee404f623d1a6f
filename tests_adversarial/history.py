"""A Jepsen-style history check of one chat: what clients were told against what was stored.

Clients record what they did and saw (`ClientHistory`); `check_history` compares that with the
chat's messages as the database holds them at the end (`stored`: message id -> the contract's
Message object) and returns every violation it finds, as readable lines, each naming its rule.

What a client records:
- its sends (client_id -> text) and the acknowledged ones (client_id -> message id);
- per connection, in arrival order, each `new_message` and `message_updated` as (kind, id,
  seq). A `new_message` of its own whose client_id it sent more than once is kept apart
  (`answered`): the contract answers a repeated client_id with the original, as it is now, out
  of the stream's order, and that answer cannot be told from the original's live copy;
- its `since_seq` catch-up pages;
- each try of each change it made over HTTP (`Attempt`: edit, delete, reaction added or
  removed) with its outcome: ACKED (2xx; an edit's 200 carries the new seq), REFUSED (4xx:
  nothing changed), UNSETTLED (a 5xx or a broken connection: the server may have applied it,
  but before the client heard, since the server answered or the process serving it died),
  TIMED_OUT (no answer in time: the server may still apply it later), NOT_SENT (no connection);
- every state of a message it was shown (live, answers, pages, an edit's 200), by (id, seq).

The rules:

Messages (as before v2)
- S1 every acknowledged send is stored under the acknowledged id, with its author and client_id;
- S2 no (author, client_id) is stored twice, nothing is stored that no client sent.

Changes. A message's text is written only by its author (edits); one user's emoji on a message
only by that user (reaction added or removed): each such *register* is written by one client,
one try at a time, so its tries are ordered. Deletions override both.
- C1 (text) unless the message is a tombstone, its stored text is the text of the last
  acknowledged edit (none: the text sent), or of an UNSETTLED edit tried after that
  acknowledgement, or of a TIMED_OUT edit tried at any time; its `edited_at` is set when an
  edit was acknowledged and null when no edit was ever tried (refused and unsent tries aside);
  an edit is acknowledged only to the author, with the text asked for;
- C2 (reactions) unless the message is a tombstone, each (emoji, user) is present exactly when
  the same rule, applied to that user's adds (present) and removes (absent), with "absent"
  in place of the text sent, allows it;
- C3 (deletes) an acknowledged delete left a tombstone (`deleted`, text "", no reactions); a
  tombstone needs a delete of it tried (acknowledged, unsettled or timed out); an edit or a
  reaction refused with 404 was refused because the message is deleted: it is a tombstone;
- C4 (seq) the stored seq of a message is at least every seq any acknowledgement reported
  for it (a send's, an edit's).

What clients were shown.
- A1 every message shown is stored, with the same author, client_id and created_at; no copy
  carries a seq beyond the stored one; a copy at the stored seq is the stored message exactly
  (text, deleted, edited_at, reactions);
- A2 one change, one content: every copy of a message at a given seq, shown to any client, is
  the same; and a seq belongs to one message only.

Order, within one connection (its live events, answers aside).
- O1 a chat's `new_message` and `message_updated` events come in strictly increasing seq:
  none twice, none out of order;
- O2 `new_message` ids strictly increase;
- O3 a gap is a cut or a fill: when a connection shows seq a then seq b, a change (m, s) known
  with a < s < b (shown to anyone, or stored) may be missing from it only if the same
  connection later shows m at a seq above s (the socket filled the gap from the database,
  where m had changed again), or answered m, or the connection ended before m's stored seq
  (the next catch-up brings m);
- O4 between two `new_message` ids i < j of a connection, every stored message i < x < j is
  shown on that connection (as either event), answered on it, or the connection ended before
  x's stored seq.

Views.
- V1 each client's view (every message shown live, answered, or in a catch-up page, by id,
  keeping the higher seq) holds every stored message exactly as stored (text, deleted,
  reactions, edited_at, seq, author, client_id, created_at), and nothing else.

Reactions are compared as sets of users per emoji (the contract does not order them).
"""

from __future__ import annotations

import itertools
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

NEW, UPDATED = "new_message", "message_updated"
EDIT, DELETE, REACT, UNREACT = "edit", "delete", "react", "unreact"
ACKED, REFUSED, UNSETTLED, TIMED_OUT, NOT_SENT = (
    "acked",
    "refused",
    "unsettled",
    "timed out",
    "not sent",
)
# Outcomes after which a try may have changed the database (TIMED_OUT: perhaps even later).
MAY_HAVE_APPLIED = frozenset({ACKED, UNSETTLED, TIMED_OUT})

# A message's state without its id and seq: (author_id, client_id, created_at, text, deleted,
# edited_at, reactions as a sorted tuple of (emoji, sorted user ids)).
State = tuple[Any, ...]
IMMUTABLE = slice(0, 3)


def state_of(message: dict[str, Any]) -> State:
    reactions = tuple(
        sorted((emoji, tuple(sorted(users))) for emoji, users in message["reactions"].items())
    )
    return (
        message["author_id"],
        message["client_id"],
        message["created_at"],
        message["text"],
        message["deleted"],
        message["edited_at"],
        reactions,
    )


def _shown(state: State) -> str:
    author, client_id, _, text, deleted, edited_at, reactions = state
    what = "tombstone" if deleted else repr(text)
    return f"{what} by {author} ({client_id}), edited_at {edited_at}, reactions {dict(reactions)}"


_numbers = itertools.count(1)


@dataclass
class Attempt:
    """One try of one change. `number` orders a client's tries (and, within one test, all
    tries: it comes from one counter)."""

    kind: str
    message_id: int
    value: str = ""  # An edit's text; a reaction's emoji.
    outcome: str = NOT_SENT
    status: int | None = None
    seq: int | None = None  # An acknowledged edit's seq.
    number: int = field(default_factory=lambda: next(_numbers))


@dataclass
class ClientHistory:
    name: str
    user_id: int
    # client_id -> text, for every send tried at least once.
    sent: dict[str, str] = field(default_factory=dict)
    # client_id -> message id, for each send the server acknowledged.
    acked: dict[str, int] = field(default_factory=dict)
    # Client_ids sent more than once: their `new_message` frames are answers (see above).
    resent: set[str] = field(default_factory=set)
    # Per connection, the live events in arrival order: (kind, message id, seq).
    sessions: list[list[tuple[str, int, int]]] = field(default_factory=list)
    # Per connection: ids of the messages that came as (possible) answers to a resend.
    answered: list[set[int]] = field(default_factory=list)
    # Every (id, seq) shown to this client, with the message's state then.
    observed: dict[tuple[int, int], State] = field(default_factory=dict)
    # id -> (seq, state): the newest copy of each message from live events, answers and pages.
    view: dict[int, tuple[int, State]] = field(default_factory=dict)
    # Problems seen while recording (a copy of a change that differs from an earlier one).
    conflicts: list[str] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    # The largest seq the client knows it holds everything up to (where a catch-up starts).
    synced_seq: int = 0
    reconnects: int = 0
    resends: int = 0
    catch_ups: int = 0

    # --- Recording ------------------------------------------------------------------------

    def connected(self) -> None:
        self.sessions.append([])
        self.answered.append(set())

    def event(self, kind: str, message: dict[str, Any]) -> bool:
        """A `new_message` or `message_updated` from the current connection; True when it is
        a live event, False when it is kept apart as a possible answer to a resend."""
        if kind == NEW and message["author_id"] == self.user_id:
            if message["client_id"] in self.resent:
                self.answered[-1].add(message["id"])
                self._observe(message, into_view=True)
                return False
        self.sessions[-1].append((kind, message["id"], message["seq"]))
        self._observe(message, into_view=True)
        return True

    def caught_up(self, messages: Iterable[dict[str, Any]]) -> None:
        """The pages of one catch-up."""
        self.catch_ups += 1
        for message in messages:
            self._observe(message, into_view=True)

    def acknowledged_state(self, message: dict[str, Any]) -> None:
        """A message as an HTTP answer showed it (an edit's 200): checked against every other
        copy of that change, but not part of the view (the view is what sockets and catch-ups
        brought)."""
        self._observe(message, into_view=False)

    def attempt(self, kind: str, message_id: int, value: str = "") -> Attempt:
        tried = Attempt(kind=kind, message_id=message_id, value=value)
        self.attempts.append(tried)
        return tried

    def _observe(self, message: dict[str, Any], *, into_view: bool) -> None:
        key, state = (message["id"], message["seq"]), state_of(message)
        earlier = self.observed.setdefault(key, state)
        if earlier != state:
            self.conflicts.append(
                f"A2 {self.name}: message {key[0]} at seq {key[1]} shown as {_shown(state)}, "
                f"earlier as {_shown(earlier)}"
            )
        if not into_view:
            return
        held = self.view.get(message["id"])
        if held is not None and held[1][IMMUTABLE] != state[IMMUTABLE]:
            self.conflicts.append(
                f"A1 {self.name}: message {key[0]} changed author/client_id/created_at: "
                f"{_shown(held[1])} then {_shown(state)}"
            )
        if held is None or key[1] > held[0]:
            self.view[message["id"]] = (key[1], state)


# --- The check ----------------------------------------------------------------------------------


def check_history(clients: list[ClientHistory], stored: dict[int, dict[str, Any]]) -> list[str]:
    """Every violation found; `stored` is the chat's messages by id, as the API shows them."""
    states = {message_id: state_of(message) for message_id, message in stored.items()}
    seqs = {message_id: message["seq"] for message_id, message in stored.items()}
    problems: list[str] = []
    problems += _sends(clients, stored)
    problems += _changes(clients, stored)
    known = _known_changes(clients, seqs, problems)
    history = sorted(stored)
    for client in clients:
        problems += client.conflicts
        problems += _shown_are_stored(client, states, seqs)
        for number in range(len(client.sessions)):
            problems += _connection_order(client, number, known, seqs, history)
        problems += _view_difference(client, states, seqs)
    return problems


def _sends(clients: list[ClientHistory], stored: dict[int, dict[str, Any]]) -> list[str]:
    problems = []
    by_sender = Counter((row["author_id"], row["client_id"]) for row in stored.values())
    sent = {(client.user_id, client_id) for client in clients for client_id in client.sent}
    for (author_id, client_id), count in by_sender.items():
        if count > 1:
            problems.append(f"S2 client_id {client_id!r} of user {author_id} stored {count} times")
        if (author_id, client_id) not in sent:
            problems.append(f"S2 stored but never sent: user {author_id}, client_id {client_id!r}")
    for client in clients:
        for client_id, message_id in client.acked.items():
            row = stored.get(message_id)
            if row is None or row["client_id"] != client_id or row["author_id"] != client.user_id:
                shown = None if row is None else _shown(state_of(row))
                problems.append(
                    f"S1 {client.name}: send {client_id!r} acknowledged as message {message_id}, "
                    f"stored: {shown}"
                )
    return problems


def _allowed(attempts: list[Attempt], initial: Any, value_of: Any) -> set[Any]:
    """The values a register may hold at the end, given its tries in order (see C1)."""
    last_acked = max(
        (index for index, tried in enumerate(attempts) if tried.outcome == ACKED), default=None
    )
    allowed = {initial if last_acked is None else value_of(attempts[last_acked])}
    for index, tried in enumerate(attempts):
        after = last_acked is None or index > last_acked
        if (tried.outcome == UNSETTLED and after) or tried.outcome == TIMED_OUT:
            allowed.add(value_of(tried))
    return allowed


def _changes(clients: list[ClientHistory], stored: dict[int, dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    texts_sent = {
        (client.user_id, client_id): text
        for client in clients
        for client_id, text in client.sent.items()
    }
    edits: dict[int, list[Attempt]] = defaultdict(list)
    deletes: dict[int, list[tuple[str, Attempt]]] = defaultdict(list)
    reactions: dict[tuple[int, str, int], list[Attempt]] = defaultdict(list)
    refused_as_deleted: list[tuple[str, Attempt]] = []
    acked_seqs: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for client in clients:
        for client_id, message_id in client.acked.items():
            row = stored.get(message_id)
            if row is not None:
                acked_seqs[message_id].append((f"send {client_id!r}", row["seq"]))
        for tried in client.attempts:
            message = stored.get(tried.message_id)
            if tried.outcome == REFUSED and tried.status == 404 and tried.kind in (EDIT, REACT):
                refused_as_deleted.append((client.name, tried))
            if message is None:
                if tried.outcome in MAY_HAVE_APPLIED:
                    problems.append(
                        f"C3 {client.name}: {tried.kind} of message {tried.message_id} "
                        f"{tried.outcome}, but no such message is stored"
                    )
                continue
            if tried.kind == EDIT:
                if tried.outcome == ACKED and message["author_id"] != client.user_id:
                    problems.append(
                        f"C1 {client.name}: edit of message {tried.message_id} acknowledged "
                        f"to user {client.user_id}, not its author {message['author_id']}"
                    )
                if client.user_id == message["author_id"]:
                    edits[tried.message_id].append(tried)
                if tried.outcome == ACKED and tried.seq is not None:
                    acked_seqs[tried.message_id].append((f"edit #{tried.number}", tried.seq))
            elif tried.kind == DELETE:
                deletes[tried.message_id].append((client.name, tried))
            else:
                reactions[(tried.message_id, tried.value, client.user_id)].append(tried)
    for message_id, message in stored.items():
        if message["deleted"]:
            problems += _tombstone(message_id, message, deletes.get(message_id, []))
        else:
            problems += _text(message_id, message, edits.get(message_id, []), texts_sent)
        for name, tried in deletes.get(message_id, []):
            if tried.outcome == ACKED and not message["deleted"]:
                problems.append(
                    f"C3 {name}: delete #{tried.number} of message {message_id} acknowledged, "
                    f"but it is stored as {_shown(state_of(message))}"
                )
        for what, seq in acked_seqs.get(message_id, []):
            if seq > message["seq"]:
                problems.append(
                    f"C4 message {message_id}: {what} acknowledged at seq {seq}, "
                    f"stored at seq {message['seq']}"
                )
    problems += _reactions(stored, reactions)
    for name, tried in refused_as_deleted:
        message = stored.get(tried.message_id)
        if message is not None and not message["deleted"]:
            problems.append(
                f"C3 {name}: {tried.kind} #{tried.number} of message {tried.message_id} refused "
                f"with 404, but it is not deleted: {_shown(state_of(message))}"
            )
    return problems


def _tombstone(
    message_id: int, message: dict[str, Any], deletes: list[tuple[str, Attempt]]
) -> list[str]:
    problems = []
    if message["text"] != "" or message["reactions"]:
        problems.append(f"C3 message {message_id} is deleted but keeps {_shown(state_of(message))}")
    if not any(tried.outcome in MAY_HAVE_APPLIED for _, tried in deletes):
        problems.append(f"C3 message {message_id} is deleted, but no client deleted it")
    return problems


def _text(
    message_id: int,
    message: dict[str, Any],
    edits: list[Attempt],
    texts_sent: dict[tuple[int, str | None], str],
) -> list[str]:
    problems = []
    initial = texts_sent.get((message["author_id"], message["client_id"]))
    if initial is None:
        return []  # Never sent (S2).
    edits = sorted(edits, key=lambda tried: tried.number)
    allowed = _allowed(edits, initial, lambda tried: tried.value)
    if message["text"] not in allowed:
        problems.append(
            f"C1 message {message_id}: stored text {message['text']!r}, but the acknowledged "
            f"edits and the unsettled ones after them allow only {sorted(map(str, allowed))}"
        )
    applied = [tried for tried in edits if tried.outcome in MAY_HAVE_APPLIED]
    if any(tried.outcome == ACKED for tried in edits) and message["edited_at"] is None:
        problems.append(f"C1 message {message_id}: an edit was acknowledged, edited_at is null")
    if not applied and message["edited_at"] is not None:
        problems.append(
            f"C1 message {message_id}: edited_at {message['edited_at']} but nobody edited it"
        )
    return problems


def _reactions(
    stored: dict[int, dict[str, Any]], attempts: dict[tuple[int, str, int], list[Attempt]]
) -> list[str]:
    problems = []
    present = {
        (message_id, emoji, user_id)
        for message_id, message in stored.items()
        for emoji, users in message["reactions"].items()
        for user_id in users
    }
    for key in sorted(present | set(attempts)):
        message_id, emoji, user_id = key
        message = stored.get(message_id)
        if message is None or message["deleted"]:
            continue  # A tombstone has no reactions (C3).
        tries = sorted(attempts.get(key, []), key=lambda tried: tried.number)
        allowed = _allowed(tries, False, lambda tried: tried.kind == REACT)
        if (key in present) not in allowed:
            history = ", ".join(f"{tried.kind} {tried.outcome}" for tried in tries) or "none"
            problems.append(
                f"C2 message {message_id}: reaction {emoji} of user {user_id} is "
                f"{'present' if key in present else 'absent'}; that user's tries: {history}"
            )
    return problems


def _known_changes(
    clients: list[ClientHistory], seqs: dict[int, int], problems: list[str]
) -> dict[int, int]:
    """seq -> message id, for every change anyone was shown or the database holds; and A2
    across clients (one content per change, one message per seq)."""
    first_copy: dict[tuple[int, int], tuple[str, State]] = {}
    for client in clients:
        for key, state in client.observed.items():
            name, earlier = first_copy.setdefault(key, (client.name, state))
            if earlier != state:
                problems.append(
                    f"A2 message {key[0]} at seq {key[1]} shown to {name} as {_shown(earlier)}, "
                    f"to {client.name} as {_shown(state)}"
                )
    known: dict[int, int] = {}
    pairs = itertools.chain(
        ((seq, message_id) for message_id, seq in seqs.items()),
        ((seq, message_id) for client in clients for message_id, seq in client.observed),
    )
    for seq, message_id in pairs:
        holder = known.setdefault(seq, message_id)
        if holder != message_id:
            problems.append(f"A2 seq {seq} names two messages: {holder} and {message_id}")
    return known


def _shown_are_stored(
    client: ClientHistory, states: dict[int, State], seqs: dict[int, int]
) -> list[str]:
    problems = []
    for (message_id, seq), state in client.observed.items():
        stored = states.get(message_id)
        if stored is None:
            problems.append(f"A1 {client.name}: shown message {message_id}, not stored")
        elif state[IMMUTABLE] != stored[IMMUTABLE]:
            problems.append(
                f"A1 {client.name}: message {message_id} shown as {_shown(state)}, "
                f"stored as {_shown(stored)}"
            )
        elif seq > seqs[message_id]:
            problems.append(
                f"A1 {client.name}: message {message_id} shown at seq {seq}, stored at seq "
                f"{seqs[message_id]}"
            )
        elif seq == seqs[message_id] and state != stored:
            problems.append(
                f"A1 {client.name}: message {message_id} at its stored seq {seq} shown as "
                f"{_shown(state)}, stored as {_shown(stored)}"
            )
    return problems


def _connection_order(
    client: ClientHistory,
    number: int,
    known: dict[int, int],
    seqs: dict[int, int],
    history: list[int],
) -> list[str]:
    session, answered = client.sessions[number], client.answered[number]
    where = f"{client.name} connection {number}"
    problems = []
    # Per message: the largest seq this connection showed it at, and where (event index).
    shown_at: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for index, (_, message_id, seq) in enumerate(session):
        shown_at[message_id].append((index, seq))
    last_seq = max((seq for _, _, seq in session), default=0)

    def excused(message_id: int, seq: int, index: int) -> bool:
        """Missing change (message_id, seq) before event `index`: filled or cut (O3, O4)."""
        if message_id in answered:
            return True
        if any(later > index and shown > seq for later, shown in shown_at.get(message_id, [])):
            return True
        return last_seq < seqs.get(message_id, 0)

    # Each event against the highest seq shown before it (so one event out of order is one
    # violation, not also a gap for the next).
    high, high_index = None, -1
    for index, (kind, message_id, seq) in enumerate(session):
        if high is not None and seq <= high:
            twice = "again" if seq == high else "out of order"
            problems.append(
                f"O1 {where}: {kind} of message {message_id} at seq {seq} after seq {high} "
                f"({twice})"
            )
            continue
        for between in range(high + 1 if high is not None else seq, seq):
            missing = known.get(between)
            if missing is not None and not excused(missing, between, high_index):
                problems.append(
                    f"O3 {where}: change seq {between} (message {missing}) skipped between "
                    f"seq {high} and {seq}, and not shown again although the connection went "
                    f"on to seq {last_seq} (stored seq {seqs.get(missing)})"
                )
        high, high_index = seq, index
    news = [
        (index, message_id) for index, (kind, message_id, _) in enumerate(session) if kind == NEW
    ]
    for (_, low), (index, high) in itertools.pairwise(news):
        if high <= low:
            problems.append(f"O2 {where}: new_message {high} after new_message {low}")
            continue
        between = history[bisect_right(history, low) : bisect_left(history, high)]
        skipped = [
            message_id
            for message_id in between
            if message_id not in shown_at and not excused(message_id, 0, index)
        ]
        if skipped:
            problems.append(
                f"O4 {where}: messages {skipped[:5]} skipped between new_message {low} and "
                f"{high}, never shown on it"
            )
    return problems


def _view_difference(
    client: ClientHistory, states: dict[int, State], seqs: dict[int, int]
) -> list[str]:
    problems = []
    missing = sorted(set(states) - set(client.view))
    extra = sorted(set(client.view) - set(states))
    if missing or extra:
        problems.append(
            f"V1 {client.name}: view holds {len(client.view)} messages, the database "
            f"{len(states)}: missing {missing[:10]}, not stored {extra[:10]}"
        )
    stale = []
    for message_id, (seq, state) in sorted(client.view.items()):
        if message_id in states and (seq, state) != (seqs[message_id], states[message_id]):
            stale.append(
                f"V1 {client.name}: message {message_id} held at seq {seq} as {_shown(state)}; "
                f"stored at seq {seqs[message_id]} as {_shown(states[message_id])}"
            )
    return problems + stale[:10] + ([f"... and {len(stale) - 10} more"] if len(stale) > 10 else [])
