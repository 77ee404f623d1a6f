"""The WebSocket protocol, end to end through the real ASGI stack (origin, JWT, consumer)."""

from __future__ import annotations

import json
from datetime import timedelta
from unittest import mock

import pytest
from channels.db import database_sync_to_async
from django.test import override_settings
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from messaging import events, services
from messaging.models import ChatMember, Message

pytestmark = pytest.mark.django_db(transaction=True)


async def expect_closed(socket, code: int) -> None:
    output = await socket.receive_output(timeout=2)
    if output["type"] == "websocket.accept":
        output = await socket.receive_output(timeout=2)
    assert output == {"type": "websocket.close", "code": code}


async def send(socket, **event) -> None:
    await socket.send_json_to(event)


async def receive(socket) -> dict:
    return await socket.receive_json_from(timeout=3)


async def expect_error(socket, code: str, **request) -> dict:
    event = await receive(socket)
    assert event["type"] == "error", event
    assert event["code"] == code, event
    assert isinstance(event["detail"], str) and event["detail"]
    for key, value in request.items():
        assert event["request"].get(key) == value, event
    return event


async def still_works(socket, chat) -> None:
    """After an error the socket is open and usable: a message round-trips."""
    await send(socket, type="new_message", chat_id=chat.pk, text="still here")
    event = await receive(socket)
    assert event["type"] == "new_message" and event["message"]["text"] == "still here"


count_messages = database_sync_to_async(lambda: Message.objects.count())


@pytest.fixture
def pair_chat(user, other_user, make_chat):
    return make_chat(user, [other_user], title="pair")


# --- Handshake ------------------------------------------------------------------------------------


async def test_a_valid_access_token_opens_the_socket(ws, user):
    socket = await ws(user)

    assert await socket.receive_nothing(timeout=0.1)


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c"])
async def test_a_missing_or_invalid_token_closes_with_4401(ws, token):
    socket = await ws(token=token, connected=False)

    await socket.connect()
    await expect_closed(socket, 4401)


async def test_an_expired_token_closes_with_4401(ws, user):
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=-timedelta(seconds=1))
    socket = await ws(token=str(token), connected=False)

    await socket.connect()
    await expect_closed(socket, 4401)


async def test_a_refresh_token_opens_nothing(ws, user):
    # With the blacklist app, issuing a refresh token writes its OutstandingToken row.
    refresh = await database_sync_to_async(lambda: str(RefreshToken.for_user(user)))()
    socket = await ws(token=refresh, connected=False)

    await socket.connect()
    await expect_closed(socket, 4401)


async def test_an_inactive_users_token_opens_nothing(ws, make_user):
    inactive = await database_sync_to_async(make_user)(is_active=False)
    socket = await ws(inactive, connected=False)

    await socket.connect()
    await expect_closed(socket, 4401)


async def test_a_session_cookie_without_a_token_opens_nothing(ws, client, make_user):
    staff = await database_sync_to_async(make_user)(is_staff=True, is_superuser=True)
    await database_sync_to_async(client.force_login)(staff)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    socket = await ws(token="", headers=[(b"cookie", cookie)], connected=False)

    await socket.connect()
    await expect_closed(socket, 4401)


async def test_a_foreign_browser_origin_is_refused(ws, user):
    socket = await ws(user, headers=[(b"origin", b"https://evil.example")], connected=False)

    accepted, _ = await socket.connect()

    assert not accepted


@pytest.mark.parametrize("origin", [b"http://localhost:8000", b"http://127.0.0.1:3000"])
async def test_an_allowed_origin_or_none_is_accepted(ws, user, pair_chat, origin):
    for headers in ([(b"origin", origin)], []):
        socket = await ws(user, headers=headers, connected=False)

        accepted, _ = await socket.connect()

        assert accepted, headers
        await still_works(socket, pair_chat)  # Accepted and kept: not closed with 4401 after.


async def test_ws_allowed_origins_overrides_allowed_hosts(ws, user):
    with override_settings(WS_ALLOWED_ORIGINS=["https://app.example.com"]):
        await ws(user, headers=[(b"origin", b"https://app.example.com")])
        refused = await ws(user, headers=[(b"origin", b"http://localhost")], connected=False)
        accepted, _ = await refused.connect()

    assert not accepted


# --- new_message ----------------------------------------------------------------------------------


async def test_new_message_reaches_every_member_socket_once_sender_included(
    ws, user, other_user, make_user, pair_chat
):
    outsider = await database_sync_to_async(make_user)()
    sender, receiver, stranger = await ws(user), await ws(other_user), await ws(outsider)

    await send(sender, type="new_message", chat_id=pair_chat.pk, text="hi", client_id="c-1")

    mine, theirs = await receive(sender), await receive(receiver)
    assert mine == theirs
    assert mine["type"] == "new_message"
    message = mine["message"]
    assert message["text"] == "hi" and message["client_id"] == "c-1"
    assert message["author_id"] == user.pk and message["chat_id"] == pair_chat.pk
    assert await sender.receive_nothing(timeout=0.2)
    assert await receiver.receive_nothing(timeout=0.05)
    assert await stranger.receive_nothing(timeout=0.05)
    stored = await database_sync_to_async(Message.objects.get)()
    assert stored.pk == message["id"]


async def test_text_is_stored_and_returned_verbatim(ws, user, pair_chat):
    socket = await ws(user)
    text = "  <b>not escaped</b> &amp; \n 😀  "

    await send(socket, type="new_message", chat_id=pair_chat.pk, text=text)

    assert (await receive(socket))["message"]["text"] == text


async def test_a_repeated_client_id_answers_the_original_and_tells_nobody_else(
    ws, user, other_user, pair_chat
):
    sender, receiver = await ws(user), await ws(other_user)
    await send(sender, type="new_message", chat_id=pair_chat.pk, text="one", client_id="k")
    original = await receive(sender)
    await receive(receiver)

    await send(sender, type="new_message", chat_id=pair_chat.pk, text="two", client_id="k")

    assert await receive(sender) == original
    assert await receiver.receive_nothing(timeout=0.3)
    assert await count_messages() == 1


async def test_one_sockets_messages_get_increasing_ids_in_send_order(
    ws, user, other_user, pair_chat
):
    sender, receiver = await ws(user), await ws(other_user)

    for i in range(30):
        await send(sender, type="new_message", chat_id=pair_chat.pk, text=str(i))
    seen = [(await receive(receiver))["message"] for _ in range(30)]

    assert [m["text"] for m in seen] == [str(i) for i in range(30)]
    assert [m["id"] for m in seen] == sorted(m["id"] for m in seen)


async def test_a_second_socket_of_the_same_user_gets_every_event(ws, user, other_user, pair_chat):
    laptop, phone, friend = await ws(user), await ws(user), await ws(other_user)

    await send(friend, type="new_message", chat_id=pair_chat.pk, text="to both")

    assert (await receive(laptop))["message"]["text"] == "to both"
    assert (await receive(phone))["message"]["text"] == "to both"


async def test_the_sender_gets_its_message_when_the_channel_layer_is_down(
    ws, user, other_user, pair_chat
):
    sender = await ws(user)
    layer = events.get_channel_layer()

    with mock.patch.object(layer, "group_send", side_effect=ConnectionError("redis down")):
        await send(sender, type="new_message", chat_id=pair_chat.pk, text="stored anyway")
        event = await receive(sender)

    assert event["message"]["text"] == "stored anyway"
    assert await count_messages() == 1


# --- Errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("frame", ["not json", "{", " ", "{'single': 'quotes'}"])
async def test_invalid_json_is_an_error_and_the_socket_stays_usable(ws, user, pair_chat, frame):
    socket = await ws(user)

    await socket.send_to(text_data=frame)

    await expect_error(socket, "invalid_json")
    await still_works(socket, pair_chat)


async def test_a_binary_frame_is_invalid_json(ws, user, pair_chat):
    socket = await ws(user)

    await socket.send_to(bytes_data=b"\x00\xff binary")

    await expect_error(socket, "invalid_json")
    await still_works(socket, pair_chat)


@pytest.mark.parametrize("value", [[1, 2], 42, "string", None, True])
async def test_json_that_is_not_an_object_is_a_validation_error(ws, user, pair_chat, value):
    socket = await ws(user)

    await socket.send_to(text_data=json.dumps(value))

    await expect_error(socket, "validation_error")
    await still_works(socket, pair_chat)


@pytest.mark.parametrize(
    "event_type", ["nope", None, 5, "websocket.disconnect", "chat.message", "user.membership"]
)
async def test_unknown_or_internal_types_are_unknown_type(ws, user, pair_chat, event_type):
    socket = await ws(user)

    await send(socket, type=event_type, chat_id=pair_chat.pk)

    await expect_error(socket, "unknown_type")
    await still_works(socket, pair_chat)


async def test_an_event_without_type_is_unknown_type(ws, user, pair_chat):
    socket = await ws(user)

    await send(socket, chat_id=pair_chat.pk, text="hi")

    await expect_error(socket, "unknown_type")


@pytest.mark.parametrize(
    "fields",
    [
        {"text": ""},
        {"text": "   \n "},
        {"text": "x" * 4097},
        {"text": 12},
        {"text": None},
        {"text": {"a": 1}},
        {"text": "nul \x00"},
        {},
        {"text": "ok", "client_id": ""},
        {"text": "ok", "client_id": "c" * 65},
        {"text": "ok", "client_id": 5},
    ],
    ids=lambda f: repr(f)[:30],
)
async def test_invalid_new_message_is_a_validation_error_and_stores_nothing(
    ws, user, other_user, pair_chat, fields
):
    socket, receiver = await ws(user), await ws(other_user)

    await send(socket, type="new_message", chat_id=pair_chat.pk, **fields)

    await expect_error(socket, "validation_error", type="new_message", chat_id=pair_chat.pk)
    assert await count_messages() == 0
    assert await receiver.receive_nothing(timeout=0.1)
    await still_works(socket, pair_chat)


@pytest.mark.parametrize("chat_id", ["1x", None, -1, 0, 2**63, [1]])
async def test_a_malformed_chat_id_is_a_validation_error(ws, user, pair_chat, chat_id):
    socket = await ws(user)

    await send(socket, type="new_message", chat_id=chat_id, text="hi")

    await expect_error(socket, "validation_error")
    await still_works(socket, pair_chat)


async def test_the_error_echoes_type_chat_id_and_client_id(ws, user, pair_chat):
    socket = await ws(user)

    await send(socket, type="new_message", chat_id=pair_chat.pk, text="", client_id="mine-1")

    event = await expect_error(socket, "validation_error")
    assert event["request"] == {
        "type": "new_message",
        "chat_id": pair_chat.pk,
        "client_id": "mine-1",
    }


async def test_a_4096_character_message_is_accepted(ws, user, pair_chat):
    socket = await ws(user)

    await send(socket, type="new_message", chat_id=pair_chat.pk, text="é" * 4096)

    assert len((await receive(socket))["message"]["text"]) == 4096


async def test_sending_to_a_chat_the_user_is_not_in_is_not_found(
    ws, user, other_user, make_user, make_chat, pair_chat
):
    stranger = await database_sync_to_async(make_user)()
    theirs = await database_sync_to_async(make_chat)(stranger)
    socket = await ws(user)

    for chat_id in (theirs.pk, 10**15):
        await send(socket, type="new_message", chat_id=chat_id, text="hi", client_id="x")
        await expect_error(socket, "not_found", type="new_message", chat_id=chat_id)
    await send(socket, type="typing", chat_id=theirs.pk)
    await expect_error(socket, "not_found", type="typing")
    assert await count_messages() == 0
    await still_works(socket, pair_chat)


# --- read_message ---------------------------------------------------------------------------------


async def test_a_read_tells_the_author_and_the_readers_other_sockets_only(
    ws, user, other_user, pair_chat, make_message
):
    message = await database_sync_to_async(make_message)(pair_chat, user, "read me")
    author, reader, readers_phone = await ws(user), await ws(other_user), await ws(other_user)

    await send(reader, type="read_message", chat_id=pair_chat.pk, id=message.pk)

    expected = {
        "type": "message_read",
        "chat_id": pair_chat.pk,
        "user_id": other_user.pk,
        "message_id": message.pk,
    }
    assert await receive(author) == expected
    assert await receive(readers_phone) == expected
    assert await reader.receive_nothing(timeout=0.3)
    assert await author.receive_nothing(timeout=0.05)
    cursor = await database_sync_to_async(ChatMember.objects.get)(chat=pair_chat, user=other_user)
    assert cursor.last_read_message_id == message.pk


async def test_a_read_at_or_behind_the_cursor_notifies_nobody(
    ws, user, other_user, pair_chat, make_message
):
    first = await database_sync_to_async(make_message)(pair_chat, user, "1")
    second = await database_sync_to_async(make_message)(pair_chat, user, "2")
    author, reader = await ws(user), await ws(other_user)
    await send(reader, type="read_message", chat_id=pair_chat.pk, id=second.pk)
    await receive(author)

    await send(reader, type="read_message", chat_id=pair_chat.pk, id=first.pk)
    await send(reader, type="read_message", chat_id=pair_chat.pk, id=second.pk)

    assert await author.receive_nothing(timeout=0.3)
    assert await reader.receive_nothing(timeout=0.05)


async def test_reading_a_message_of_another_chat_is_not_found(
    ws, user, pair_chat, make_chat, make_message
):
    elsewhere = await database_sync_to_async(make_chat)(user)
    foreign = await database_sync_to_async(make_message)(elsewhere, user)
    socket = await ws(user)

    await send(socket, type="read_message", chat_id=pair_chat.pk, id=foreign.pk)

    await expect_error(socket, "not_found", type="read_message", chat_id=pair_chat.pk)
    await still_works(socket, pair_chat)


@pytest.mark.parametrize("fields", [{}, {"id": "x"}, {"id": 0}, {"id": None}])
async def test_a_malformed_read_is_a_validation_error(ws, user, pair_chat, fields):
    socket = await ws(user)

    await send(socket, type="read_message", chat_id=pair_chat.pk, **fields)

    await expect_error(socket, "validation_error", type="read_message")


# --- typing ---------------------------------------------------------------------------------------


async def test_typing_reaches_other_members_but_not_the_typer(ws, user, other_user, pair_chat):
    typer, typers_phone, friend = await ws(user), await ws(user), await ws(other_user)

    await send(typer, type="typing", chat_id=pair_chat.pk)

    assert await receive(friend) == {"type": "typing", "chat_id": pair_chat.pk, "user_id": user.pk}
    assert await typer.receive_nothing(timeout=0.2)
    assert await typers_phone.receive_nothing(timeout=0.05)
    assert await count_messages() == 0


# --- Live membership ------------------------------------------------------------------------------

on_db = database_sync_to_async


async def receive_all(socket, seconds: float = 0.4) -> list[dict]:
    """Every event that arrives within `seconds` (after the last one)."""
    frames = []
    while not await socket.receive_nothing(timeout=seconds):
        frames.append(await receive(socket))
    return frames


async def test_a_member_added_while_connected_gets_the_chat_then_its_events(
    ws, user, other_user, make_chat
):
    chat = await on_db(make_chat)(user)
    newcomer = await ws(other_user)
    sender = await ws(user)

    await on_db(services.chat_members_add)(actor=user, chat_id=chat.pk, user_ids=[other_user.pk])
    updated = await receive(newcomer)
    await send(sender, type="new_message", chat_id=chat.pk, text="welcome")

    assert updated["type"] == "chat_updated"
    assert updated["chat"]["id"] == chat.pk
    assert [m["id"] for m in updated["chat"]["members"]] == [user.pk, other_user.pk]
    assert set(updated["chat"]) == {
        "id",
        "title",
        "members",
        "created_at",
        "kind",
        "owner_id",
        "seq",
    }
    assert (await receive(sender))["type"] == "chat_updated"  # The owner's view changed too.
    assert (await receive(newcomer))["message"]["text"] == "welcome"
    await receive(sender)
    await send(newcomer, type="typing", chat_id=chat.pk)
    assert (await receive(sender))["type"] == "typing"


async def test_a_message_sent_right_after_a_join_is_not_missed(ws, user, other_user, make_chat):
    chat = await on_db(make_chat)(user)
    newcomer = await ws(other_user)
    sender = await ws(user)

    # No pause: the message may commit before the socket has subscribed to the chat.
    await on_db(chat.members.add)(other_user)
    await send(sender, type="new_message", chat_id=chat.pk, text="right away")

    frames = await receive_all(newcomer)
    assert [f["type"] for f in frames] == ["chat_updated", "new_message"]
    assert frames[1]["message"]["text"] == "right away"


async def test_a_removed_member_gets_chat_removed_then_nothing_of_the_chat(
    ws, user, other_user, pair_chat
):
    leaver, sender = await ws(other_user), await ws(user)

    # No pause between the removal and the messages that follow it.
    await on_db(services.chat_member_remove)(
        actor=user, chat_id=pair_chat.pk, user_id=other_user.pk
    )
    for i in range(5):
        await send(sender, type="new_message", chat_id=pair_chat.pk, text=f"after you left {i}")
        await send(sender, type="typing", chat_id=pair_chat.pk)

    assert await receive_all(leaver) == [{"type": "chat_removed", "chat_id": pair_chat.pk}]
    await send(leaver, type="new_message", chat_id=pair_chat.pk, text="let me in")
    await expect_error(leaver, "not_found")
    await send(leaver, type="typing", chat_id=pair_chat.pk)
    await expect_error(leaver, "not_found")


async def test_a_removal_whose_announcement_was_lost_still_stops_every_event(
    ws, user, other_user, pair_chat
):
    """The gate reads the membership again when a change carries a newer revision, so a
    socket that never heard of its removal still gets nothing committed after it."""
    leaver, sender = await ws(other_user), await ws(user)
    with mock.patch.object(events, "membership_changed"):  # The hint is lost.
        await on_db(pair_chat.members.remove)(other_user)

    await send(sender, type="new_message", chat_id=pair_chat.pk, text="secret")

    assert await receive_all(leaver) == [{"type": "chat_removed", "chat_id": pair_chat.pk}]
    sent = [f for f in await receive_all(sender) if f["type"] == "new_message"]
    assert [f["message"]["text"] for f in sent] == ["secret"]


async def test_membership_changes_apply_in_the_order_they_were_made(
    ws, user, other_user, make_chat
):
    chat = await on_db(make_chat)(user)
    flapper, sender = await ws(other_user), await ws(user)

    def add_remove_add_remove() -> None:
        for _ in range(2):
            chat.members.add(other_user)
            chat.members.remove(other_user)

    await on_db(add_remove_add_remove)()
    await send(sender, type="new_message", chat_id=chat.pk, text="you are out")

    frames = await receive_all(flapper)
    assert all(frame["type"] in {"chat_updated", "chat_removed"} for frame in frames)
    assert frames == [] or frames[-1]["type"] == "chat_removed"
    await send(flapper, type="new_message", chat_id=chat.pk, text="let me in")
    await expect_error(flapper, "not_found")


async def test_a_member_removed_and_added_back_misses_what_was_said_meanwhile(
    ws, user, other_user, pair_chat
):
    returner, sender = await ws(other_user), await ws(user)

    await on_db(pair_chat.members.remove)(other_user)
    await on_db(services.message_send)(author=user, chat_id=pair_chat.pk, text="behind your back")
    await on_db(pair_chat.members.add)(other_user)
    await send(sender, type="new_message", chat_id=pair_chat.pk, text="welcome back")

    frames = await receive_all(returner)
    texts = [f["message"]["text"] for f in frames if "message" in f]
    assert texts == ["welcome back"], frames


async def test_a_sender_never_gets_its_message_twice_right_after_creating_a_chat(
    ws, user, other_user
):
    socket = await ws(user)

    for round_ in range(10):
        chat = await on_db(services.chat_create)(creator=user, member_ids=[other_user.pk])
        await send(socket, type="new_message", chat_id=chat.pk, text=f"first {round_}")
        frames = [await receive(socket)]
        while frames[-1]["type"] != "new_message":
            frames.append(await receive(socket))
        frames += await receive_all(socket, seconds=0.25)

        kinds = [frame["type"] for frame in frames]
        assert kinds == ["chat_updated", "new_message"], (round_, frames)


async def test_a_rename_and_an_owner_leaving_reach_every_member(
    ws, user, other_user, make_user, make_chat
):
    third = await on_db(make_user)()
    chat = await on_db(make_chat)(user, [other_user, third])
    owner, heir, bystander = await ws(user), await ws(other_user), await ws(third)

    await on_db(services.chat_rename)(actor=user, chat_id=chat.pk, title="Renamed")
    for socket in (owner, heir, bystander):
        event = await receive(socket)
        assert (event["type"], event["chat"]["title"]) == ("chat_updated", "Renamed")

    await on_db(services.chat_leave)(user=user, chat_id=chat.pk)

    assert await receive_all(owner) == [{"type": "chat_removed", "chat_id": chat.pk}]
    for socket in (heir, bystander):
        event = await receive(socket)
        assert event["type"] == "chat_updated"
        assert event["chat"]["owner_id"] == other_user.pk
        assert [m["id"] for m in event["chat"]["members"]] == [other_user.pk, third.pk]


async def test_a_direct_chat_is_announced_to_both_sides(ws, user, other_user):
    mine, theirs = await ws(user), await ws(other_user)

    chat, _ = await on_db(services.chat_direct_open)(user=user, other_id=other_user.pk)

    for socket in (mine, theirs):
        event = await receive(socket)
        assert event["type"] == "chat_updated"
        assert (event["chat"]["id"], event["chat"]["kind"]) == (chat.pk, "direct")


# --- Changes: edits, deletions, reactions ---------------------------------------------------------


async def test_changes_reach_every_socket_in_seq_order_the_actors_included(
    ws, user, other_user, pair_chat, make_message
):
    message = await on_db(make_message)(pair_chat, user, "typo")
    author, friend = await ws(user), await ws(other_user)

    await on_db(services.message_edit)(
        editor=user, chat_id=pair_chat.pk, message_id=message.pk, text="fixed"
    )
    await on_db(services.reaction_add)(
        user=other_user, chat_id=pair_chat.pk, message_id=message.pk, emoji="👍"
    )
    await send(friend, type="new_message", chat_id=pair_chat.pk, text="nice")
    friend_frames = [await receive(friend)]
    while friend_frames[-1]["type"] != "new_message":  # Sent (seq 4) before the deletion.
        friend_frames.append(await receive(friend))
    await on_db(services.message_delete)(actor=user, chat_id=pair_chat.pk, message_id=message.pk)
    friend_frames += await receive_all(friend)
    author_frames = await receive_all(author)

    assert author_frames == friend_frames
    assert [f["type"] for f in author_frames] == [
        "message_updated",
        "message_updated",
        "new_message",
        "message_updated",
    ]
    assert [f["message"]["seq"] for f in author_frames] == [2, 3, 4, 5]
    edited, reacted, _, deleted = (f["message"] for f in author_frames)
    assert (edited["text"], edited["edited_at"] is not None) == ("fixed", True)
    assert reacted["reactions"] == {"👍": [other_user.pk]}
    assert (deleted["deleted"], deleted["text"], deleted["reactions"]) == (True, "", {})


async def test_a_lost_broadcast_of_an_edit_is_filled_from_the_database(
    ws, user, other_user, pair_chat, make_message
):
    message = await on_db(make_message)(pair_chat, user, "one")
    friend = await ws(other_user)
    real_publish = events._publish

    def lose_the_edit(group, payload, **kwargs):
        if payload.get("type") == "chat.change" and not payload["new"]:
            return  # Redis dropped it.
        real_publish(group, payload, **kwargs)

    with mock.patch.object(events, "_publish", lose_the_edit):
        await on_db(services.message_edit)(
            editor=user, chat_id=pair_chat.pk, message_id=message.pk, text="edited"
        )
    await on_db(services.message_send)(author=user, chat_id=pair_chat.pk, text="two")

    frames = await receive_all(friend, seconds=0.8)
    assert [(f["type"], f["message"]["seq"]) for f in frames] == [
        ("message_updated", 2),
        ("new_message", 3),
    ]
    assert frames[0]["message"]["text"] == "edited"


# --- Limits ---------------------------------------------------------------------------------------


async def test_past_the_burst_events_are_rate_limited_and_the_socket_stays_open(
    ws, user, pair_chat
):
    with override_settings(WS_RATE_BURST=3, WS_RATE_PER_SECOND=0.001):
        socket = await ws(user)
        for _ in range(3):
            await send(socket, type="typing", chat_id=pair_chat.pk)
        await send(socket, type="new_message", chat_id=pair_chat.pk, text="too much")

        await expect_error(socket, "rate_limited")
        # Still open and still answering: the next event gets its own answer, no close.
        await send(socket, type="new_message", chat_id=pair_chat.pk, text="again", client_id="c2")
        await expect_error(socket, "rate_limited", client_id="c2")
        assert await socket.receive_nothing(timeout=0.2)
    assert await count_messages() == 0


async def test_a_frame_over_64_kib_closes_with_1009(ws, user, pair_chat):
    socket = await ws(user)

    await socket.send_to(text_data=json.dumps({"type": "new_message", "text": "x" * 70_000}))

    await expect_closed(socket, 1009)
    assert await count_messages() == 0


async def test_a_frame_just_under_the_limit_gets_a_normal_answer(ws, user, pair_chat):
    socket = await ws(user)

    await socket.send_to(text_data=json.dumps({"type": "nope", "pad": "x" * 60_000}))

    await expect_error(socket, "unknown_type")


async def test_too_many_sockets_for_one_user_are_refused_with_4429(ws, user):
    with override_settings(WS_MAX_SOCKETS_PER_USER=2):
        await ws(user)
        await ws(user)
        third = await ws(user, connected=False)
        await third.connect()

        await expect_closed(third, 4429)
