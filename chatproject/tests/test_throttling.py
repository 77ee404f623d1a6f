"""Throttles fail open when the shared cache (Redis) is down: never a 500 for it."""

from __future__ import annotations

from unittest import mock

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

pytestmark = pytest.mark.django_db


def test_a_throttled_endpoint_still_answers_when_the_cache_is_down(
    auth_client, user, make_chat, throttle_rates
):
    chat = make_chat(user)
    throttle_rates["send"] = "1/min"
    with mock.patch(
        "django.core.cache.backends.locmem.LocMemCache.get",
        side_effect=RedisConnectionError("Redis is down"),
    ):
        statuses = [
            auth_client.post(
                f"/chats/{chat.pk}/messages", {"text": "hi"}, format="json"
            ).status_code
            for _ in range(3)
        ]
        login = auth_client.post(
            "/users/login", {"username": user.username, "password": "x"}, format="json"
        )

    assert statuses == [201, 201, 201]  # Unthrottled while the cache is away...
    assert login.status_code == 401
    assert [  # ...and throttled again once it is back.
        auth_client.post(f"/chats/{chat.pk}/messages", {"text": "hi"}, format="json").status_code
        for _ in range(2)
    ] == [201, 429]
