"""The load generator: a separate process that speaks the chat contract to the server under test.

Run as `python -m bench.loadgen SPEC.json`. It prints JSON lines on stdout: `{"event": "start"}`
when the measured phase begins, `{"event": "end"}` when it ends (the harness samples the
server's CPU between the two), and last `{"event": "result", ...}`. The idle scenario also
prints `{"event": "connected"}` and waits for a line on stdin before it sends (the harness reads
the server's memory in between).

Every delivery is checked: each socket must get each accepted message of its chats exactly
once, in id order. Latency is measured from the send (the scheduled send time at a fixed
offered rate, so a slow server cannot hide its queueing) to the receipt, in this one process.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import secrets
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

try:  # orjson and uvloop make the load generator cheaper; plain json/asyncio still work.
    import orjson

    loads = orjson.loads

    def dumps(value: Any) -> str:
        return orjson.dumps(value).decode()

except ImportError:  # pragma: no cover - bench/requirements.txt installs orjson
    loads = json.loads
    dumps = json.dumps

now = time.perf_counter


def emit(event: str, **data: Any) -> None:
    print(json.dumps({"event": event, **data}), flush=True)


def percentiles(samples: list[float]) -> dict[str, float | None]:
    """p50/p90/p99/max in milliseconds (nearest rank)."""
    if not samples:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(samples)

    def rank(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 3)

    return {"p50": rank(0.50), "p90": rank(0.90), "p99": rank(0.99), "max": rank(1.0)}


async def open_sockets(urls: list[str], concurrency: int) -> list[ClientConnection]:
    """Open every socket, `concurrency` handshakes at a time; fail loudly if one is refused."""
    gate = asyncio.Semaphore(concurrency)

    async def one(url: str) -> ClientConnection:
        async with gate:
            # No compression (browsers offer it, but daphne never accepts it: keep the servers
            # comparable), no proxy, no keepalive pings during a short run.
            return await connect(
                url, compression=None, proxy=None, ping_interval=None, open_timeout=60
            )

    return list(await asyncio.gather(*(one(url) for url in urls)))


async def close_sockets(sockets: list[ClientConnection]) -> None:
    async def one(ws: ClientConnection) -> None:
        try:
            await asyncio.wait_for(ws.close(), 5)
        except Exception:  # A server that is gone or slow to close does not matter any more.
            pass

    await asyncio.gather(*(one(ws) for ws in sockets))


# --- Message traffic (room fan-out, many small chats, two instances, reference server) ----------


@dataclass
class Traffic:
    """Bookkeeping shared by the senders and the readers of one run."""

    nonce: str
    recipients_of_chat: dict[int, int]
    sent_at: dict[str, float] = field(default_factory=dict)
    chat_of: dict[str, int] = field(default_factory=dict)
    rejected: set[str] = field(default_factory=set)
    echoed: int = 0
    delivered: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    first_send: float | None = None
    last_delivery: float = 0.0
    last_echo: float = 0.0
    windows: dict[int, asyncio.Semaphore] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    sending: bool = True

    def client_id(self, sender: int, seq: int) -> str:
        return f"{self.nonce}.{sender}.{seq}"

    def expected(self) -> int:
        return sum(
            self.recipients_of_chat[chat]
            for cid, chat in self.chat_of.items()
            if cid not in self.rejected
        )

    def delivery_counts(self) -> dict[str, Any]:
        """What every run reports about its deliveries; any loss or error fails the row."""
        expected = self.expected()
        return {
            "expected": expected,
            "delivered": self.delivered,
            "lost": expected - self.delivered,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "errors": dict(self.errors),
        }

    def check_done(self) -> None:
        if not self.sending and self.delivered >= self.expected():
            self.done.set()


async def read_traffic(index: int, ws: ClientConnection, traffic: Traffic) -> None:
    seen: set[str] = set()
    last_id: dict[int, int] = {}
    try:
        async for raw in ws:
            received = now()
            event = loads(raw)
            kind = event.get("type")
            if kind == "error":
                traffic.errors[event.get("code", "?")] += 1
                client_id = (event.get("request") or {}).get("client_id")
                if client_id in traffic.sent_at and client_id not in traffic.rejected:
                    traffic.rejected.add(client_id)
                    _release(traffic, client_id)
                    traffic.check_done()
                continue
            if kind != "new_message":
                continue
            message = event["message"]
            client_id = message.get("client_id")
            sent = traffic.sent_at.get(client_id) if client_id else None
            if sent is None:
                continue  # Not sent by this run.
            if client_id in seen:
                traffic.duplicates += 1
                continue
            seen.add(client_id)
            chat_id = message["chat_id"]
            if message["id"] <= last_id.get(chat_id, 0):
                traffic.out_of_order += 1
            last_id[chat_id] = message["id"]
            traffic.latencies.append(received - sent)
            traffic.delivered += 1
            traffic.last_delivery = received
            if int(client_id.split(".")[1]) == index:
                traffic.echoed += 1
                traffic.last_echo = received
                _release(traffic, client_id)
            traffic.check_done()
    except Exception as exc:  # A socket closed by the server: report it, the counts show loss.
        traffic.errors[f"socket_closed:{type(exc).__name__}"] += 1


def _release(traffic: Traffic, client_id: str) -> None:
    window = traffic.windows.get(int(client_id.split(".")[1]))
    if window is not None:
        window.release()


async def send_closed_loop(
    traffic: Traffic, sender: int, chat_id: int, ws: ClientConnection, window: int, end: float
) -> int:
    """As fast as it goes: at most `window` messages of this sender in flight at any time."""
    gate = traffic.windows[sender] = asyncio.Semaphore(window)
    seq = 0
    while True:
        remaining = end - now()
        if remaining <= 0:
            return seq
        try:
            await asyncio.wait_for(gate.acquire(), remaining)
        except TimeoutError:
            return seq
        seq += 1
        await _send(traffic, sender, chat_id, ws, seq, now())


async def send_open_loop(
    traffic: Traffic,
    sender: int,
    chat_id: int,
    ws: ClientConnection,
    interval: float,
    start: float,
    end: float,
) -> int:
    """At a fixed rate whatever the server does; latency counts from the scheduled time."""
    seq = 0
    while True:
        scheduled = start + seq * interval
        if scheduled >= end:
            return seq
        delay = scheduled - now()
        if delay > 0:
            await asyncio.sleep(delay)
        seq += 1
        await _send(traffic, sender, chat_id, ws, seq, scheduled)


async def _send(
    traffic: Traffic, sender: int, chat_id: int, ws: ClientConnection, seq: int, at: float
) -> None:
    client_id = traffic.client_id(sender, seq)
    traffic.sent_at[client_id] = at
    traffic.chat_of[client_id] = chat_id
    if traffic.first_send is None:
        traffic.first_send = at
    text = f"bench {client_id}"
    await ws.send(
        dumps({"type": "new_message", "chat_id": chat_id, "text": text, "client_id": client_id})
    )


async def run_traffic(spec: dict[str, Any]) -> dict[str, Any]:
    sockets = await open_sockets(spec["sockets"], spec.get("concurrency", 50))
    chats = spec["chats"]
    traffic = Traffic(
        nonce=secrets.token_hex(4),
        recipients_of_chat={chat["chat_id"]: len(chat["members"]) for chat in chats},
    )
    readers = [asyncio.create_task(read_traffic(i, ws, traffic)) for i, ws in enumerate(sockets)]
    await asyncio.sleep(spec.get("settle", 0.5))  # Let every subscription settle.
    duration = spec["duration"]
    senders = [(sender, chat["chat_id"]) for chat in chats for sender in chat["senders"]]
    emit("start")
    cpu_before = time.process_time()
    start = now() + 0.05
    end = start + duration
    if spec["mode"] == "closed":
        tasks = [
            send_closed_loop(traffic, sender, chat_id, sockets[sender], spec["window"], end)
            for sender, chat_id in senders
        ]
    else:
        interval = len(senders) / spec["messages_per_second"]
        tasks = [
            send_open_loop(
                traffic,
                sender,
                chat_id,
                sockets[sender],
                interval,
                start + k * interval / len(senders),
                end,
            )
            for k, (sender, chat_id) in enumerate(senders)
        ]
    sent = sum(await asyncio.gather(*tasks))
    send_phase = now() - start
    traffic.sending = False
    traffic.check_done()
    try:
        await asyncio.wait_for(traffic.done.wait(), spec.get("drain_timeout", 10))
    except TimeoutError:
        pass
    emit("end")
    loadgen_cpu = time.process_time() - cpu_before
    elapsed = max(traffic.last_delivery, now() if not traffic.done.is_set() else 0) - start
    await close_sockets(sockets)
    for task in readers:
        task.cancel()
    delivered_span = max(traffic.last_delivery - (traffic.first_send or start), 1e-9)
    return {
        "sent": sent,
        "rejected": len(traffic.rejected),
        "accepted": traffic.echoed,
        **traffic.delivery_counts(),
        "send_seconds": round(send_phase, 3),
        "elapsed_seconds": round(elapsed, 3),
        "deliveries_per_s": round(traffic.delivered / delivered_span, 1),
        "accepted_per_s": round(
            traffic.echoed / max(traffic.last_echo - (traffic.first_send or start), 1e-9), 1
        ),
        "latency_ms": percentiles(traffic.latencies),
        "loadgen_cpu_pct": round(100 * loadgen_cpu / max(elapsed, 1e-9), 1),
    }


# --- Idle sockets: connect many, hold them, then one broadcast to a big chat --------------------


async def run_idle(spec: dict[str, Any]) -> dict[str, Any]:
    urls = spec["sockets"]
    started = now()
    sockets = await open_sockets(urls, spec.get("concurrency", 100))
    connect_seconds = now() - started
    emit("connected", sockets=len(sockets))
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    members = spec["members"]
    traffic = Traffic(
        nonce=secrets.token_hex(4), recipients_of_chat={spec["chat_id"]: len(members)}
    )
    readers = [asyncio.create_task(read_traffic(i, sockets[i], traffic)) for i in members]
    sender = spec["sender"]
    emit("start")
    per_message: list[float] = []
    for seq in range(1, spec["messages"] + 1):
        traffic.done.clear()
        before = traffic.delivered
        at = now()
        await _send(traffic, sender, spec["chat_id"], sockets[sender], seq, at)
        traffic.sending = False
        try:
            await asyncio.wait_for(traffic.done.wait(), spec.get("drain_timeout", 10))
        except TimeoutError:
            pass
        if traffic.delivered - before == len(members):
            per_message.append(traffic.last_delivery - at)
        await asyncio.sleep(spec.get("gap", 0.2))
    emit("end")
    still_open = sum(1 for ws in sockets if ws.state.name == "OPEN")
    await close_sockets(sockets)
    for task in readers:
        task.cancel()
    return {
        "sockets": len(sockets),
        "still_open": still_open,
        "connect_seconds": round(connect_seconds, 3),
        "connects_per_s": round(len(sockets) / connect_seconds, 1),
        "sent": spec["messages"],
        **traffic.delivery_counts(),
        "latency_ms": percentiles(traffic.latencies),
        "last_recipient_ms": percentiles(per_message),
    }


# --- Accept rate: open many sockets as fast as the server takes them ----------------------------


async def run_connect(spec: dict[str, Any]) -> dict[str, Any]:
    """Open every socket, `concurrency` handshakes in flight, each timed from the TCP connect
    to the open socket (the server's 101); then close them all. The same code measures the
    service and the bare reference server."""
    urls = spec["sockets"]
    gate = asyncio.Semaphore(spec.get("concurrency", 200))
    times: list[float] = []
    failures: Counter[str] = Counter()

    async def one(url: str) -> ClientConnection | None:
        async with gate:
            began = now()
            try:
                ws = await connect(
                    url, compression=None, proxy=None, ping_interval=None, open_timeout=60
                )
            except Exception as exc:
                failures[type(exc).__name__] += 1
                return None
            times.append(now() - began)
            return ws

    emit("start")
    cpu_before = time.process_time()
    started = now()
    sockets = [ws for ws in await asyncio.gather(*(one(url) for url in urls)) if ws is not None]
    elapsed = now() - started
    loadgen_cpu = time.process_time() - cpu_before
    emit("end")
    await asyncio.sleep(spec.get("hold", 0))
    still_open = sum(1 for ws in sockets if ws.state.name == "OPEN")
    await close_sockets(sockets)
    return {
        "sockets": len(urls),
        "opened": len(sockets),
        "still_open": still_open,
        "errors": dict(failures),
        "connect_seconds": round(elapsed, 3),
        "connects_per_s": round(len(sockets) / elapsed, 1),
        "latency_ms": percentiles(times),
        "loadgen_cpu_pct": round(100 * loadgen_cpu / max(elapsed, 1e-9), 1),
    }


# --- HTTP history pages ---------------------------------------------------------------------------


def run_http(spec: dict[str, Any]) -> dict[str, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", spec["port"], timeout=30)
    headers = {"Authorization": f"Bearer {spec['token']}"}
    results = {}
    emit("start")
    for page in spec["pages"]:
        latencies: list[float] = []
        failures: Counter[str] = Counter()
        for attempt in range(spec.get("warmup", 10) + page["n"]):
            started = now()
            connection.request("GET", page["path"], headers=headers)
            response = connection.getresponse()
            body = response.read()
            elapsed = now() - started
            if attempt < spec.get("warmup", 10):
                continue
            problem = _page_problem(response.status, body, page)
            if problem:
                failures[problem] += 1
            latencies.append(elapsed)
        results[page["name"]] = {
            "requests": page["n"],
            "ok": page["n"] - sum(failures.values()),
            "failures": dict(failures),
            "latency_ms": percentiles(latencies),
        }
    emit("end")
    connection.close()
    return {"pages": results}


def _page_problem(status: int, body: bytes, page: dict[str, Any]) -> str | None:
    """Why a history response is not the page that was asked for (None: it is)."""
    if status != 200:
        return f"status_{status}"
    data = loads(body)
    ids = [message["id"] for message in data["results"]]
    if len(ids) != page["expect"]:
        return "wrong_count"
    if ids != sorted(ids, reverse=page.get("newest_first", True)):
        return "wrong_order"
    if (data["next"] is None) != page.get("last", False):
        return "wrong_next"
    return None


def main() -> None:
    with open(sys.argv[1]) as spec_file:
        spec = json.load(spec_file)
    if spec["kind"] == "http":
        result = run_http(spec)
    else:
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:  # pragma: no cover
            runner = asyncio.run
        if spec["kind"] == "storm":
            from bench.storm import run_storm

            scenario = run_storm
        else:
            scenario = {"traffic": run_traffic, "idle": run_idle, "connect": run_connect}[
                spec["kind"]
            ]
        result = runner(scenario(spec))
    emit("result", **result)


if __name__ == "__main__":
    main()
