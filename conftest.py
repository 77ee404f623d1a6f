"""Fixtures shared by every test module: users, tokens, clients, chats, messages, sockets."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.core.cache import cache
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from accounts.models import User
from messaging import services
from messaging.limits import sockets
from messaging.models import Chat, Message

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PASSWORD = "correct-horse-battery-staple-42"
_usernames = itertools.count(1)


def using_postgres() -> bool:
    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


def using_redis() -> bool:
    return bool(settings.REDIS_URL)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests that need a real service skip without it, except under CI, where they fail."""
    needs = {
        "postgres": (using_postgres(), "PostgreSQL (set DATABASE_URL=postgres://...)"),
        "redis": (using_redis(), "Redis (set REDIS_URL=redis://...)"),
    }
    for marker, (available, what) in needs.items():
        if item.get_closest_marker(marker) and not available:
            if IN_CI:
                pytest.fail(f"CI=true but this test needs {what}")
            pytest.skip(f"needs {what}")


@pytest.fixture(autouse=True)
def _fresh_throttles() -> None:
    cache.clear()
    sockets.clear()  # WebSocket budgets outlive a user's last socket for a few seconds.


@pytest.fixture
def throttle_rates() -> Iterator[dict[str, str]]:
    """DRF's throttle rates, to change in a test (`throttle_rates["login"] = "2/min"`);
    restored afterwards. The very dict the throttles read: DRF binds it to the throttle class
    when it is first imported, and a settings reload does not rebind it."""
    from rest_framework.throttling import SimpleRateThrottle

    rates = SimpleRateThrottle.THROTTLE_RATES
    saved = dict(rates)
    yield rates
    rates.clear()
    rates.update(saved)


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Every (group, payload) the code publishes to the channel layer, in order, captured
    instead of sent."""
    sent: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(
        "messaging.events._publish", lambda group, payload, **kwargs: sent.append((group, payload))
    )
    return sent


@pytest.fixture
def make_user(db: None) -> Callable[..., User]:
    def make(username: str | None = None, password: str = PASSWORD, **extra: object) -> User:
        name = username or f"user{next(_usernames)}"
        return User.objects.create_user(username=name, password=password, **extra)

    return make


@pytest.fixture
def user(make_user: Callable[..., User]) -> User:
    return make_user()


@pytest.fixture
def other_user(make_user: Callable[..., User]) -> User:
    return make_user()


def access_token(user: User) -> str:
    return str(AccessToken.for_user(user))


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def client_for() -> Callable[[User], APIClient]:
    """An APIClient that sends `user`'s access token."""

    def make(user: User) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token(user)}")
        return client

    return make


@pytest.fixture
def auth_client(client_for: Callable[[User], APIClient], user: User) -> APIClient:
    return client_for(user)


@pytest.fixture
def make_chat(db: None) -> Callable[..., Chat]:
    def make(creator: User, members: Iterable[User] = (), title: str = "") -> Chat:
        return services.chat_create(
            creator=creator, title=title, member_ids=[member.pk for member in members]
        )

    return make


@pytest.fixture
def make_message(db: None) -> Callable[..., Message]:
    def make(chat: Chat, author: User, text: str = "hello", client_id: str | None = None):
        return services.message_send(
            author=author, chat_id=chat.pk, text=text, client_id=client_id
        ).message

    return make


@pytest.fixture
async def ws(transactional_db: None) -> AsyncIterator[Callable[..., Awaitable]]:
    """Open sockets to the real ASGI application (origin check and JWT middleware included).

    `await ws(user)` returns a connected WebsocketCommunicator; `await ws(token="...",
    connected=False)` one still to connect. All are disconnected at the end of the test.
    """
    from chatproject.asgi import application

    opened: list[WebsocketCommunicator] = []

    async def open_socket(
        user: User | None = None,
        *,
        token: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
        connected: bool = True,
    ) -> WebsocketCommunicator:
        raw = token if token is not None else access_token(user)
        communicator = WebsocketCommunicator(
            application, f"/chats/ws?token={raw}", headers=headers or []
        )
        opened.append(communicator)
        if connected:
            accepted, code = await communicator.connect()
            assert accepted, f"socket refused with {code}"
        return communicator

    yield open_socket
    for communicator in opened:
        try:
            await communicator.disconnect()
        except (Exception, asyncio.CancelledError):  # Closed by the server, or crashed.
            pass
    # A closed socket's reads already handed to Channels' shared sync thread (a reconcile, a
    # batched membership read) may still be running: wait for them, behind them in that
    # thread's queue, before the test database is flushed (a flush's TRUNCATE and a read that
    # is halfway through its tables can deadlock).
    await database_sync_to_async(lambda: None)()
