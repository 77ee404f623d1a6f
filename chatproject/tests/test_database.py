"""The database connection pool (PostgreSQL) survives its connections being cut."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection
from rest_framework.test import APIClient

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def cut_every_other_connection() -> int:
    """What a PostgreSQL restart does to the pool: every backend of this database is gone."""
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
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    return row[0]


def test_requests_after_the_pool_lost_its_connections_succeed(user, make_chat) -> None:
    chat = make_chat(user)
    client = APIClient()
    client.force_authenticate(user)
    assert client.get(f"/chats/{chat.pk}/messages").status_code == 200
    # Back to the pool, as at the end of a request outside tests (Django's test client keeps
    # the thread's connection open across requests).
    connection.close()

    assert cut_every_other_connection() >= 1  # The pooled connection of that request, at least.

    response = client.get(f"/chats/{chat.pk}/messages")
    assert response.status_code == 200, response.content  # Not a dead connection's 500.
