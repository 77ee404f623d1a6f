"""The embedded mode under a small team: `make run`'s defaults (a SQLite file, the in-memory
channel layer, one daphne process), with every member of one chat sending at once.

Each of USERS members holds one socket on the chat and sends over it as fast as its own echoes
come back (one message in flight per sender, closed loop); optionally, as many HTTP senders
(`POST /chats/{id}/messages`, one per member, closed loop too) send into the same chat at the
same time. Every socket must receive every committed message, once; every send must be answered
with its message (socket) or a 201 (HTTP). Reported: messages and deliveries per second, errors
by code (`server_error` is what "database is locked" became), HTTP statuses, and what was lost.

    .venv/bin/python -m bench.embedded --seconds 20            # sockets only
    .venv/bin/python -m bench.embedded --seconds 20 --http     # sockets and HTTP together

Needs nothing but the venv (no PostgreSQL, no Redis): the server gets a fresh SQLite file in a
temporary directory, migrated and seeded by `python -m bench.embedded seed` with the server's
own environment. The rate limits are the defaults (WS 200 burst then 20/s per user, HTTP sends
600/min per user), as a new user would have them; `rate_limited`/429 answers are counted apart
from errors. chatproject/tests/test_embedded_mode.py runs the same load, shorter and with a
fixed number of messages, as a test (no error, nothing lost).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from liveserver.processes import DaphneServer, venv_python

ROOT = Path(__file__).resolve().parent.parent
USERS = 20
SECRET_KEY = "bench-embedded-secret-key-not-for-production-0000000000000000"
# How long, after the last send was answered, every socket may take to receive everything.
DRAIN_SECONDS = 20.0
# A send unanswered for this long counts as lost (the server may be stuck on a lock).
ANSWER_SECONDS = 30.0


# --- Seeding (runs in a child process, with the server's environment) ---------------------------


def seed(users: int) -> dict[str, Any]:
    """Migrate the database, create `users` members of one chat; their ids and access tokens."""
    import django

    django.setup()
    from django.core.management import call_command
    from rest_framework_simplejwt.tokens import AccessToken

    from accounts.models import User
    from messaging import services

    call_command("migrate", verbosity=0, interactive=False)
    members = []
    for number in range(users):
        user = User(username=f"member{number}")
        user.set_unusable_password()  # Tokens are minted here; nobody logs in.
        user.save()
        members.append(user)
    room = services.chat_create(
        creator=members[0], title="team", member_ids=[user.pk for user in members]
    )
    pairs = [
        services.chat_create(creator=one, title="pair", member_ids=[two.pk]).pk
        for one, two in zip(members[0::2], members[1::2], strict=False)
    ]
    return {
        "room": room.pk,
        # Member i talks in pairs[i // 2], with member i ^ 1.
        "pairs": pairs,
        "tokens": [str(AccessToken.for_user(user)) for user in members],
    }


def server_environment(database_url: str) -> dict[str, str]:
    """What DaphneServer gives the server, for the seeding child to see the same settings."""
    server = DaphneServer(database_url=database_url, redis_url=None, secret_key=SECRET_KEY)
    return server.environment()


def seed_in_child(database_url: str, users: int) -> dict[str, Any]:
    # The result comes back in a file of its own: stdout is the child's log too.
    with tempfile.NamedTemporaryFile("r", suffix=".json") as result:
        done = subprocess.run(
            [venv_python(), "-m", "bench.embedded", "seed", "--users", str(users)]
            + ["--result", result.name],
            cwd=ROOT,
            env=server_environment(database_url),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"seeding failed:\n{done.stdout}\n{done.stderr}")
        return json.loads(result.read())


# --- Load ---------------------------------------------------------------------------------------


@dataclass
class Counts:
    """What one run saw; `problems()` is empty when nothing went wrong."""

    ws_sent: int = 0
    ws_answered: int = 0
    http_sent: int = 0
    http_created: int = 0
    # Message ids by chat: every 201, and every message a socket received (sent after commit).
    committed: dict[int, set[int]] = field(default_factory=dict)
    members: list[Member] = field(default_factory=list)
    duplicates: int = 0
    out_of_order: int = 0
    ws_errors: Counter[str] = field(default_factory=Counter)
    http_statuses: Counter[int] = field(default_factory=Counter)
    unanswered: int = 0
    closed_sockets: int = 0
    seconds: float = 0.0
    server_cpu_seconds: float = 0.0

    def commit(self, chat_id: int, message_id: int) -> None:
        self.committed.setdefault(chat_id, set()).add(message_id)

    def deliveries(self) -> int:
        return sum(len(member.received) for member in self.members)

    def lost(self) -> int:
        return sum(
            len(self.committed.get(member.chat_id, set()) - member.received)
            for member in self.members
        )

    def problems(self) -> list[str]:
        found = []
        errors = {code: n for code, n in self.ws_errors.items() if code != "rate_limited"}
        if errors:
            found.append(f"WebSocket errors {errors}")
        failed = {code: n for code, n in self.http_statuses.items() if code not in (201, 429)}
        if failed:
            found.append(f"HTTP answers {failed}")
        for name in ("unanswered", "closed_sockets", "duplicates", "out_of_order"):
            if getattr(self, name):
                found.append(f"{name}: {getattr(self, name)}")
        if self.lost():
            found.append(f"lost deliveries: {self.lost()}")
        return found

    def report(self) -> dict[str, Any]:
        messages = sum(len(ids) for ids in self.committed.values())
        return {
            "seconds": round(self.seconds, 2),
            "messages": messages,
            "messages_per_second": round(messages / self.seconds, 1),
            "deliveries": self.deliveries(),
            "deliveries_per_second": round(self.deliveries() / self.seconds, 1),
            # Robust to a busy machine, where the rates above are not.
            "server_cpu_ms_per_message": round(
                1000 * self.server_cpu_seconds / max(messages, 1), 2
            ),
            "ws_sent": self.ws_sent,
            "ws_answered": self.ws_answered,
            "ws_errors": dict(self.ws_errors),
            "http_sent": self.http_sent,
            "http_statuses": dict(self.http_statuses),
            "lost": self.lost(),
            "unanswered": self.unanswered,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "closed_sockets": self.closed_sockets,
        }


class Member:
    """One member's socket, sending into one chat: reads every frame (counting those of its
    chat), wakes its own sender on its echo or error."""

    def __init__(self, index: int, chat_id: int, ws: ClientConnection, counts: Counts) -> None:
        self.index = index
        self.chat_id = chat_id
        self.ws = ws
        self.counts = counts
        self.received: set[int] = set()
        self.last_id = 0
        self.answers: dict[str, asyncio.Future[str | None]] = {}
        counts.members.append(self)

    async def read(self) -> None:
        try:
            async for raw in self.ws:
                event = json.loads(raw)
                if event["type"] == "error":
                    self.counts.ws_errors[event["code"]] += 1
                    self._answer((event.get("request") or {}).get("client_id"), event["code"])
                elif event["type"] == "new_message":
                    message = event["message"]
                    self.counts.commit(message["chat_id"], message["id"])
                    if message["chat_id"] != self.chat_id:
                        continue
                    if message["id"] in self.received:
                        self.counts.duplicates += 1
                    elif message["id"] < self.last_id:
                        self.counts.out_of_order += 1
                    self.received.add(message["id"])
                    self.last_id = max(self.last_id, message["id"])
                    self._answer(message.get("client_id"), None)
        except Exception:
            self.counts.closed_sockets += 1

    def _answer(self, client_id: str | None, error: str | None) -> None:
        answer = self.answers.pop(client_id, None) if client_id else None
        if answer is not None and not answer.done():
            answer.set_result(error)

    async def send(self, seq: int) -> None:
        client_id = f"ws.{self.index}.{seq}"
        answer = self.answers[client_id] = asyncio.get_running_loop().create_future()
        frame = {"type": "new_message", "chat_id": self.chat_id, "text": client_id}
        await self.ws.send(json.dumps({**frame, "client_id": client_id}))
        self.counts.ws_sent += 1
        try:
            error = await asyncio.wait_for(answer, ANSWER_SECONDS)
        except TimeoutError:
            self.counts.unanswered += 1
            return
        if error is None:
            self.counts.ws_answered += 1


def http_send(base: str, token: str, chat_id: int, text: str) -> tuple[int, int | None]:
    """One POST; its status and the created message's id."""
    request = urllib.request.Request(
        f"{base}/chats/{chat_id}/messages",
        data=json.dumps({"text": text, "client_id": text}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=ANSWER_SECONDS) as response:
            return response.status, json.loads(response.read())["id"]
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except OSError:
        return 0, None


async def run_load(
    server: DaphneServer,
    chats: list[int],
    tokens: list[str],
    *,
    seconds: float | None = None,
    ws_messages: int | None = None,
    http_messages: int | None = None,
) -> Counts:
    """Member i sends into `chats[i]` over its socket (and over HTTP when `http_messages` is
    not 0), for `seconds`, or `ws_messages`/`http_messages` messages each; then waits until
    every socket has every committed message of its chat (at most DRAIN_SECONDS)."""
    counts = Counts()
    sockets = [
        await connect(server.ws_url(token=token), max_size=None, open_timeout=30)
        for token in tokens
    ]
    members = [
        Member(index, chat_id, ws, counts)
        for index, (chat_id, ws) in enumerate(zip(chats, sockets, strict=True))
    ]
    readers = [asyncio.create_task(member.read()) for member in members]
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    cpu_before = cpu_seconds(server.pid)
    deadline = started + seconds if seconds is not None else None

    def more(sent: int, limit: int | None) -> bool:
        if limit is not None:
            return sent < limit
        return deadline is not None and time.monotonic() < deadline

    async def socket_sender(member: Member) -> None:
        seq = 0
        while more(seq, ws_messages):
            seq += 1
            await member.send(seq)

    async def http_sender(index: int, pool: ThreadPoolExecutor) -> None:
        seq = 0
        while more(seq, http_messages):
            seq += 1
            counts.http_sent += 1
            status, message_id = await loop.run_in_executor(
                pool, http_send, server.http_url("").rstrip("/"), tokens[index], chats[index],
                f"http.{index}.{seq}",
            )  # fmt: skip
            counts.http_statuses[status] += 1
            if message_id is not None:
                counts.commit(chats[index], message_id)

    with ThreadPoolExecutor(max_workers=len(tokens), thread_name_prefix="http-sender") as pool:
        senders = [socket_sender(member) for member in members]
        if http_messages != 0:
            senders += [http_sender(index, pool) for index in range(len(tokens))]
        await asyncio.gather(*senders)
    counts.seconds = time.monotonic() - started
    counts.server_cpu_seconds = cpu_seconds(server.pid) - cpu_before
    drain_until = time.monotonic() + DRAIN_SECONDS
    while True:
        if time.monotonic() > drain_until or not counts.lost():
            break
        await asyncio.sleep(0.05)
    for ws in sockets:
        await ws.close()
    await asyncio.gather(*readers)
    return counts


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def embedded_server(
    directory: Path, users: int = USERS, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[DaphneServer, dict[str, Any]]]:
    """A seeded SQLite file in `directory` and daphne serving it with the in-memory layer;
    what `seed()` returned."""
    database_url = f"sqlite:///{directory / 'db.sqlite3'}"
    seeded = seed_in_child(database_url, users)
    server = DaphneServer(
        database_url=database_url,
        redis_url=None,
        secret_key=SECRET_KEY,
        log_dir=directory,
        extra_env=extra_env,
    )
    with server:
        yield server, seeded


def chats_of(seeded: dict[str, Any], topology: str) -> list[int]:
    """The chat each member sends into: all the team's room, or each its two-person chat."""
    if topology == "room":
        return [seeded["room"]] * len(seeded["tokens"])
    return [seeded["pairs"][index // 2] for index in range(len(seeded["tokens"]))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", choices=["run", "seed"], default="run")
    parser.add_argument("--users", type=int, default=USERS)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--http", action="store_true", help="HTTP senders too")
    parser.add_argument("--result", help="seed: write the result to this file, not stdout")
    parser.add_argument(
        "--topology",
        choices=["room", "pairs"],
        default="room",
        help="everyone in one chat (default), or members in two-person chats",
    )
    arguments = parser.parse_args()
    if arguments.command == "seed":
        seeded = json.dumps(seed(arguments.users))
        if arguments.result:
            Path(arguments.result).write_text(seeded)
        else:
            print(seeded)
        return
    with tempfile.TemporaryDirectory(prefix="bench-embedded-") as directory:
        with embedded_server(Path(directory), arguments.users) as (server, seeded):
            counts = asyncio.run(
                run_load(
                    server,
                    chats_of(seeded, arguments.topology),
                    seeded["tokens"],
                    seconds=arguments.seconds,
                    http_messages=None if arguments.http else 0,
                )
            )
            log = server.read_log()
    report = {"topology": arguments.topology, **counts.report()}
    report["database_is_locked_in_log"] = log.count("database is locked")
    report["problems"] = counts.problems()
    print(json.dumps(report, indent=2))
    sys.exit(1 if counts.problems() else 0)


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
