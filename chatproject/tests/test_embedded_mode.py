"""The embedded mode (`make run` without DATABASE_URL/REDIS_URL: a SQLite file and the in-memory
channel layer) serves a small team: twenty members sending at once, over their sockets and over
HTTP, into one room and into two-person chats, against a real daphne process.

Before SQLite was set up for concurrent writers (chatproject/settings.py), about half of these
sends were answered `server_error` or 500, "database is locked". The throughput of the same load,
run longer, is `python -m bench.embedded` (docs/performance.md).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.embedded import USERS, chats_of, embedded_server, run_load

pytestmark = pytest.mark.multiprocess

WS_MESSAGES = 10  # per member, over its socket
HTTP_MESSAGES = 4  # per member, over HTTP, at the same time


@pytest.mark.parametrize("topology", ["pairs", "room"])
def test_twenty_members_sending_at_once_on_sqlite_get_every_message_and_no_error(
    tmp_path: Path, topology: str
) -> None:
    with embedded_server(tmp_path) as (server, seeded):
        counts = asyncio.run(
            run_load(
                server,
                chats_of(seeded, topology),
                seeded["tokens"],
                ws_messages=WS_MESSAGES,
                http_messages=HTTP_MESSAGES,
            )
        )
        log = server.read_log()
    assert counts.ws_errors == {}
    assert counts.http_statuses == {201: USERS * HTTP_MESSAGES}
    assert counts.ws_answered == USERS * WS_MESSAGES
    messages = sum(len(ids) for ids in counts.committed.values())
    assert messages == USERS * (WS_MESSAGES + HTTP_MESSAGES)
    # Every socket got every message of its chat, once and in order.
    assert counts.problems() == []
    per_socket = {"pairs": 2, "room": USERS}[topology] * (WS_MESSAGES + HTTP_MESSAGES)
    assert all(len(member.received) == per_socket for member in counts.members)
    assert "database is locked" not in log
