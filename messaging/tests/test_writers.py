"""Writer threads: sends waiting together are stored in one transaction, each with its own
outcome. Runs on SQLite and, with DATABASE_URL, on PostgreSQL's pipelined path."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from channels.db import database_sync_to_async

from chatproject.errors import NotFound
from messaging import services
from messaging.models import Message
from messaging.writers import ChatWriter, run_on_writer

pytestmark = pytest.mark.django_db(transaction=True)


async def sends_in_one_batch(
    chat_id: int, requests: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> list[Any]:
    """Queue every send behind a job that holds the chat's writer, then let it go: the writer
    then takes them all at once, as one batch. No timing: the holding job is running before
    the first send is queued, and it is released once the last one is."""
    holding_started, release = threading.Event(), threading.Event()
    queued: list[Any] = []
    all_queued = asyncio.Event()
    submit = ChatWriter.submit

    def submit_and_count(writer: ChatWriter, job: Any) -> None:
        submit(writer, job)
        queued.append(job)
        if len(queued) == len(requests):
            all_queued.set()

    def hold() -> None:
        holding_started.set()
        release.wait(timeout=30)

    holding = asyncio.ensure_future(run_on_writer(chat_id, hold))
    assert await asyncio.to_thread(holding_started.wait, 30)
    monkeypatch.setattr(ChatWriter, "submit", submit_and_count)
    sends = [
        asyncio.ensure_future(
            run_on_writer(
                chat_id, services.message_send, batch=services.message_send_many, **request
            )
        )
        for request in requests
    ]
    await asyncio.wait_for(all_queued.wait(), 30)
    release.set()
    await holding
    return await asyncio.gather(*sends, return_exceptions=True)


def stored_texts(chat_id: int) -> list[str]:
    return list(
        Message.objects.filter(chat_id=chat_id).order_by("id").values_list("text", flat=True)
    )


async def test_a_batch_stores_every_send_in_order_with_consecutive_seqs(
    user, other_user, make_chat, monkeypatch
):
    chat = await database_sync_to_async(make_chat)(user, [other_user])
    batches = []
    send_many = services.message_send_many

    def recorded(requests: list[dict[str, Any]]) -> list[Any]:
        batches.append(len(requests))
        return send_many(requests)

    monkeypatch.setattr(services, "message_send_many", recorded)
    requests = [
        {"author": author, "chat_id": chat.pk, "text": f"m{n}", "client_id": f"c{n}"}
        for n, author in enumerate([user, other_user, user, other_user])
    ]

    outcomes = await sends_in_one_batch(chat.pk, requests, monkeypatch)

    assert [o.message.text for o in outcomes] == ["m0", "m1", "m2", "m3"]
    assert all(o.created for o in outcomes)
    ids = [o.message.pk for o in outcomes]
    assert ids == sorted(ids)
    assert [o.message.seq for o in outcomes] == [1, 2, 3, 4]
    assert await database_sync_to_async(stored_texts)(chat.pk) == ["m0", "m1", "m2", "m3"]
    assert batches == [4]  # One transaction for the four.


async def test_a_refused_send_fails_alone_and_a_repeat_in_the_same_batch_is_answered(
    user, other_user, make_user, make_chat, monkeypatch
):
    chat = await database_sync_to_async(make_chat)(user, [other_user])
    outsider = await database_sync_to_async(make_user)()
    requests = [
        {"author": user, "chat_id": chat.pk, "text": "first", "client_id": "same"},
        {"author": outsider, "chat_id": chat.pk, "text": "not a member", "client_id": None},
        {"author": user, "chat_id": chat.pk, "text": "first again", "client_id": "same"},
        {"author": other_user, "chat_id": chat.pk, "text": "second", "client_id": None},
    ]

    first, refused, repeat, second = await sends_in_one_batch(chat.pk, requests, monkeypatch)

    assert isinstance(refused, NotFound)
    assert first.created and not repeat.created
    assert repeat.message.pk == first.message.pk and repeat.message.text == "first"
    assert second.created and second.message.seq == first.message.seq + 1
    assert await database_sync_to_async(stored_texts)(chat.pk) == ["first", "second"]


async def test_a_database_error_in_a_batch_fails_only_its_own_send(
    user, other_user, make_chat, monkeypatch
):
    chat = await database_sync_to_async(make_chat)(user, [other_user])
    requests = [
        {"author": user, "chat_id": chat.pk, "text": "before", "client_id": None},
        # Empty text breaks a CHECK constraint: the batch's transaction is rolled back.
        {"author": user, "chat_id": chat.pk, "text": "", "client_id": None},
        {"author": other_user, "chat_id": chat.pk, "text": "after", "client_id": None},
    ]

    before, broken, after = await sends_in_one_batch(chat.pk, requests, monkeypatch)

    assert isinstance(broken, Exception) and not isinstance(broken, NotFound)
    assert before.created and after.created
    assert after.message.seq == before.message.seq + 1
    assert await database_sync_to_async(stored_texts)(chat.pk) == ["before", "after"]


async def test_a_writer_that_fails_outside_a_send_answers_and_keeps_working(
    user, make_chat, monkeypatch
):
    chat = await database_sync_to_async(make_chat)(user)
    request = {"author": user, "chat_id": chat.pk, "text": "hi", "client_id": None}

    def broken() -> None:
        raise RuntimeError("connection handling failed")

    monkeypatch.setattr("messaging.writers.close_old_connections", broken)
    with pytest.raises(RuntimeError):
        await run_on_writer(chat.pk, services.message_send, **request)
    monkeypatch.undo()

    sent = await run_on_writer(chat.pk, services.message_send, **request)
    assert sent.created and sent.message.text == "hi"
