"""Faults under load, with a history check (Jepsen style), on real processes.

Two daphne instances share the test database and a private Redis. Several clients log in over
HTTP, open sockets (spread over both instances) and send messages with client_ids, one at a
time, each resent with the same client_id until acknowledged. Meanwhile the test kills Redis
(SIGKILL) and restarts it, terminates the instances' PostgreSQL backends
(pg_terminate_backend, only those of this test database), and SIGKILLs one daphne, whose
clients reconnect to the other, catch up with `?after=` and resend what was not acknowledged.

Afterwards `history.check_history` must find nothing: every acknowledged message stored once,
nothing stored twice or announced without being stored, every connection's messages in order
without gaps, and every client's live messages plus catch-ups equal to the whole history.
Finally, no log line of any process holds a token or a password.

CI runs a short variant; `make soak` a long one (FAULT_SECONDS, FAULT_CYCLES), which also
writes its figures to FAULT_REPORT for docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from conftest import PASSWORD
from liveserver.processes import DaphneServer
from messaging.models import Message
from tests_adversarial.history import ClientHistory, check_history
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
# Pause between a client's acknowledged send and its next one.
PACE_SECONDS = 0.02
# No acknowledgement for this long: the connection is given up and the send retried elsewhere.
ACK_TIMEOUT = 5.0
# The instances' database connections carry this name, so only they are terminated.
APPLICATION_NAME = "adversarial-daphne"


@dataclass
class FaultLog:
    injected: list[tuple[float, str]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def note(self, what: str) -> None:
        self.injected.append((round(time.monotonic() - self.started, 2), what))


@dataclass
class Client:
    """A chat client that resends until acknowledged and catches up after reconnecting."""

    history: ClientHistory
    username: str
    chat_id: int
    instances: list[DaphneServer]
    home: int  # The instance it prefers.
    token: str = ""
    refresh: str = ""
    socket: ClientConnection | None = None
    base_url: str = ""
    sequence: int = 0

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
                await self._reconnect(stop)
                continue
            if pending is None:
                self.sequence += 1
                pending = f"{self.history.name}-{self.sequence}"
            if await self._send_until_answered(pending):
                pending = None
                await asyncio.sleep(PACE_SECONDS)
        if self.socket is not None:
            await self.socket.close()

    async def _reconnect(self, stop: asyncio.Event) -> None:
        """Open a socket on a live instance (home first), then catch up from the last id seen."""
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
            self.socket, self.base_url = socket, server.http_url("").rstrip("/")
            self.history.connected()
            self.history.reconnects += 1
            try:
                after = self.history.newest()
                missed = await catch_up(self.base_url, self.chat_id, after, self.token)
                self.history.merge([message["id"] for message in missed])
            except (OSError, RuntimeError):  # The instance failed meanwhile: try again.
                await self._drop()
            return
        await asyncio.sleep(0.2)  # None answered (all down for a moment): try again soon.

    async def _send_until_answered(self, client_id: str) -> bool:
        """Send once and read until the answer; True when acknowledged."""
        assert self.socket is not None
        event = {"type": "new_message", "chat_id": self.chat_id, "text": f"text of {client_id}"}
        resend = client_id in self.history.sent
        try:
            self.history.resends += resend
            self.history.sent.add(client_id)
            await self.socket.send(json.dumps({**event, "client_id": client_id}))
            async with asyncio.timeout(ACK_TIMEOUT):
                while True:
                    frame = json.loads(await self.socket.recv())
                    if frame["type"] == "new_message":
                        message = frame["message"]
                        mine = message["author_id"] == self.history.user_id
                        if mine and message["client_id"] == client_id:
                            self.history.acked[client_id] = message["id"]
                            if resend:  # The original again, or a first store: see history.py.
                                self.history.answer(message)
                            else:
                                self.history.see(message)
                            return True
                        self.history.see(message)
                    elif frame["type"] == "error":
                        # The database or the layer failed this attempt: retry it.
                        assert frame["code"] in {"server_error", "rate_limited"}, frame
                        await asyncio.sleep(0.2)
                        return False
        except (ConnectionClosed, TimeoutError, OSError):
            await self._drop()
            return False

    async def _drop(self) -> None:
        if self.socket is not None:
            with contextlib.suppress(Exception):
                await self.socket.close()
        self.socket = None
        await asyncio.sleep(0.1)  # No reconnect storm while an instance or Redis is down.

    async def final_catch_up(self) -> None:
        server = next(server for server in self.instances if server.running)
        after = self.history.newest()
        missed = await catch_up(server.http_url("").rstrip("/"), self.chat_id, after, self.token)
        self.history.merge([message["id"] for message in missed])


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
    cycle_seconds = CYCLE_SECONDS
    step = cycle_seconds / 6
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


def _stored_messages(chat_id: int) -> dict[int, dict[str, Any]]:
    return {
        row["id"]: {key: row[key] for key in ("author_id", "text", "client_id")}
        for row in Message.objects.filter(chat_id=chat_id).values(
            "id", "author_id", "text", "client_id"
        )
    }


async def test_nothing_is_lost_or_duplicated_through_redis_database_and_daphne_faults(
    transactional_db: None, tmp_path: Path
) -> None:
    with running_cluster(tmp_path, instances=2, application_name=APPLICATION_NAME) as cluster:
        clients = [
            Client(
                history=ClientHistory(name=f"c{n}", user_id=0),
                username=f"fault-client-{n}",
                chat_id=0,
                instances=cluster.instances,
                home=n % 2,
            )
            for n in range(CLIENTS)
        ]
        await _exercise_credentials(cluster, clients)
        chat_id = await _create_chat(cluster, clients)
        log, stop = FaultLog(), asyncio.Event()
        running = [asyncio.create_task(client.run(stop)) for client in clients]
        for cycle in range(CYCLES):
            await _inject_faults(cluster, log, cycle, last=cycle == CYCLES - 1)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*running), 60)
        for client in clients:
            await client.final_catch_up()
        logs = cluster.logs()
    stored = await sync_to_async(_stored_messages)(chat_id)
    histories = [client.history for client in clients]
    problems = check_history(histories, stored)
    summary = _summary(histories, stored, log, problems)
    if REPORT:
        await asyncio.to_thread(Path(REPORT).write_text, json.dumps(summary, indent=2) + "\n")
    if problems:  # Everything needed to study the failure, next to the processes' logs.
        dump = {"problems": problems, "clients": [_dump(history) for history in histories]}
        await asyncio.to_thread((tmp_path / "history.json").write_text, json.dumps(dump))
    assert not problems, f"details in {tmp_path}/history.json:\n" + "\n".join(problems[:30])
    # The run meant something: messages flowed, faults hit, clients reconnected and resent.
    assert summary["acknowledged"] > 50 * CYCLES, summary
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
    histories: list[ClientHistory],
    stored: dict[int, dict[str, Any]],
    log: FaultLog,
    problems: list[str],
) -> dict[str, Any]:
    acknowledged = sum(len(history.acked) for history in histories)
    stored_client_ids = {(row["author_id"], row["client_id"]) for row in stored.values()}
    lost = sum(
        1
        for history in histories
        for client_id in history.acked
        if (history.user_id, client_id) not in stored_client_ids
    )
    return {
        "clients": len(histories),
        "cycles": CYCLES,
        "seconds": round(time.monotonic() - log.started, 1),
        "messages_sent": sum(len(history.sent) for history in histories),
        "resends": sum(history.resends for history in histories),
        "acknowledged": acknowledged,
        "stored": len(stored),
        "faults_injected": len(log.injected),
        "faults": log.injected,
        "reconnects": sum(history.reconnects for history in histories),
        "deliveries": sum(len(session) for h in histories for session in h.sessions),
        "lost": lost,
        "duplicates": len(stored) - len(stored_client_ids),
        "violations": len(problems),
    }


def _dump(history: ClientHistory) -> dict[str, Any]:
    return {
        "name": history.name,
        "user_id": history.user_id,
        "acked": history.acked,
        "sessions": [[message["id"] for message in session] for session in history.sessions],
        "answered": [sorted(ids) for ids in history.answered],
    }
