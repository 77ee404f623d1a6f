"""Faults under load, with a history check (Jepsen style), on real processes.

Two daphne instances share the test database and a private Redis. Several clients log in over
HTTP and open sockets (spread over both instances). Each sends messages with client_ids, one
at a time, resending the same client_id until acknowledged; and now and then, over HTTP, edits
or deletes one of its recent messages, or adds or removes a reaction on a recent message of
anyone (the chat's owner also deletes other people's messages). Meanwhile the test kills Redis
(SIGKILL) and restarts it, terminates the instances' PostgreSQL backends (pg_terminate_backend,
only those of this test database), and SIGKILLs one daphne, whose clients reconnect to the
other and catch up with `?since_seq=`.

A change is retried the way a real client retries, until it is answered: after a 5xx or a
broken connection (each try is recorded with what its outcome says about whether it applied;
see history.py). An edit retried sets the same text again; a reaction added or removed again
changes nothing (204); a delete retried answers 204 whether the first try deleted or not
(the contract: "deleting again: 204"), so its retry is an acknowledgement of the tombstone.
A refusal (4xx) is final; 404 (the message was deleted meanwhile) is the only one expected.

Afterwards each client reads what is left on its socket, then catches up with `since_seq` from
the largest seq it holds everything up to, and `history.check_history` must find nothing:
every acknowledged send and change in the database, nothing twice, every connection's events
in seq order with gaps only where a fill or a cut explains them, and every client's view equal
to the database's current state of every message. Finally, no log line of any process holds a
token or a password.

CI runs a short variant; `make soak` a long one (FAULT_SECONDS, FAULT_CYCLES, FAULT_CLIENTS),
which also writes its figures to FAULT_REPORT for docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from conftest import PASSWORD
from liveserver.processes import DaphneServer
from messaging.events import message_data
from messaging.models import Chat, Message
from messaging.reactions import reactions_by_message
from tests_adversarial.history import (
    ACKED,
    DELETE,
    EDIT,
    NEW,
    NOT_SENT,
    REACT,
    REFUSED,
    TIMED_OUT,
    UNREACT,
    UNSETTLED,
    UPDATED,
    ClientHistory,
    check_history,
)
from tests_adversarial.live import Cluster, ahttp_json, catch_up, running_cluster

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.multiprocess,
    pytest.mark.django_db(transaction=True),
]

CLIENTS = int(os.environ.get("FAULT_CLIENTS", "4"))
# One cycle: Redis killed and restarted, database backends terminated, one daphne killed
# (and, in all but the last cycle, started again). CI: one cycle in about 20 s.
CYCLES = int(os.environ.get("FAULT_CYCLES", "1"))
CYCLE_SECONDS = float(os.environ.get("FAULT_SECONDS", "20"))
REPORT = os.environ.get("FAULT_REPORT")
SEED = int(os.environ.get("FAULT_SEED", "11"))
# Pause between a client's answered action and its next one.
PACE_SECONDS = 0.02
# No acknowledgement of a send for this long: the connection is given up and the send retried.
ACK_TIMEOUT = 5.0
# An HTTP change unanswered for this long is retried (and may still apply later: TIMED_OUT).
HTTP_TIMEOUT = 10.0
RETRY_PAUSE_SECONDS = 0.2
# Of a client's actions, this share are changes (the rest are sends), in these proportions.
CHANGE_SHARE = 0.4
CHANGES = {EDIT: 0.35, REACT: 0.3, UNREACT: 0.2, DELETE: 0.15}
# Changes aim at the newest messages, where the other clients act too.
RECENT = 20
EMOJI = ("👍", "🎉", ":tada:", "👀")
# At the end, a socket is read until it stays quiet for this long.
QUIET_SECONDS = 0.5
# The instances' database connections carry this name, so only they are terminated.
APPLICATION_NAME = "adversarial-daphne"
# Far above this test's traffic: it is about faults, not throttling (tests_adversarial/test_limits).
INSTANCE_ENV = {"THROTTLE_SEND": "1000000/min"}


@dataclass
class FaultLog:
    injected: list[tuple[float, str]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def note(self, what: str) -> None:
        self.injected.append((round(time.monotonic() - self.started, 2), what))


@dataclass
class Client:
    """A chat client: reads its socket all along, sends until acknowledged, changes messages
    over HTTP, and after each reconnect catches up with `since_seq`."""

    history: ClientHistory
    username: str
    chat_id: int
    instances: list[DaphneServer]
    home: int  # The instance it prefers.
    rng: random.Random
    owner: bool = False
    token: str = ""
    refresh: str = ""
    socket: ClientConnection | None = None
    reader: asyncio.Task[None] | None = None
    server: DaphneServer | None = None  # The socket's instance.
    base_url: str = ""
    sequence: int = 0
    # Sends waiting for their answer: client_id -> the `new_message` or `error` frame.
    waiting: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    # Whether the current connection's catch-up is done, and its highest live seq so far.
    synced: bool = False
    connection_high: int = 0
    recent: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT))
    own_recent: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT))
    edits: int = 0
    changes: int = 0
    retries: int = 0
    unexpected: list[str] = field(default_factory=list)

    async def sign_up(self) -> None:
        """Register and log in over HTTP, as a real client would (the logs are checked later;
        the instances hash with production's hasher, so the users are made here)."""
        server = self.instances[self.home]
        credentials = {"username": self.username, "password": PASSWORD}
        status, user = await ahttp_json(server.http_url("/users/register"), body=credentials)
        assert status == 201, user
        self.history.user_id = user["id"]
        status, tokens = await ahttp_json(server.http_url("/users/login"), body=credentials)
        assert status == 200, tokens
        self.token, self.refresh = tokens["access"], tokens["refresh"]

    async def run(self, stop: asyncio.Event) -> None:
        pending: str | None = None
        while not stop.is_set():
            if self.socket is None:
                await self._reconnect()
                continue
            if pending is None and self.rng.random() < CHANGE_SHARE and await self._change(stop):
                await asyncio.sleep(PACE_SECONDS)
                continue
            if pending is None:
                self.sequence += 1
                pending = f"{self.history.name}-{self.sequence}"
            if await self._send(pending):
                pending = None
                await asyncio.sleep(PACE_SECONDS)
        await self._read_what_is_left()

    # --- The socket ---------------------------------------------------------------------------

    async def _reconnect(self) -> None:
        """Open a socket on a live instance (home first), then catch up from the largest seq
        the client holds everything up to; live events are read meanwhile."""
        order = [self.home] + [n for n in range(len(self.instances)) if n != self.home]
        for index in order:
            server = self.instances[index]
            if not server.running:
                continue
            try:
                socket = await connect(
                    server.ws_url(token=self.token), proxy=None, open_timeout=5, max_size=None
                )
            except (OSError, InvalidHandshake, TimeoutError):
                continue
            self.history.connected()
            self.history.reconnects += 1
            self.socket, self.server = socket, server
            self.base_url = server.http_url("").rstrip("/")
            self.synced, self.connection_high = False, 0
            self.reader = asyncio.create_task(self._read(socket))
            try:
                pages = await catch_up(
                    self.base_url, self.chat_id, self.history.synced_seq, self.token
                )
            except (OSError, RuntimeError):  # The instance failed meanwhile: try again.
                await self._drop()
                return
            self.history.caught_up(pages)
            # Everything up to here is held now: the pages, and the live events since the
            # socket opened (which began at or before the pages' end).
            self.history.synced_seq = max(
                [self.history.synced_seq, self.connection_high]
                + [message["seq"] for message in pages]
            )
            self.synced = True
            return
        await asyncio.sleep(0.2)  # None answered (all down for a moment): try again soon.

    async def _read(self, socket: ClientConnection) -> None:
        """Record every event of this connection, in arrival order, and hand answers to the
        sends waiting for them."""
        try:
            async for text in socket:
                frame = json.loads(text)
                kind = frame["type"]
                if kind in (NEW, UPDATED):
                    self._record(kind, frame["message"])
                elif kind == "error":
                    client_id = (frame.get("request") or {}).get("client_id")
                    self._answer(client_id, frame)
        except ConnectionClosed:
            pass
        except Exception as error:  # A bug of this test or a frame it cannot read: fail.
            self.unexpected.append(f"reading the socket: {error!r}")
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(ConnectionClosed(None, None))

    def _record(self, kind: str, message: dict[str, Any]) -> None:
        if self.history.event(kind, message):
            self.connection_high = max(self.connection_high, message["seq"])
            if self.synced:
                self.history.synced_seq = max(self.history.synced_seq, message["seq"])
        if kind == NEW:
            self.recent.append(message["id"])
            if message["author_id"] == self.history.user_id:
                self._answer(message["client_id"], {"type": NEW, "message": message})

    def _answer(self, client_id: str | None, frame: dict[str, Any]) -> None:
        future = self.waiting.get(client_id) if client_id else None
        if future is not None and not future.done():
            future.set_result(frame)

    async def _send(self, client_id: str) -> bool:
        """Send once and wait for the answer; True when acknowledged."""
        assert self.socket is not None
        if client_id in self.history.sent:  # Before sending: its answer is out of band.
            self.history.resent.add(client_id)
            self.history.resends += 1
        text = f"text of {client_id}"
        self.history.sent[client_id] = text
        event = {"type": NEW, "chat_id": self.chat_id, "text": text, "client_id": client_id}
        answer = self.waiting[client_id] = asyncio.get_running_loop().create_future()
        try:
            await self.socket.send(json.dumps(event))
            async with asyncio.timeout(ACK_TIMEOUT):
                frame = await answer
        except (ConnectionClosed, TimeoutError, OSError):
            await self._drop()
            return False
        finally:
            del self.waiting[client_id]
            if not answer.done():
                answer.cancel()
            elif not answer.cancelled():
                answer.exception()  # Seen: the socket closing after the send failed is no news.
        if frame["type"] == "error":
            # The database or the layer failed this attempt: retry it.
            assert frame["code"] in {"server_error", "rate_limited"}, frame
            await asyncio.sleep(RETRY_PAUSE_SECONDS)
            return False
        message_id = frame["message"]["id"]
        self.history.acked[client_id] = message_id
        self.own_recent.append(message_id)
        return True

    async def _drop(self) -> None:
        socket, reader = self.socket, self.reader
        self.socket, self.reader, self.synced = None, None, False
        if socket is not None:
            with contextlib.suppress(Exception):
                await socket.close()
        if reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader, 5)
        await asyncio.sleep(0.1)  # No reconnect storm while an instance or Redis is down.

    async def _read_what_is_left(self) -> None:
        """Stop acting; keep reading until the socket stays quiet, then close it."""
        if self.socket is None:
            return
        seen = -1
        while seen != len(self.history.sessions[-1]) and self.reader and not self.reader.done():
            seen = len(self.history.sessions[-1])
            await asyncio.sleep(QUIET_SECONDS)
        await self._drop()

    async def final_catch_up(self) -> None:
        server = next(server for server in self.instances if server.running)
        base_url = server.http_url("").rstrip("/")
        pages = await catch_up(base_url, self.chat_id, self.history.synced_seq, self.token)
        self.history.caught_up(pages)

    # --- Changes over HTTP --------------------------------------------------------------------

    def _alive(self, message_id: int) -> bool:
        held = self.history.view.get(message_id)
        return held is not None and not held[1][4]  # Not a tombstone, as far as it knows.

    def _target(self, kind: str) -> tuple[int, str] | None:
        """A message (and emoji) to change, or None when there is none yet."""
        if kind == EDIT or (kind == DELETE and not self.owner):
            candidates = [m for m in self.own_recent if self._alive(m)]
        else:
            candidates = [m for m in self.recent if self._alive(m)]
        if kind == UNREACT:
            mine = [
                (message_id, emoji)
                for message_id in candidates
                for emoji, users in self.history.view[message_id][1][6]
                if self.history.user_id in users
            ]
            return self.rng.choice(mine) if mine else None
        if not candidates:
            return None
        message_id = self.rng.choice(candidates)
        if kind == EDIT:
            self.edits += 1
            return message_id, f"edit {self.edits} by {self.history.name}"
        return message_id, self.rng.choice(EMOJI) if kind == REACT else ""

    async def _change(self, stop: asyncio.Event) -> bool:
        """One change, retried until answered (or the test stops); False when there was
        nothing to change."""
        kind = self.rng.choices(list(CHANGES), weights=list(CHANGES.values()))[0]
        target = self._target(kind)
        if target is None:
            return False
        self.changes += 1
        message_id, value = target
        path = f"/chats/{self.chat_id}/messages/{message_id}"
        if kind in (REACT, UNREACT):
            path += f"/reactions/{quote(value, safe='')}"
        method = {EDIT: "PATCH", DELETE: "DELETE", REACT: "PUT", UNREACT: "DELETE"}[kind]
        body = {"text": value} if kind == EDIT else None
        tries = 0
        while True:
            base_url = self._http_base()
            if stop.is_set() and (tries or base_url is None):
                return True  # Given up: the last try's outcome stands.
            if base_url is None:
                await asyncio.sleep(RETRY_PAUSE_SECONDS)
                continue
            tries += 1
            self.retries += tries > 1
            tried = self.history.attempt(kind, message_id, value)
            try:
                status, answer = await ahttp_json(
                    base_url + path, method=method, body=body, token=self.token,
                    timeout=HTTP_TIMEOUT,
                )  # fmt: skip
            except ConnectionRefusedError:
                tried.outcome = NOT_SENT
            except TimeoutError:
                tried.outcome = TIMED_OUT
            except OSError:  # Reset, closed before the answer: the instance died.
                tried.outcome = UNSETTLED
            else:
                tried.status = status
                if status < 300:
                    tried.outcome = ACKED
                    if kind == EDIT:
                        tried.seq = answer["seq"]
                        self.history.acknowledged_state(answer)
                        if answer["text"] != value:
                            self.unexpected.append(f"edit {value!r} answered {answer}")
                    return True
                if status < 500 and status != 429:
                    tried.outcome = REFUSED
                    # Deleted meanwhile. A delete (again: 204) or a removal (absent: 204)
                    # is never refused.
                    if status != 404 or kind in (DELETE, UNREACT):
                        self.unexpected.append(f"{method} {path}: {status} {answer}")
                    return True
                tried.outcome = REFUSED if status == 429 else UNSETTLED
            await asyncio.sleep(RETRY_PAUSE_SECONDS)

    def _http_base(self) -> str | None:
        """The socket's instance, else any instance that runs."""
        if self.socket is not None and self.server is not None and self.server.running:
            return self.base_url
        for server in self.instances:
            if server.running:
                return server.http_url("").rstrip("/")
        return None


def _terminate_backends() -> int:
    """Terminate the instances' connections to this test database (and no one else's)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s",
            [APPLICATION_NAME],
        )
        return cursor.fetchone()[0]


async def _inject_faults(cluster: Cluster, log: FaultLog, cycle: int, last: bool) -> None:
    """One cycle: Redis down and back, backends terminated, one instance killed (-9), the
    instances taking turns."""
    step = CYCLE_SECONDS / 6
    await asyncio.sleep(step)
    cluster.redis.kill()
    log.note("redis SIGKILL")
    await asyncio.sleep(step)
    await asyncio.to_thread(cluster.redis.restart, 10)
    log.note("redis restarted")
    await asyncio.sleep(step)
    terminated = await sync_to_async(_terminate_backends)()
    log.note(f"pg_terminate_backend x{terminated}")
    await asyncio.sleep(step)
    victim = cluster.instances[cycle % len(cluster.instances)]
    victim.kill()
    log.note("daphne SIGKILL")
    await asyncio.sleep(step)
    if not last:
        await asyncio.to_thread(victim.restart, 60)
        log.note("daphne restarted")


def _stored_messages(chat_id: int) -> tuple[int, dict[int, dict[str, Any]]]:
    """The chat's seq and its messages as the API shows them (nothing changes any more)."""
    chat_seq = Chat.objects.get(pk=chat_id).seq
    messages = list(Message.objects.filter(chat_id=chat_id).order_by("id"))
    reactions = reactions_by_message(message.pk for message in messages)
    return chat_seq, {
        message.pk: message_data(message, reactions.get(message.pk, {})) for message in messages
    }


def _chat_seq(chat_id: int) -> int:
    return Chat.objects.get(pk=chat_id).seq


async def test_nothing_is_lost_or_duplicated_through_redis_database_and_daphne_faults(
    transactional_db: None, tmp_path: Path
) -> None:
    with running_cluster(
        tmp_path, instances=2, application_name=APPLICATION_NAME, extra_env=INSTANCE_ENV
    ) as cluster:
        clients = [
            Client(
                history=ClientHistory(name=f"c{n}", user_id=0),
                username=f"fault-client-{n}",
                chat_id=0,
                instances=cluster.instances,
                home=n % 2,
                rng=random.Random(SEED * 1000 + n),
                owner=n == 0,
            )
            for n in range(CLIENTS)
        ]
        await _exercise_credentials(cluster, clients)
        chat_id = await _create_chat(cluster, clients)
        log, stop = FaultLog(), asyncio.Event()
        running = [asyncio.create_task(client.run(stop)) for client in clients]
        for cycle in range(CYCLES):
            await _inject_faults(cluster, log, cycle, last=cycle == CYCLES - 1)
        traffic_seconds = time.monotonic() - log.started
        stop.set()
        await asyncio.wait_for(asyncio.gather(*running), 60)
        settled_seq = await sync_to_async(_chat_seq)(chat_id)
        for client in clients:
            await client.final_catch_up()
        logs = cluster.logs()
    chat_seq, stored = await sync_to_async(_stored_messages)(chat_id)
    # The connection of sync_to_async's thread, which would keep the test database from
    # being dropped at teardown.
    await sync_to_async(connections.close_all)()
    histories = [client.history for client in clients]
    problems = check_history(histories, stored)
    if chat_seq != settled_seq:  # A change committed after every client had stopped.
        problems.append(
            f"the chat changed after the clients stopped: seq {settled_seq} -> {chat_seq}"
        )
    summary = _summary(clients, stored, log, problems, traffic_seconds)
    if REPORT:
        await asyncio.to_thread(Path(REPORT).write_text, json.dumps(summary, indent=2) + "\n")
    if problems:  # Everything needed to study the failure, next to the processes' logs.
        dump = {"problems": problems, "clients": [_dump(history) for history in histories]}
        await asyncio.to_thread((tmp_path / "history.json").write_text, json.dumps(dump))
    assert not problems, f"details in {tmp_path}/history.json:\n" + "\n".join(problems[:30])
    assert not any(client.unexpected for client in clients), [c.unexpected for c in clients]
    # The run meant something: messages flowed and changed, faults hit, clients reconnected
    # and resent, changes were retried.
    assert summary["messages"]["acknowledged"] > 50 * CYCLES, summary
    for kind in (EDIT, DELETE, REACT, UNREACT):
        assert summary["changes"][kind]["acknowledged"] > 0, summary
    assert summary["deliveries"][UPDATED] > 0, summary
    assert sum(client.reconnects for client in histories) > CLIENTS, summary
    _assert_no_secrets(logs, clients)


async def _create_chat(cluster: Cluster, clients: list[Client]) -> int:
    creator, others = clients[0], clients[1:]
    status, chat = await ahttp_json(
        cluster.instances[0].http_url("/chats"),
        token=creator.token,
        body={"title": "faults", "member_ids": [client.history.user_id for client in others]},
    )
    assert status == 201, chat
    assert chat["owner_id"] == creator.history.user_id, chat
    for client in clients:
        client.chat_id = chat["id"]
    return chat["id"]


async def _exercise_credentials(cluster: Cluster, clients: list[Client]) -> None:
    """Sign-ups, logins (one with a wrong password) and a refresh, all of which the logs
    could leak."""
    for client in clients:
        await client.sign_up()
    server = cluster.instances[0]
    status, _ = await ahttp_json(
        server.http_url("/users/login"),
        body={"username": clients[0].username, "password": PASSWORD + "-wrong"},
    )
    assert status == 401
    status, _ = await ahttp_json(
        server.http_url("/users/token/refresh"), body={"refresh": clients[0].refresh}
    )
    assert status == 200


def _assert_no_secrets(logs: str, clients: list[Client]) -> None:
    assert "WSCONNECT" in logs or "websocket" in logs.lower(), "the logs were not captured"
    secrets = {PASSWORD, PASSWORD + "-wrong"}
    for client in clients:
        for token in (client.token, client.refresh):
            secrets.add(token)
            secrets.add(token.rsplit(".", 1)[1])  # The signature alone is the secret part.
    leaked = [secret[:12] + "..." for secret in secrets if secret in logs]
    assert not leaked, f"secrets in the logs: {leaked}"


def _summary(
    clients: list[Client],
    stored: dict[int, dict[str, Any]],
    log: FaultLog,
    problems: list[str],
    traffic_seconds: float,
) -> dict[str, Any]:
    histories = [client.history for client in clients]
    stored_client_ids = {(row["author_id"], row["client_id"]) for row in stored.values()}
    lost = sum(
        1
        for history in histories
        for client_id in history.acked
        if (history.user_id, client_id) not in stored_client_ids
    )
    changes: dict[str, Any] = {}
    for kind in (EDIT, DELETE, REACT, UNREACT):
        tries = [t for h in histories for t in h.attempts if t.kind == kind]
        outcomes = Counter(tried.outcome for tried in tries)
        changes[kind] = {
            "tries": len(tries),
            "acknowledged": outcomes[ACKED],
            "refused_404": sum(1 for t in tries if t.outcome == REFUSED and t.status == 404),
            "unsettled_5xx_or_reset": outcomes[UNSETTLED],
            "timed_out": outcomes[TIMED_OUT],
            "not_sent": outcomes[NOT_SENT],
            "throttled": sum(1 for t in tries if t.status == 429),
        }
    deliveries = Counter(kind for h in histories for s in h.sessions for kind, _, _ in s)
    return {
        "clients": len(histories),
        "cycles": CYCLES,
        "seconds": round(time.monotonic() - log.started, 1),
        "traffic_seconds": round(traffic_seconds, 1),
        "messages": {
            "sent": sum(len(history.sent) for history in histories),
            "resends": sum(history.resends for history in histories),
            "acknowledged": sum(len(history.acked) for history in histories),
            "stored": len(stored),
            "lost": lost,
            "duplicates": len(stored) - len(stored_client_ids),
        },
        "changes": changes,
        "changes_made": sum(client.changes for client in clients),
        "change_retries": sum(client.retries for client in clients),
        "stored_state": {
            "edited": sum(1 for row in stored.values() if row["edited_at"] and not row["deleted"]),
            "deleted": sum(1 for row in stored.values() if row["deleted"]),
            "reactions": sum(
                len(users) for row in stored.values() for users in row["reactions"].values()
            ),
            "chat_seq": max((row["seq"] for row in stored.values()), default=0),
            "messages": len(stored),
        },
        "faults_injected": len(log.injected),
        "faults": log.injected,
        "reconnects": sum(history.reconnects for history in histories),
        "catch_ups": sum(history.catch_ups for history in histories),
        "deliveries": {NEW: deliveries[NEW], UPDATED: deliveries[UPDATED]},
        "answers_to_resends": sum(len(ids) for h in histories for ids in h.answered),
        "violations": len(problems),
    }


def _dump(history: ClientHistory) -> dict[str, Any]:
    return {
        "name": history.name,
        "user_id": history.user_id,
        "acked": history.acked,
        "resent": sorted(history.resent),
        "sessions": history.sessions,
        "answered": [sorted(ids) for ids in history.answered],
        "attempts": [vars(tried) for tried in history.attempts],
        "synced_seq": history.synced_seq,
    }
