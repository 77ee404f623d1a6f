"""When a socket's session ends: its access token expired, or its user's tokens were revoked.

One `SessionWatch` per event loop (not a timer per socket) keeps the loop's sockets in a heap
ordered by their token's expiry and, once a second, closes those whose token expired and was
not renewed in band (`{"type": "auth"}`), with 4401. A closed socket, or a renewed token, leaves
its entry behind until that expiry; past twice as many entries as sessions (and COMPACT_AFTER),
the stale ones are dropped, so a loop of reconnects does not grow the heap.

Revocation (a password change, a deactivation) reaches sockets through the channel layer
(`user.revoked`, within a second or two on every instance). So that it also holds when that
announcement is lost (Redis down at that moment), the watch re-reads, every
SESSION_RECHECK_SECONDS, the token version and the active flag of every user with a socket
here (one query per 500 users), and closes the sockets whose token is older, or whose user is
inactive or deleted: a revoked session ends within that bound whatever Redis does.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
import weakref
from typing import Protocol

from channels.db import database_sync_to_async
from django.conf import settings

from messaging import positions

logger = logging.getLogger(__name__)

SWEEP_SECONDS = 1.0
RECHECK_BATCH = 500

_token_states = database_sync_to_async(positions.token_states)


class Session(Protocol):
    user_id: int
    token_version: int
    token_expires_at: float | None

    def end_session(self) -> None: ...


class SessionWatch:
    # The heap's size below which stale entries are left to expire (see `_drop_stale`).
    COMPACT_AFTER = 1000

    def __init__(self) -> None:
        self.sessions: weakref.WeakSet[Session] = weakref.WeakSet()
        self.expiries: list[tuple[float, int, weakref.ref[Session]]] = []
        self.order = itertools.count()
        self.sweeper: asyncio.Task[None] | None = None
        self.rechecked_at = time.monotonic()

    def watch(self, session: Session) -> None:
        """Follow `session` (again, after its token was renewed: the older entry is ignored)."""
        self.sessions.add(session)
        if session.token_expires_at is not None:
            entry = (session.token_expires_at, next(self.order), weakref.ref(session))
            heapq.heappush(self.expiries, entry)
            if len(self.expiries) > max(self.COMPACT_AFTER, 2 * len(self.sessions)):
                self._drop_stale()
        if self.sweeper is None:
            self.sweeper = asyncio.create_task(self._sweep())

    def forget(self, session: Session) -> None:
        self.sessions.discard(session)

    async def _sweep(self) -> None:
        while self.sessions:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                self._end_expired(time.time())
                if time.monotonic() - self.rechecked_at >= settings.SESSION_RECHECK_SECONDS:
                    self.rechecked_at = time.monotonic()
                    await self.recheck()
            except Exception:  # Never let the watch die: sessions would outlive their tokens.
                logger.exception("sweeping sessions failed")
        self.sweeper = None
        self.expiries.clear()

    def _end_expired(self, now: float) -> None:
        while self.expiries and self.expiries[0][0] <= now:
            session = self._current(heapq.heappop(self.expiries))
            if session is not None:
                self.sessions.discard(session)
                session.end_session()

    def _current(self, entry: tuple[float, int, weakref.ref[Session]]) -> Session | None:
        """The entry's session, if it is still watched until the entry's expiry."""
        expires_at, _, ref = entry
        session = ref()
        if session in self.sessions and session.token_expires_at == expires_at:
            return session
        return None

    def _drop_stale(self) -> None:
        """Keep one entry per watched session: its current expiry's. Entries of closed sockets
        and renewed tokens would otherwise stay until their expiry (30 minutes by default), one
        per socket that came and went while the watch kept running (measured: 200 bytes per
        connect/disconnect). Called with more than twice as many entries as sessions, it costs
        at most twice the entries it drops: O(1) per `watch`."""
        current: dict[Session, tuple[float, int, weakref.ref[Session]]] = {}
        for entry in self.expiries:
            if (session := self._current(entry)) is not None:
                current.setdefault(session, entry)
        self.expiries = list(current.values())
        heapq.heapify(self.expiries)

    async def recheck(self) -> None:
        """Close the sockets whose user's tokens were revoked since they authenticated."""
        sessions = list(self.sessions)
        user_ids = sorted({session.user_id for session in sessions})
        states: dict[int, positions.TokenState] = {}
        try:
            for start in range(0, len(user_ids), RECHECK_BATCH):
                states.update(await _token_states(user_ids[start : start + RECHECK_BATCH]))
        except Exception:  # The database is away: next time.
            logger.warning("could not re-check sessions", exc_info=True)
            return
        for session in sessions:
            state = states.get(session.user_id)
            if state is None or not state.is_active or state.token_version != session.token_version:
                revoke(self, session)


def revoke(watch: SessionWatch, session: Session) -> None:
    watch.sessions.discard(session)
    session.end_session()


_watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SessionWatch] = (
    weakref.WeakKeyDictionary()
)


def local_watch() -> SessionWatch:
    """The session watch of the running event loop."""
    loop = asyncio.get_running_loop()
    watch = _watches.get(loop)
    if watch is None:
        watch = _watches[loop] = SessionWatch()
    return watch
