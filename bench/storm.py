"""The reconnect storm, load generator side (scenario 7; `python -m bench.loadgen` runs it).

Clients hold sockets spread over two instances, each a member of a few chats, while senders
(sockets of their own on the instance that stays) keep messages flowing at a fixed rate. Then
the harness stops the first instance gracefully (it is asked to with a `stop` line); its clients
see the close, reconnect to the other instance at once (at most `concurrency` handshakes in
flight, as a proxy in front would allow) and catch up each chat as docs/websocket.md says:
`GET /chats/{id}/messages?since_seq=<largest seq seen>`, following `next` until null, applied
by id, while the live events of the new socket are applied too (deduplicated by id and seq).

Every client keeps a *view* per chat (message id -> seq). At the end each view must hold every
message accepted in its chat during the run (echoed to its sender): what is missing is `lost`.
On each socket, a chat's changes must come in increasing seq, each once: a repeat is a
`duplicate`, a smaller seq `out_of_order` (both the server's fault, whatever the client
deduplicates). Reported besides: the close codes, the reconnect rate and handshake times,
the time until every client was back and until every one had caught up, and the catch-up
requests.

Output lines for the harness: `{"event": "mark", "name": ...}` at `connected`, `stop` (just
before asking for the stop), `caught_up`, and `{"event": "stop"}` (stop the first instance).
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect

from bench.loadgen import close_sockets, dumps, emit, loads, percentiles

now = time.perf_counter
# Longest wait for one catch-up answer before it is asked again on another connection.
REQUEST_SECONDS = 10.0


class HTTPClient:
    """A few keep-alive HTTP/1.1 connections to one server, GET only: just what the catch-up
    needs (the standard library's client is blocking, and no async one is installed)."""

    def __init__(self, host: str, port: int, connections: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.gate = asyncio.Semaphore(connections)
        self.retried: Counter[str] = Counter()

    async def get(self, path: str, token: str) -> tuple[int, bytes]:
        """One GET; a connection that fails (closed by the server while idle, or no answer in
        REQUEST_SECONDS) is dropped and the request sent again on another, twice at most."""
        async with self.gate:
            for attempt in range(3):
                conn = self.idle.pop() if self.idle else await self._open()
                try:
                    async with asyncio.timeout(REQUEST_SECONDS):
                        status, body = await self._request(conn, path, token)
                except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError) as exc:
                    conn[1].close()
                    self.retried[type(exc).__name__] += 1
                    if attempt == 2:
                        raise
                    continue
                self.idle.append(conn)
                return status, body
        raise AssertionError("unreachable")

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.host, self.port)

    async def _request(
        self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], path: str, token: str
    ) -> tuple[int, bytes]:
        reader, writer = conn
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            "Accept: application/json\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:] if line)
        }
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                parts.append(await reader.readexactly(size + 2))
                if size == 0:
                    break
            body = b"".join(part[:-2] for part in parts)
        else:
            raise ValueError("no length")
        if headers.get("connection", "").lower() == "close":
            writer.close()
            raise OSError("closed by the server")  # Retried on a new connection: not here.
        return status, body

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


@dataclass
class Client:
    index: int
    token: str
    chats: list[int]
    instance: int
    view: dict[int, dict[int, int]] = field(default_factory=dict)  # chat -> {id: seq}
    last_seq: dict[int, int] = field(default_factory=dict)  # chat -> largest seq seen
    ws: ClientConnection | None = None
    reader: asyncio.Task[None] | None = None
    closed_with: int | None = None
    closed_at: float | None = None
    back_at: float | None = None
    caught_up_at: float | None = None

    def apply(self, message: dict[str, Any]) -> bool:
        """Apply a message (live or from a page) to the view; False when already there."""
        chat = message["chat_id"]
        seen = self.view.setdefault(chat, {})
        seq = message["seq"]
        if seen.get(message["id"], -1) >= seq:
            return False
        seen[message["id"]] = seq
        if seq > self.last_seq.get(chat, 0):
            self.last_seq[chat] = seq
        return True


@dataclass
class Storm:
    spec: dict[str, Any]
    clients: list[Client]
    nonce: str = field(default_factory=lambda: secrets.token_hex(4))
    accepted: dict[int, set[int]] = field(default_factory=dict)  # chat -> message ids
    sent: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    out_of_order: int = 0
    overlaps: int = 0  # Messages a catch-up brought that had come live too (harmless).
    errors: Counter[str] = field(default_factory=Counter)
    close_codes: Counter[str] = field(default_factory=Counter)
    handshakes: list[float] = field(default_factory=list)
    reconnect_failures: Counter[str] = field(default_factory=Counter)
    page_times: list[float] = field(default_factory=list)
    pages: int = 0
    catch_up_failures: Counter[str] = field(default_factory=Counter)
    stop_at: float = 0.0
    stopping: bool = False

    def gate(self) -> asyncio.Semaphore:
        if not hasattr(self, "_gate"):
            self._gate = asyncio.Semaphore(self.spec.get("concurrency", 200))
        return self._gate


async def _connect(url: str) -> ClientConnection:
    return await connect(url, compression=None, proxy=None, ping_interval=None, open_timeout=60)


def _ws_url(storm: Storm, instance: int, token: str) -> str:
    return f"{storm.spec['instances'][instance]}/chats/ws?token={token}"


async def _read(storm: Storm, client: Client, ws: ClientConnection) -> None:
    """Apply the socket's live messages; on a close by the server, reconnect and catch up."""
    last_on_socket: dict[int, int] = {}
    try:
        async for raw in ws:
            event = loads(raw)
            kind = event.get("type")
            if kind == "error":
                storm.errors[event.get("code", "?")] += 1
                continue
            if kind not in ("new_message", "message_updated"):
                continue
            message = event["message"]
            chat, seq = message["chat_id"], message["seq"]
            previous = last_on_socket.get(chat, 0)
            if seq == previous:
                storm.duplicates += 1
                continue
            if seq < previous:
                storm.out_of_order += 1
            last_on_socket[chat] = max(previous, seq)
            client.apply(message)
    except Exception as exc:  # noqa: BLE001 - any end of the socket is a reason to come back
        if not (storm.stopping and client.instance == 0):  # Else the stop closed it (1012).
            storm.errors[f"socket:{type(exc).__name__}"] += 1
    if storm.stopping and client.instance == 0 and client.closed_at is None:
        client.closed_at = now()
        code = ws.close_code
        storm.close_codes[str(code)] += 1
        client.closed_with = code
        asyncio.get_running_loop().create_task(_come_back(storm, client))


async def _come_back(storm: Storm, client: Client) -> None:
    """Reconnect to the instance that stays, then catch up every chat from the largest seq
    seen *before the reconnect*: the new socket's live events, applied meanwhile, may already
    be past changes committed while the client was away."""
    seen_before = dict(client.last_seq)
    client.instance = 1
    attempt = 0
    while True:
        async with storm.gate():
            began = now()
            try:
                ws = await _connect(_ws_url(storm, 1, client.token))
            except Exception as exc:  # noqa: BLE001 - counted, then tried again
                storm.reconnect_failures[type(exc).__name__] += 1
                ws = None
            else:
                storm.handshakes.append(now() - began)
        if ws is not None:
            break
        attempt += 1
        await asyncio.sleep(min(0.1 * 2**attempt, 2) * random.random())
    client.back_at = now()
    client.ws = ws
    client.reader = asyncio.get_running_loop().create_task(_read(storm, client, ws))
    http: HTTPClient = storm.spec["_http"]
    for chat in client.chats:
        since = seen_before.get(chat, storm.spec["initial_seq"][str(chat)])
        path = f"/chats/{chat}/messages?since_seq={since}&limit=200"
        while path:
            began = now()
            try:
                status, body = await http.get(path, client.token)
            except Exception as exc:  # noqa: BLE001
                storm.catch_up_failures[type(exc).__name__] += 1
                await asyncio.sleep(0.2)
                continue
            storm.page_times.append(now() - began)
            storm.pages += 1
            if status != 200:
                storm.catch_up_failures[f"status_{status}"] += 1
                await asyncio.sleep(0.2)
                continue
            page = loads(body)
            for message in page["results"]:
                if not client.apply(message):
                    storm.overlaps += 1
            following = page.get("next")
            path = None
            if following:
                parts = urlsplit(following)
                path = f"{parts.path}?{parts.query}"
    client.caught_up_at = now()


async def _send(
    storm: Storm, senders: list[tuple[ClientConnection, int]], end: Callable[[], float]
) -> None:
    """Open loop: `rate` messages a second in all, round robin over the chats' senders."""
    interval = 1 / storm.spec["rate"]
    start = now()
    count = 0
    while True:
        due = start + count * interval
        if due >= end():
            return
        delay = due - now()
        if delay > 0:
            await asyncio.sleep(delay)
        ws, chat = senders[count % len(senders)]
        count += 1
        client_id = f"{storm.nonce}.{count}"
        storm.sent += 1
        await ws.send(
            dumps(
                {"type": "new_message", "chat_id": chat, "text": client_id, "client_id": client_id}
            )
        )


async def _read_sender(storm: Storm, ws: ClientConnection) -> None:
    """A sender's own socket: its echoes are the accepted messages (what every view must hold)."""
    mine = f"{storm.nonce}."
    try:
        async for raw in ws:
            event = loads(raw)
            if event.get("type") == "error":
                storm.rejected[event.get("code", "?")] += 1
                continue
            if event.get("type") != "new_message":
                continue
            message = event["message"]
            if (message.get("client_id") or "").startswith(mine):
                storm.accepted.setdefault(message["chat_id"], set()).add(message["id"])
    except Exception as exc:  # noqa: BLE001
        storm.errors[f"sender:{type(exc).__name__}"] += 1


async def run_storm(spec: dict[str, Any]) -> dict[str, Any]:
    clients = [
        Client(index=i, token=entry["token"], chats=entry["chats"], instance=i % 2)
        for i, entry in enumerate(spec["clients"])
    ]
    storm = Storm(spec=spec, clients=clients)
    survivor = urlsplit(spec["instances"][1])
    spec["_http"] = HTTPClient(
        survivor.hostname or "127.0.0.1", survivor.port or 80, spec.get("http_connections", 50)
    )
    gate = storm.gate()

    async def first(client: Client) -> None:
        async with gate:
            client.ws = await _connect(_ws_url(storm, client.instance, client.token))

    began = now()
    await asyncio.gather(*(first(client) for client in clients))
    connect_seconds = now() - began
    senders = [
        (await _connect(_ws_url(storm, 1, entry["token"])), entry["chat_id"])
        for entry in spec["senders"]
    ]
    sender_readers = [asyncio.create_task(_read_sender(storm, ws)) for ws, _ in senders]
    for client in clients:
        assert client.ws is not None
        client.reader = asyncio.create_task(_read(storm, client, client.ws))
    emit("mark", name="connected")
    await asyncio.sleep(0.5)  # Subscriptions settle.

    stop_sending = [float("inf")]
    sending = asyncio.create_task(_send(storm, senders, lambda: stop_sending[0]))
    await asyncio.sleep(spec["warmup"])
    moving = [c for c in clients if c.instance == 0]
    emit("mark", name="stop")
    storm.stopping = True
    storm.stop_at = now()
    emit("stop")

    await _until(lambda: all(c.caught_up_at for c in moving), spec.get("recover_timeout", 120))
    emit("mark", name="caught_up")
    stop_sending[0] = now() + spec.get("after", 2)
    await sending
    # Every accepted message must reach every view: wait for it, up to the drain timeout.
    await asyncio.sleep(0.5)
    await _until(lambda: not _missing(storm), spec.get("drain_timeout", 10), every=0.1)
    missing = _missing(storm)
    emit("end")

    closes = [c.closed_at for c in moving if c.closed_at]
    backs = [c.back_at for c in moving if c.back_at]
    caught = [c.caught_up_at for c in moving if c.caught_up_at]
    first_close = min(closes) if closes else None
    result = {
        "sockets": len(clients),
        "initial_connect_seconds": round(connect_seconds, 3),
        "initial_connects_per_s": round(len(clients) / connect_seconds, 1),
        "moved": len(moving),
        "closed": len(closes),
        "close_codes": dict(storm.close_codes),
        "back": len(backs),
        "caught_up": len(caught),
        "first_close_after_stop_s": _round(first_close - storm.stop_at if first_close else None),
        "all_back_s": _round(max(backs) - first_close if backs and first_close else None),
        "all_caught_up_s": _round(max(caught) - first_close if caught and first_close else None),
        "all_caught_up_after_stop_s": _round(max(caught) - storm.stop_at if caught else None),
        "reconnects_per_s": _round(
            len(backs) / max(max(backs) - first_close, 1e-9) if backs and first_close else None
        ),
        "reconnect_latency_ms": percentiles(storm.handshakes),
        "reconnect_failures": dict(storm.reconnect_failures),
        "catch_up_pages": storm.pages,
        "catch_up_page_ms": percentiles(storm.page_times),
        "catch_up_failures": dict(storm.catch_up_failures),
        "catch_up_retries": dict(spec["_http"].retried),
        "catch_up_overlaps": storm.overlaps,
        "sent": storm.sent,
        "accepted": sum(len(ids) for ids in storm.accepted.values()),
        "rejected": dict(storm.rejected),
        "expected": sum(len(storm.accepted.get(chat, ())) for c in clients for chat in c.chats),
        "lost": missing,
        "duplicates": storm.duplicates,
        "out_of_order": storm.out_of_order,
        "errors": dict(storm.errors),
    }
    await close_sockets([c.ws for c in clients if c.ws is not None] + [ws for ws, _ in senders])
    for task in [*sender_readers, *(c.reader for c in clients if c.reader)]:
        task.cancel()
    spec["_http"].close()
    return result


async def _until(condition: Callable[[], bool], seconds: float, every: float = 0.05) -> None:
    """Poll `condition` until it holds or `seconds` have passed."""
    deadline = now() + seconds
    for _ in iter(int, 1):
        if condition() or now() >= deadline:
            return
        await asyncio.sleep(every)


def _missing(storm: Storm) -> int:
    return sum(
        len(storm.accepted.get(chat, set()) - client.view.get(chat, {}).keys())
        for client in storm.clients
        for chat in client.chats
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
