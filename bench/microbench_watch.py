"""What the session watch (messaging/sessions.py) costs at 5,000 idle sockets (issue 15).

Memory: 5,000 stand-in sessions are watched (one heap entry and one weak-set entry each, as
`ChatConsumer.connect` does); tracemalloc measures what that adds, per socket. Time: the
once-a-second sweep with nothing expired (a heap peek), a sweep that ends 5,000 sessions (the
heap emptied), and the revocation re-check's own work per SESSION_RECHECK_SECONDS with the
query replaced by a dictionary (the query itself: 10 statements of 500 ids, timed on
PostgreSQL by `--database`).

Run: `.venv/bin/python -m bench.microbench_watch [--database]` (the database variant needs
DATABASE_URL and the project's settings; it reads the `token_states` of 5,000 user ids).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import tracemalloc

SOCKETS = 5000


class Session:
    """What the watch needs of a socket (messaging/sessions.py, `Session`)."""

    def __init__(self, user_id: int, expires_at: float) -> None:
        self.user_id = user_id
        self.token_version = 0
        self.token_expires_at = expires_at
        self.ended = False

    def end_session(self) -> None:
        self.ended = True


async def measure(database: bool) -> dict[str, float]:
    from messaging import sessions

    now = time.time()
    sockets = [Session(user_id, now + 3600 + user_id) for user_id in range(SOCKETS)]
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    watch = sessions.SessionWatch()
    for session in sockets:
        watch.watch(session)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    added = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    result: dict[str, float] = {"bytes_per_socket": round(added / SOCKETS, 1)}

    runs = 10_000
    started = time.perf_counter()
    for _ in range(runs):
        watch._end_expired(now)  # Nothing expired: the usual sweep.
    result["idle_sweep_us"] = round((time.perf_counter() - started) / runs * 1e6, 3)

    states = {s.user_id: sessions.positions.TokenState(0, True) for s in sockets}

    async def from_memory(user_ids: list[int]) -> dict[int, object]:
        return {user_id: states[user_id] for user_id in user_ids}

    real = sessions._token_states
    sessions._token_states = from_memory  # type: ignore[assignment]
    started = time.perf_counter()
    await watch.recheck()
    result["recheck_without_query_ms"] = round((time.perf_counter() - started) * 1e3, 2)
    sessions._token_states = real  # type: ignore[assignment]
    if database:
        started = time.perf_counter()
        await watch.recheck()  # 10 statements of 500 ids (users that do not exist: the same plan).
        result["recheck_with_queries_ms"] = round((time.perf_counter() - started) * 1e3, 2)

    started = time.perf_counter()
    watch._end_expired(now + 10**6)  # Every one expired: the heap is emptied.
    result["sweep_ending_all_ms"] = round((time.perf_counter() - started) * 1e3, 2)
    assert all(s.ended for s in sockets)
    if watch.sweeper is not None:
        watch.sweeper.cancel()
    return result


def main() -> None:
    database = "--database" in sys.argv
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatproject.settings")
    if not database:
        os.environ["DATABASE_URL"] = "sqlite:///:memory:"
    os.environ.setdefault("SECRET_KEY", "microbench-only")
    import django

    django.setup()
    print(asyncio.run(measure(database)))


if __name__ == "__main__":
    main()
