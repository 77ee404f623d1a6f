"""Reads that many coroutines ask for at once, made in one database call per batch.

A WebSocket handshake reads its user, then its memberships; a reconnect storm brings thousands
of handshakes within seconds. Made one by one, each read is a hop to Channels' one shared sync
thread and a round trip to PostgreSQL, queued behind all the others: the hops, not the queries,
bounded the accept rate (docs/performance.md, "Reconnect storms"). Here the keys asked for by
every coroutine of an event loop go into the next batch, and one call (`read_many`, on the
sync thread through `database_sync_to_async`, which closes stale connections around it) reads
them all; keys asked for while a call runs wait for the next one, so every read still begins
after it was asked for. The busier the loop, the larger the batches.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from channels.db import database_sync_to_async

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

MAX_BATCH = 500


@dataclass
class _Loop(Generic[K, V]):
    waiting: dict[K, asyncio.Future[V | None]] = field(default_factory=dict)
    reading: asyncio.Task[None] | None = None


class BatchedRead(Generic[K, V]):
    """`await read.get(key)`: `read_many(keys)[key]`, or None when it has no such key."""

    def __init__(self, read_many: Callable[[list[K]], dict[K, V]], *, name: str) -> None:
        self.read_many = database_sync_to_async(read_many)
        self.name = name
        self.batches = 0  # Calls made (tests and benchmarks read them).
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Loop[K, V]] = (
            weakref.WeakKeyDictionary()
        )

    async def get(self, key: K) -> V | None:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _Loop()
        future = state.waiting.get(key)
        if future is None:
            future = state.waiting[key] = loop.create_future()
        if state.reading is None:
            state.reading = asyncio.ensure_future(self._read(state))
        # Shielded: one waiter that gives up must not cancel the others' read.
        return await asyncio.shield(future)

    async def _read(self, state: _Loop[K, V]) -> None:
        try:
            while state.waiting:
                keys = list(state.waiting)[:MAX_BATCH]
                batch = {key: state.waiting.pop(key) for key in keys}
                self.batches += 1
                try:
                    found = await self.read_many(keys)
                except Exception as exc:  # Every waiter of the batch hears of it.
                    for future in batch.values():
                        if not future.done():
                            future.set_exception(exc)
                            future.exception()  # Retrieved, even if its waiter has gone.
                    continue
                for key, future in batch.items():
                    if not future.done():
                        future.set_result(found.get(key))
        finally:
            state.reading = None
