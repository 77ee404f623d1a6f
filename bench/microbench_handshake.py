"""What the application's part of a WebSocket handshake costs, without a server (issue 14).

Drives `chatproject.asgi:application` in this process as a server would (a scope, a
`websocket.connect`, waiting for `websocket.accept`), on uvloop, against the bench's database
(`make bench` seeds it: `<DATABASE_URL's name>_bench`) and a Redis server: the idle users of
scenario 3, `--in-flight` handshakes at a time, every socket closed after each round. Prints
CPU milliseconds of this process per accepted socket (the database's and Redis's own CPU are
not counted) and the part of it spent collecting garbage; `--profile FILE` writes a cProfile
of the last round.

Run: `DATABASE_URL=postgres://... REDIS_URL=redis://... .venv/bin/python -m
bench.microbench_handshake [--sockets 2000] [--rounds 5] [--profile FILE]`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import statistics
import time
from typing import Any

from bench.run import IDLE_SOCKETS, SECRET_KEY, SERVICE_LIMITS, base_env, bench_database_url


def setup() -> Any:
    redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    os.environ.update(base_env(bench_database_url()))
    os.environ.update(
        REDIS_URL=redis_url,
        SECRET_KEY=SECRET_KEY,
        DJANGO_SETTINGS_MODULE="bench.service_settings",
        BENCH_CHANNEL_LAYER="pipelined",
        **{name: str(value) for name, value in SERVICE_LIMITS.items()},
    )
    from chatproject.asgi import application

    return application


def idle_tokens(count: int) -> list[str]:
    from accounts.models import User
    from bench import seed

    users = list(User.objects.filter(username__startswith="idle").order_by("id")[:count])
    if len(users) < count:
        raise SystemExit(f"{len(users)} idle users: run `make bench` once to seed them")
    return seed.tokens_for(users)


class CollectorClock:
    """Seconds spent in the garbage collector since the last `take()` (gc.callbacks)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.started = 0.0
        gc.callbacks.append(self.on_collection)

    def on_collection(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self.started

    def take(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


class Socket:
    """One handshake's ASGI side: what a server gives the application and takes from it."""

    def __init__(self, application: Any, token: str) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.accepted = asyncio.get_running_loop().create_future()
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "scheme": "ws",
            "path": "/chats/ws",
            "raw_path": b"/chats/ws",
            "query_string": f"token={token}".encode(),
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), (b"sec-websocket-version", b"13")],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "subprotocols": [],
            "state": {},
        }
        self.inbox.put_nowait({"type": "websocket.connect"})
        self.task = asyncio.ensure_future(application(scope, self.inbox.get, self.send))

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.accept" and not self.accepted.done():
            self.accepted.set_result(True)
        elif message["type"] == "websocket.close" and not self.accepted.done():
            self.accepted.set_exception(RuntimeError(f"closed: {message}"))

    async def close(self) -> None:
        self.inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
        await self.task


async def round_of(application: Any, tokens: list[str], in_flight: int) -> list[Socket]:
    limit = asyncio.Semaphore(in_flight)

    async def open_one(token: str) -> Socket:
        async with limit:
            socket = Socket(application, token)
            await socket.accepted
            return socket

    return await asyncio.gather(*(open_one(token) for token in tokens))


async def measure(args: argparse.Namespace) -> None:
    from asgiref.sync import sync_to_async

    application = setup()
    tokens = await sync_to_async(idle_tokens)(args.sockets)
    await round_of(application, tokens[:50], 50)  # Warm-up: connections, imports, caches.
    per_socket = []
    collector = CollectorClock()
    for number in range(args.rounds):
        profile = cProfile.Profile() if args.profile and number == args.rounds - 1 else None
        cpu, wall = time.process_time(), time.perf_counter()
        collector.take()
        if profile:
            profile.enable()
        sockets = await round_of(application, tokens, args.in_flight)
        if profile:
            profile.disable()
            profile.dump_stats(args.profile)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        collecting = collector.take()
        per_socket.append(cpu / len(sockets) * 1000)
        print(
            f"round {number + 1}: {len(sockets)} accepted, {per_socket[-1]:.3f} ms CPU per "
            f"socket (of which {collecting / len(sockets) * 1000:.3f} ms collecting garbage), "
            f"{len(sockets) / wall:,.0f}/s"
        )
        await asyncio.gather(*(socket.close() for socket in sockets))
        await asyncio.sleep(0.5)  # Unsubscriptions go out in the background.
    print(f"median {statistics.median(per_socket):.3f} ms CPU per socket")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.microbench_handshake")
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--in-flight", type=int, default=200)
    parser.add_argument("--profile", help="write a cProfile of the last round here")
    args = parser.parse_args()
    args.sockets = min(args.sockets, IDLE_SOCKETS)
    import uvloop

    uvloop.run(measure(args))


if __name__ == "__main__":
    main()
