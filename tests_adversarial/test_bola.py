"""Broken object-level authorization: other people's chat and message ids, tried by an outsider.

Every HTTP endpoint and WebSocket event that takes a chat or message id is called by a user
who is not a member, with the real ids of a chat (and its messages) of two other users. Each
answer must be the one a nonexistent id gets (404 with the same body / `not_found` with the
same detail), nothing in the database may change, and the chat's members must hear nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from rest_framework.test import APIClient

from conftest import access_token
from messaging import services
from messaging.models import Chat, ChatMember, Message, Reaction
from tests_adversarial.sockets import drain, next_event, send_message

pytestmark = pytest.mark.django_db(transaction=True)

NONEXISTENT_ID = 987_654_321


@pytest.fixture
def victims(make_user, make_chat, make_message) -> dict[str, Any]:
    """Alice and Bob's chat with two messages; Mallory's own chat with one message."""
    alice, bob, mallory, carol = make_user(), make_user(), make_user(), make_user()
    chat = make_chat(alice, [bob], title="private plans")
    first = make_message(chat, alice, "the secret is 42", client_id="alice-1")
    second = make_message(chat, bob, "do not tell mallory")
    services.reaction_add(user=bob, chat_id=chat.pk, message_id=first.pk, emoji="🤫")
    own_chat = make_chat(mallory, [])
    own_message = make_message(own_chat, mallory, "mine")
    return {
        "alice": alice,
        "bob": bob,
        "mallory": mallory,
        "carol": carol,
        "chat": chat,
        "messages": [first, second],
        "own_chat": own_chat,
        "own_message": own_message,
    }


def _snapshot() -> dict[str, list[tuple]]:
    return {
        "chats": list(
            Chat.objects.order_by("id").values_list(
                "id", "title", "last_message_id", "owner_id", "seq", "revision"
            )
        ),
        "members": list(
            ChatMember.objects.order_by("id").values_list(
                "chat_id", "user_id", "last_read_message_id"
            )
        ),
        "messages": list(
            Message.objects.order_by("id").values_list(
                "id", "chat_id", "author_id", "text", "seq", "deleted", "edited_at"
            )
        ),
        "reactions": list(Reaction.objects.order_by("id").values_list("message_id", "emoji")),
    }


def _http_attacks(
    chat_id: int, message_id: int, own_chat_id: int, member_id: int
) -> list[tuple[str, str, dict]]:
    """(method, path, body) for every endpoint that takes a chat id, as an outsider sends it."""
    attacks = []
    for slash in ("", "/"):
        message = f"/chats/{chat_id}/messages/{message_id}"
        attacks += [
            ("patch", f"/chats/{chat_id}{slash}", {"title": "mine now"}),
            ("post", f"/chats/{chat_id}/members{slash}", {"user_ids": [member_id]}),
            ("delete", f"/chats/{chat_id}/members/{member_id}{slash}", {}),
            ("post", f"/chats/{chat_id}/leave{slash}", {}),
            ("get", f"/chats/{chat_id}/messages{slash}?since_seq=0", {}),
            ("patch", f"{message}{slash}", {"text": "edited by mallory"}),
            ("delete", f"{message}{slash}", {}),
            ("put", f"{message}/reactions/%F0%9F%A4%AB{slash}", {}),
            ("delete", f"{message}/reactions/%F0%9F%A4%AB{slash}", {}),
            ("get", f"/chats/{chat_id}{slash}", {}),
            ("get", f"/chats/{chat_id}/messages{slash}", {}),
            ("get", f"/chats/{chat_id}/messages{slash}?after=0", {}),
            ("get", f"/chats/{chat_id}/messages{slash}?before={message_id + 1}&limit=1", {}),
            ("post", f"/chats/{chat_id}/messages{slash}", {"text": "hi", "client_id": "alice-1"}),
            ("post", f"/chats/{chat_id}/read{slash}", {"message_id": message_id}),
        ]
    # The outsider's own chat (which Mallory owns), pointing at a message of the victims' chat.
    own_message = f"/chats/{own_chat_id}/messages/{message_id}"
    attacks += [
        ("post", f"/chats/{own_chat_id}/read", {"message_id": message_id}),
        ("patch", own_message, {"text": "edited by mallory"}),
        ("delete", own_message, {}),
        ("put", f"{own_message}/reactions/x", {}),
        ("delete", f"{own_message}/reactions/x", {}),
    ]
    return attacks


def _answer(client: APIClient, method: str, path: str, body: dict) -> tuple[int, bytes]:
    response = getattr(client, method)(path, body, format="json")
    return response.status_code, response.content


def _http_probe(world: dict[str, Any]) -> list[tuple[Any, Any, str]]:
    """For each attack: (answer with the real ids, answer with nonexistent ids, path)."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token(world['mallory'])}")
    own, bob = world["own_chat"].pk, world["bob"].pk
    real = _http_attacks(world["chat"].pk, world["messages"][0].pk, own, bob)
    fake = _http_attacks(NONEXISTENT_ID, NONEXISTENT_ID, own, bob)
    return [
        (_answer(client, *attack), _answer(client, *control), attack[1])
        for attack, control in zip(real, fake, strict=True)
    ]


async def test_an_outsider_gets_the_answer_of_a_nonexistent_id_on_every_endpoint(
    ws, victims
) -> None:
    before = await sync_to_async(_snapshot)()
    alice_socket, bob_socket = await ws(victims["alice"]), await ws(victims["bob"])
    for real, control, path in await sync_to_async(_http_probe)(victims):
        assert real[0] == 404, (path, real)
        assert real == control, (path, real, control)
        assert b"secret" not in real[1] and b"plans" not in real[1]
    # The list holds only the outsider's own chat; the victims' chat cannot be opened as a
    # direct chat either (it is a group, and Mallory's direct chat with Bob is a new one).
    listing = await sync_to_async(_listing)(victims["mallory"])
    assert [chat["id"] for chat in listing] == [victims["own_chat"].pk]
    assert await sync_to_async(_snapshot)() == before
    assert await drain(alice_socket) == [] and await drain(bob_socket) == []


def _listing(user) -> list[dict[str, Any]]:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token(user)}")
    return client.get("/chats").json()["results"]


def _ws_attacks(chat_id: int, message_id: int, own_chat_id: int) -> list[dict[str, Any]]:
    return [
        {"type": "new_message", "chat_id": chat_id, "text": "hi", "client_id": "alice-1"},
        {"type": "new_message", "chat_id": chat_id, "text": "hi"},
        {"type": "read_message", "chat_id": chat_id, "id": message_id},
        {"type": "read_message", "chat_id": own_chat_id, "id": message_id},
        {"type": "typing", "chat_id": chat_id},
    ]


async def test_an_outsider_gets_not_found_on_every_websocket_event(ws, victims) -> None:
    before = await sync_to_async(_snapshot)()
    alice_socket, bob_socket = await ws(victims["alice"]), await ws(victims["bob"])
    mallory = await ws(victims["mallory"])
    message_ids = [message.pk for message in victims["messages"]]
    real = _ws_attacks(victims["chat"].pk, message_ids[0], victims["own_chat"].pk)
    fake = _ws_attacks(NONEXISTENT_ID, NONEXISTENT_ID, victims["own_chat"].pk)
    for attack, control in zip(real, fake, strict=True):
        await mallory.send_json_to(attack)
        answer = await next_event(mallory)
        await mallory.send_json_to(control)
        expected = await next_event(mallory)
        assert answer["code"] == "not_found", (attack, answer)
        assert answer["detail"] == expected["detail"], (attack, answer, expected)
        assert "secret" not in str(answer)
    assert await sync_to_async(_snapshot)() == before
    assert await drain(alice_socket) == [] and await drain(bob_socket) == []
    # Mallory's socket never hears the victims' chat: a message, an edit, a reaction, a new
    # title and a new member there now stay private.
    sent = await send_message(alice_socket, victims["chat"].pk, "still private")

    def change_the_chat() -> None:
        chat_id, message_id = victims["chat"].pk, sent["message"]["id"]
        alice, bob = victims["alice"], victims["bob"]
        services.message_edit(editor=alice, chat_id=chat_id, message_id=message_id, text="x")
        services.reaction_add(user=bob, chat_id=chat_id, message_id=message_id, emoji="👀")
        services.chat_rename(actor=alice, chat_id=chat_id, title="still private")
        services.chat_members_add(actor=alice, chat_id=chat_id, user_ids=[victims["carol"].pk])

    await sync_to_async(change_the_chat)()
    bob_heard = [event["type"] for event in await drain(bob_socket)]
    assert bob_heard.count("new_message") == 1 and bob_heard.count("message_updated") == 2
    assert "chat_updated" in bob_heard
    assert await drain(mallory) == []


async def test_reusing_someone_elses_client_id_returns_only_your_own_message(ws, victims) -> None:
    """Idempotency keys are per author: Bob repeating Alice's client_id must not get her
    message back (a leak by key guessing), but a message of his own."""
    bob = await ws(victims["bob"])
    reply = await send_message(bob, victims["chat"].pk, "bob's own", client_id="alice-1")
    assert reply["type"] == "new_message"
    assert reply["message"]["author_id"] == victims["bob"].pk
    assert reply["message"]["text"] == "bob's own"
    assert reply["message"]["id"] not in {message.pk for message in victims["messages"]}
