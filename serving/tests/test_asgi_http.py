"""HTTP through the ASGI application: the request in one thread hop (serving/asgi_http.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator
from django.core.signals import request_finished, request_started
from django.db import connections
from django.db.backends.signals import connection_created

from accounts.models import User
from conftest import access_token
from messaging.models import Chat, Message
from serving.asgi_http import RequestThreads

pytestmark = pytest.mark.django_db(transaction=True)


async def asgi_get(path: str, user: User | None = None) -> dict[str, Any]:
    """GET through the whole ASGI application; returns once the application has finished."""
    from chatproject.asgi import application

    path, _, query = path.partition("?")
    headers = [(b"host", b"127.0.0.1")]
    if user is not None:
        headers.append((b"authorization", f"Bearer {access_token(user)}".encode()))
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": headers,
        "server": ("127.0.0.1", 80),
    }
    communicator = ApplicationCommunicator(application, scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(10)
    body = b""
    while True:
        # Not channels' HttpCommunicator: a streamed response ends with a message without "body".
        message = await communicator.receive_output(10)
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    await communicator.wait(10)  # The request's end (request_finished) runs after the body.
    return {"status": start["status"], "headers": start["headers"], "body": body}


@pytest.fixture
def threads_seen() -> Iterator[dict[str, list[int]]]:
    """The thread of each request_started, connection_created and request_finished signal."""
    seen: dict[str, list[int]] = {"started": [], "queries": [], "finished": []}

    def recorder(name: str) -> Callable[..., None]:
        def record(**kwargs: Any) -> None:
            seen[name].append(threading.get_ident())

        return record

    receivers = {
        request_started: recorder("started"),
        connection_created: recorder("queries"),
        request_finished: recorder("finished"),
    }
    for signal, receiver in receivers.items():
        signal.connect(receiver, weak=False)
    yield seen
    for signal, receiver in receivers.items():
        signal.disconnect(receiver)


async def test_history_page_over_asgi_is_the_page_the_test_client_gets(
    user: User,
    other_user: User,
    make_chat: Callable[..., Chat],
    make_message: Callable[..., Message],
    client_for: Callable[[User], Any],
) -> None:
    @sync_to_async
    def chat_with_messages() -> Chat:
        chat = make_chat(user, [other_user])
        for index in range(3):
            author = other_user if index % 2 else user
            make_message(chat, author, f"m{index}", client_id=f"c{index}")
        return chat

    path = f"/chats/{(await chat_with_messages()).pk}/messages?limit=2"

    response = await asgi_get(path, user)

    assert response["status"] == 200
    body = json.loads(response["body"])
    expected = (await sync_to_async(client_for(user).get)(path)).json()
    assert body["results"] == expected["results"]
    assert body["read_cursors"] == expected["read_cursors"]
    assert body["next"].startswith("http://127.0.0.1/chats/")
    assert "before=" in body["next"]


async def test_errors_over_asgi_keep_the_api_shape(user: User) -> None:
    not_found = await asgi_get("/chats/999999/messages", user)
    unauthenticated = await asgi_get("/users/me")

    assert (not_found["status"], json.loads(not_found["body"])) == (404, {"detail": "Not found."})
    assert unauthenticated["status"] == 401


# PostgreSQL: the SQLite test database is one in-memory connection, shared and never closed.
@pytest.mark.postgres
async def test_a_request_runs_on_one_thread_that_later_requests_reuse(
    user: User, threads_seen: dict[str, list[int]]
) -> None:
    for _ in range(2):
        assert (await asgi_get("/users/me", user))["status"] == 200

    started, queries, finished = (threads_seen[k] for k in ("started", "queries", "finished"))
    assert len(started) == len(finished) == 2
    # The signals, the view's queries and the end of the request: one thread, not the loop's.
    assert set(started) == set(queries) == set(finished)
    assert threading.get_ident() not in started
    # Kept and reused, not one new thread per request.
    assert len(set(started)) == 1


# PostgreSQL: the SQLite test database is one in-memory connection, shared and never closed.
@pytest.mark.postgres
async def test_the_database_connection_is_handed_back_when_the_request_ends(user: User) -> None:
    from chatproject.asgi import django_asgi_app

    assert (await asgi_get("/users/me", user))["status"] == 200

    idle = django_asgi_app.threads.idle
    assert idle
    open_connection = idle[-1].submit(lambda: connections["default"].connection).result()
    assert open_connection is None


async def test_an_async_view_still_works(threads_seen: dict[str, list[int]]) -> None:
    response = await asgi_get("/healthz")

    assert response["status"] == 200
    assert json.loads(response["body"]) == {"database": "ok", "channel_layer": "ok"}


async def test_admin_login_page_and_a_static_file_are_served() -> None:
    login = await asgi_get("/admin/login/")
    stylesheet = await asgi_get("/static/admin/css/base.css")

    assert login["status"] == 200
    assert any(
        name.lower() == b"set-cookie" and value.startswith(b"csrftoken=")
        for name, value in login["headers"]
    )
    assert stylesheet["status"] == 200
    assert b"body" in stylesheet["body"]


def test_request_threads_lend_one_per_running_request_and_keep_a_bounded_number_idle() -> None:
    threads = RequestThreads(keep=1)
    first, second = threads.borrow(), threads.borrow()
    assert first is not second

    threads.give_back(first)
    threads.give_back(second)

    assert threads.idle == [first]
    assert threads.borrow() is first
    with pytest.raises(RuntimeError):  # The one beyond `keep` was shut down.
        second.submit(lambda: None)
    first.shutdown()
