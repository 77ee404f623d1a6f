"""The database connection pool (PostgreSQL) survives its connections being cut.

Only the pool's idle connections are cut: Channels' test communicators turn off
`close_old_connections` in `database_sync_to_async`, so in this process (not in a server)
worker threads keep connections outside the pool across tests, and cutting those would fail
whichever later test reuses them."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection
from rest_framework.test import APIClient

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def terminate(backend_pids: list[int]) -> int:
    """What a PostgreSQL restart does to pooled connections: their backends are gone."""
    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"] or None,
        port=settings["PORT"] or None,
        user=settings["USER"],
        password=settings["PASSWORD"] or None,
        dbname=settings["NAME"],
        autocommit=True,
    ) as admin:
        row = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM unnest(%s::int[]) AS pid",
            [backend_pids],
        ).fetchone()
    return row[0]


def idle_pooled_backends() -> list[int]:
    """The backend of every connection waiting in the pool (checked out, then given back)."""
    pool = connection.pool
    idle = [pool.getconn() for _ in range(pool.get_stats()["pool_available"])]
    pids = [conn.info.backend_pid for conn in idle]
    for conn in idle:
        pool.putconn(conn)
    return pids


def test_a_request_after_the_pools_connections_died_succeeds(user, make_chat) -> None:
    chat = make_chat(user)
    client = APIClient()
    client.force_authenticate(user)
    assert client.get(f"/chats/{chat.pk}/messages").status_code == 200
    # Back to the pool, as at the end of a request outside tests (Django's test client keeps
    # the thread's connection open across requests).
    connection.close()

    pids = idle_pooled_backends()
    assert pids and terminate(pids) == len(pids)

    response = client.get(f"/chats/{chat.pk}/messages")
    assert response.status_code == 200, response.content  # Not a dead connection's 500.
