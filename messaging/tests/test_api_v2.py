"""HTTP API of v2: chat ownership and members, direct chats, message changes, `since_seq`."""

from __future__ import annotations

import asyncio
import urllib.parse

import pytest

from messaging.models import Chat, ChatMember, Message, Reaction

pytestmark = pytest.mark.django_db

NOT_FOUND = {"detail": "Not found."}


@pytest.fixture
def trio(user, other_user, make_user, make_chat):
    """A group chat owned by `user`, with `other_user` and a third member."""
    third = make_user()
    return make_chat(user, [other_user, third], title="trio"), third


def member_ids(chat: Chat) -> set[int]:
    return set(ChatMember.objects.filter(chat=chat).values_list("user_id", flat=True))


# --- PATCH /chats/{id} ----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/"])
def test_the_owner_renames_the_chat(auth_client, trio, suffix):
    chat, _ = trio

    response = auth_client.patch(f"/chats/{chat.pk}{suffix}", {"title": "new"}, format="json")

    assert response.status_code == 200
    assert response.json()["title"] == "new"
    assert "unread_count" in response.json()  # A Chat, as GET /chats/{id} answers.


def test_another_member_may_not_rename_and_a_stranger_learns_nothing(
    client_for, other_user, make_user, trio
):
    chat, _ = trio

    member = client_for(other_user).patch(f"/chats/{chat.pk}", {"title": "x"}, format="json")
    stranger = client_for(make_user())
    hidden = stranger.patch(f"/chats/{chat.pk}", {"title": "x"}, format="json")
    missing = stranger.patch(f"/chats/{chat.pk + 1000}", {"title": "x"}, format="json")

    assert member.status_code == 403 and set(member.json()) == {"detail"}
    assert (hidden.status_code, hidden.content) == (missing.status_code, missing.content)
    assert hidden.json() == NOT_FOUND
    assert Chat.objects.get(pk=chat.pk).title == "trio"


@pytest.mark.parametrize("body", [{"title": "x" * 201}, {"title": 5}, {"title": None}, []])
def test_a_bad_title_is_a_400(auth_client, trio, body):
    chat, _ = trio

    response = auth_client.patch(f"/chats/{chat.pk}", body, format="json")

    assert response.status_code == 400 and response.json()
    assert Chat.objects.get(pk=chat.pk).title == "trio"


def test_put_on_a_chat_is_405(auth_client, trio):
    chat, _ = trio

    assert auth_client.put(f"/chats/{chat.pk}", {"title": "x"}, format="json").status_code == 405


# --- POST /chats/{id}/members ---------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/"])
def test_the_owner_adds_members_and_present_ones_are_ignored(
    auth_client, user, other_user, make_user, trio, suffix
):
    chat, third = trio
    newcomer = make_user()

    response = auth_client.post(
        f"/chats/{chat.pk}/members{suffix}",
        {"user_ids": [newcomer.pk, other_user.pk, newcomer.pk]},
        format="json",
    )

    assert response.status_code == 200
    assert {m["id"] for m in response.json()["members"]} == {
        user.pk,
        other_user.pk,
        third.pk,
        newcomer.pk,
    }


@pytest.mark.parametrize(
    "user_ids",
    [
        "unknown",
        "inactive",
        [],
        ["1"],
        [1.5],
        [0],
        [-3],
        [2**63],
        None,
        "x",
        list(range(1, 1100)),
    ],
    ids=repr,
)
def test_bad_member_lists_are_400_naming_the_field_and_change_nothing(
    auth_client, make_user, trio, user_ids
):
    chat, _ = trio
    if user_ids == "unknown":
        user_ids = [make_user().pk, 10**12]
    elif user_ids == "inactive":
        user_ids = [make_user(is_active=False).pk]
    before = member_ids(chat)

    response = auth_client.post(f"/chats/{chat.pk}/members", {"user_ids": user_ids}, format="json")

    assert response.status_code == 400
    assert "user_ids" in response.json()
    assert member_ids(chat) == before


def test_a_missing_member_list_is_400(auth_client, trio):
    chat, _ = trio

    response = auth_client.post(f"/chats/{chat.pk}/members", {}, format="json")

    assert response.status_code == 400 and "user_ids" in response.json()


def test_past_chat_max_members_is_400(auth_client, make_user, trio, settings):
    chat, _ = trio
    settings.CHAT_MAX_MEMBERS = 4

    response = auth_client.post(
        f"/chats/{chat.pk}/members",
        {"user_ids": [make_user().pk, make_user().pk]},
        format="json",
    )

    assert response.status_code == 400 and "user_ids" in response.json()
    assert len(member_ids(chat)) == 3


def test_only_the_owner_adds_members(client_for, other_user, make_user, trio):
    chat, _ = trio

    response = client_for(other_user).post(
        f"/chats/{chat.pk}/members", {"user_ids": [make_user().pk]}, format="json"
    )

    assert response.status_code == 403
    assert len(member_ids(chat)) == 3


# --- DELETE /chats/{id}/members/{user_id} and POST /chats/{id}/leave ------------------------------


def test_the_owner_removes_anyone_and_a_member_themselves(
    auth_client, client_for, user, other_user, trio
):
    chat, third = trio

    by_owner = auth_client.delete(f"/chats/{chat.pk}/members/{third.pk}")
    by_self = client_for(other_user).delete(f"/chats/{chat.pk}/members/{other_user.pk}/")

    assert (by_owner.status_code, by_self.status_code) == (204, 204)
    assert member_ids(chat) == {user.pk}


def test_a_member_may_not_remove_another_and_a_non_member_is_404(
    auth_client, client_for, user, other_user, make_user, trio
):
    chat, third = trio

    forbidden = client_for(other_user).delete(f"/chats/{chat.pk}/members/{third.pk}")
    not_member = auth_client.delete(f"/chats/{chat.pk}/members/{make_user().pk}")
    huge = auth_client.delete(f"/chats/{chat.pk}/members/{2**64}")

    assert forbidden.status_code == 403
    assert not_member.status_code == 404 and huge.status_code == 404
    assert len(member_ids(chat)) == 3


@pytest.mark.parametrize("suffix", ["", "/"])
def test_an_owner_who_leaves_hands_the_chat_to_the_earliest_member(
    auth_client, client_for, user, other_user, trio, suffix
):
    chat, third = trio

    assert auth_client.post(f"/chats/{chat.pk}/leave{suffix}").status_code == 204

    view = client_for(other_user).get(f"/chats/{chat.pk}").json()
    assert view["owner_id"] == min(other_user.pk, third.pk)
    assert auth_client.get(f"/chats/{chat.pk}").status_code == 404


def test_leaving_a_chat_you_are_not_in_is_404(client_for, make_user, trio):
    chat, _ = trio

    assert client_for(make_user()).post(f"/chats/{chat.pk}/leave").json() == NOT_FOUND


# --- POST /chats/direct ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/"])
def test_a_direct_chat_is_201_the_first_time_and_200_after_from_either_side(
    auth_client, client_for, user, other_user, suffix
):
    first = auth_client.post(f"/chats/direct{suffix}", {"user_id": other_user.pk}, format="json")
    again = auth_client.post("/chats/direct", {"user_id": other_user.pk}, format="json")
    theirs = client_for(other_user).post("/chats/direct", {"user_id": user.pk}, format="json")

    assert (first.status_code, again.status_code, theirs.status_code) == (201, 200, 200)
    body = first.json()
    assert body["id"] == again.json()["id"] == theirs.json()["id"]
    assert (body["kind"], body["title"], body["owner_id"]) == ("direct", "", None)
    assert {m["id"] for m in body["members"]} == {user.pk, other_user.pk}
    listed = auth_client.get("/chats").json()["results"]
    assert [(chat["id"], chat["kind"]) for chat in listed] == [(body["id"], "direct")]


@pytest.mark.parametrize(
    "body",
    [
        "self",
        "unknown",
        "inactive",
        {},
        {"user_id": "x"},
        {"user_id": None},
        {"user_id": 0},
        {"user_id": 2**63},
        {"user_id": [1]},
    ],
    ids=repr,
)
def test_a_bad_direct_chat_is_400_naming_the_field(auth_client, user, make_user, body):
    if body == "self":
        body = {"user_id": user.pk}
    elif body == "unknown":
        body = {"user_id": 10**12}
    elif body == "inactive":
        body = {"user_id": make_user(is_active=False).pk}

    response = auth_client.post("/chats/direct", body, format="json")

    assert response.status_code == 400 and "user_id" in response.json()
    assert not Chat.objects.exists()


def test_a_direct_chat_cannot_be_renamed_added_to_left_or_lose_members(
    auth_client, user, other_user, make_user
):
    chat_id = auth_client.post("/chats/direct", {"user_id": other_user.pk}, format="json").json()[
        "id"
    ]

    answers = [
        auth_client.patch(f"/chats/{chat_id}", {"title": "x"}, format="json"),
        auth_client.post(
            f"/chats/{chat_id}/members", {"user_ids": [make_user().pk]}, format="json"
        ),
        auth_client.post(f"/chats/{chat_id}/leave"),
        auth_client.delete(f"/chats/{chat_id}/members/{other_user.pk}"),
        auth_client.delete(f"/chats/{chat_id}/members/{user.pk}"),
    ]

    assert [answer.status_code for answer in answers] == [400] * 5
    assert all("detail" in answer.json() for answer in answers)
    assert ChatMember.objects.filter(chat_id=chat_id).count() == 2


def test_chat_creation_is_throttled_per_user(auth_client, other_user, throttle_rates):
    throttle_rates["chat_create"] = "2/min"

    statuses = [
        auth_client.post("/chats", {}, format="json").status_code,
        auth_client.post("/chats/direct", {"user_id": other_user.pk}, format="json").status_code,
        auth_client.post("/chats", {}, format="json").status_code,
    ]

    assert statuses == [201, 201, 429]


# --- Message changes ------------------------------------------------------------------------------


@pytest.fixture
def posted(user, other_user, make_chat, make_message):
    chat = make_chat(user, [other_user])
    return chat, make_message(chat, user, "original")


def reactions_path(chat: Chat, message: Message, emoji: str) -> str:
    return f"/chats/{chat.pk}/messages/{message.pk}/reactions/{urllib.parse.quote(emoji)}"


@pytest.mark.parametrize("suffix", ["", "/"])
def test_the_author_edits_a_message(auth_client, posted, suffix):
    chat, message = posted

    response = auth_client.patch(
        f"/chats/{chat.pk}/messages/{message.pk}{suffix}", {"text": " edited "}, format="json"
    )

    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["text"], body["seq"]) == (message.pk, " edited ", 2)
    assert (
        body["edited_at"] is not None
        and body["created_at"]
        == auth_client.get(f"/chats/{chat.pk}/messages").json()["results"][0]["created_at"]
    )


@pytest.mark.parametrize(
    "body",
    [{"text": ""}, {"text": "  "}, {"text": "x" * 4097}, {"text": "a\x00"}, {"text": 3}, {}],
)
def test_an_edit_follows_the_rules_of_a_new_messages_text(auth_client, posted, body):
    chat, message = posted

    response = auth_client.patch(f"/chats/{chat.pk}/messages/{message.pk}", body, format="json")

    assert response.status_code == 400 and "text" in response.json()
    assert Message.objects.get(pk=message.pk).text == "original"


def test_edits_and_deletions_of_others_are_403_and_of_strangers_404(
    client_for, other_user, make_user, posted
):
    chat, message = posted
    member, stranger = client_for(other_user), client_for(make_user())
    path = f"/chats/{chat.pk}/messages/{message.pk}"

    assert member.patch(path, {"text": "mine now"}, format="json").status_code == 403
    assert member.delete(path).status_code == 403
    hidden = stranger.patch(path, {"text": "x"}, format="json")
    missing = stranger.patch(f"/chats/{chat.pk + 99}/messages/{message.pk}", {"text": "x"})
    assert hidden.status_code == 404 and hidden.content == missing.content
    assert stranger.delete(path).status_code == 404
    assert Message.objects.get(pk=message.pk).text == "original"


def test_a_message_of_another_chat_or_that_does_not_exist_is_404(
    auth_client, user, make_chat, make_message, posted
):
    chat, _ = posted
    elsewhere = make_message(make_chat(user), user)

    for message_id in (elsewhere.pk, 10**12, 2**64):
        path = f"/chats/{chat.pk}/messages/{message_id}"
        assert auth_client.patch(path, {"text": "x"}, format="json").status_code == 404
        assert auth_client.delete(path).status_code == 404
        assert auth_client.put(f"{path}/reactions/x").status_code == 404


def test_a_deleted_message_is_a_tombstone_in_history_and_deleting_again_is_204(
    auth_client, client_for, other_user, posted
):
    chat, message = posted
    client_for(other_user).put(reactions_path(chat, message, "👍"))

    first = auth_client.delete(f"/chats/{chat.pk}/messages/{message.pk}")
    again = auth_client.delete(f"/chats/{chat.pk}/messages/{message.pk}/")

    assert (first.status_code, again.status_code) == (204, 204)
    [tombstone] = auth_client.get(f"/chats/{chat.pk}/messages").json()["results"]
    assert (tombstone["id"], tombstone["deleted"], tombstone["text"]) == (message.pk, True, "")
    assert tombstone["reactions"] == {} and tombstone["seq"] == 3
    assert auth_client.get(f"/chats/{chat.pk}").json()["last_message"] is None
    edit = auth_client.patch(
        f"/chats/{chat.pk}/messages/{message.pk}", {"text": "x"}, format="json"
    )
    assert edit.status_code == 404
    assert auth_client.put(reactions_path(chat, message, "👍")).status_code == 404


def test_the_chat_list_orders_by_the_last_message_left_standing(auth_client, user, make_chat):
    older, newer = make_chat(user, title="older"), make_chat(user, title="newer")
    first = auth_client.post(f"/chats/{older.pk}/messages", {"text": "1"}, format="json").json()
    auth_client.post(f"/chats/{newer.pk}/messages", {"text": "2"}, format="json")
    last = auth_client.post(f"/chats/{older.pk}/messages", {"text": "3"}, format="json").json()

    def listed() -> list[tuple[str, str | None]]:
        chats = auth_client.get("/chats").json()["results"]
        return [(c["title"], c["last_message"] and c["last_message"]["text"]) for c in chats]

    assert listed() == [("older", "3"), ("newer", "2")]
    auth_client.delete(f"/chats/{older.pk}/messages/{last['id']}")
    assert listed() == [("newer", "2"), ("older", "1")]  # By message 1's time now.
    auth_client.delete(f"/chats/{older.pk}/messages/{first['id']}")
    assert listed() == [("newer", "2"), ("older", None)]  # By its creation, before "newer"'s.
    assert auth_client.get(f"/chats/{older.pk}").json()["last_message"] is None


def test_deleting_a_tombstone_is_still_for_its_author_or_the_owner_only(
    auth_client, client_for, other_user, posted
):
    chat, message = posted
    path = f"/chats/{chat.pk}/messages/{message.pk}"
    assert auth_client.delete(path).status_code == 204

    again_by_a_member = client_for(other_user).delete(path)

    assert again_by_a_member.status_code == 403 and "detail" in again_by_a_member.json()
    assert auth_client.delete(path).status_code == 204


def test_the_owner_deletes_anyones_message(auth_client, client_for, other_user, posted):
    chat, _ = posted
    theirs = (
        client_for(other_user)
        .post(f"/chats/{chat.pk}/messages", {"text": "hi"}, format="json")
        .json()
    )

    assert auth_client.delete(f"/chats/{chat.pk}/messages/{theirs['id']}").status_code == 204
    assert Message.objects.get(pk=theirs["id"]).deleted


@pytest.mark.parametrize("emoji", ["👍", ":tada:", "🏳️‍🌈", "a" * 32, "+1", "%"])
def test_reactions_are_idempotent_and_shown_on_the_message(
    auth_client, client_for, user, other_user, posted, emoji
):
    chat, message = posted
    path = reactions_path(chat, message, emoji)

    answers = [auth_client.put(path), auth_client.put(path + "/"), client_for(other_user).put(path)]

    assert [answer.status_code for answer in answers] == [204, 204, 204]
    shown = auth_client.get(f"/chats/{chat.pk}/messages").json()["results"][0]
    assert shown["reactions"] == {emoji: [user.pk, other_user.pk]}
    assert auth_client.delete(path).status_code == 204
    assert auth_client.delete(path).status_code == 204  # Absent: nothing changes.
    shown = auth_client.get(f"/chats/{chat.pk}/messages").json()["results"][0]
    assert shown["reactions"] == {emoji: [other_user.pk]} and shown["seq"] == 4


@pytest.mark.parametrize(
    "raw",
    ["a%20b", "%09", "a" * 33, "%00", "%E2%80%A8"],
    ids=["space", "tab", "33 characters", "NUL", "line separator"],
)
def test_bad_emoji_are_400_and_change_nothing(auth_client, posted, raw):
    chat, message = posted

    put = auth_client.put(f"/chats/{chat.pk}/messages/{message.pk}/reactions/{raw}")
    delete = auth_client.delete(f"/chats/{chat.pk}/messages/{message.pk}/reactions/{raw}")

    assert (put.status_code, delete.status_code) == (400, 400)
    assert "emoji" in put.json()
    assert not Reaction.objects.exists() and Message.objects.get(pk=message.pk).seq == 1


def test_the_21st_different_emoji_is_400(auth_client, posted):
    chat, message = posted
    for n in range(20):
        assert auth_client.put(reactions_path(chat, message, f":e{n}:")).status_code == 204

    response = auth_client.put(reactions_path(chat, message, ":e20:"))

    assert response.status_code == 400 and "emoji" in response.json()


def test_changes_over_http_are_throttled_like_sends(auth_client, posted, throttle_rates):
    chat, message = posted
    throttle_rates["send"] = "3/min"

    statuses = [
        auth_client.put(reactions_path(chat, message, "a")).status_code,
        auth_client.delete(reactions_path(chat, message, "a")).status_code,
        auth_client.patch(
            f"/chats/{chat.pk}/messages/{message.pk}", {"text": "x"}, format="json"
        ).status_code,
        auth_client.put(reactions_path(chat, message, "a")).status_code,
    ]

    assert statuses == [204, 204, 200, 429]


# --- GET /chats/{id}/messages?since_seq= ---------------------------------------------------------


def test_since_seq_walks_every_change_in_seq_order_each_message_as_it_is_now(
    auth_client, user, make_chat, make_message
):
    chat = make_chat(user)
    messages = [make_message(chat, user, f"m{n}") for n in range(6)]
    auth_client.patch(
        f"/chats/{chat.pk}/messages/{messages[1].pk}", {"text": "m1 edited"}, format="json"
    )
    auth_client.delete(f"/chats/{chat.pk}/messages/{messages[2].pk}")
    auth_client.put(reactions_path(chat, messages[0], "👍"))

    seen, url = [], f"/chats/{chat.pk}/messages?since_seq=3&limit=2"
    while url:
        body = auth_client.get(url).json()
        seen += body["results"]
        url = body["next"]

    assert [(m["id"], m["seq"]) for m in seen] == [
        (messages[3].pk, 4),
        (messages[4].pk, 5),
        (messages[5].pk, 6),
        (messages[1].pk, 7),
        (messages[2].pk, 8),
        (messages[0].pk, 9),
    ]
    assert [m["text"] for m in seen[3:]] == ["m1 edited", "", "m0"]
    assert seen[4]["deleted"] and seen[5]["reactions"] == {
        "👍": [auth_client.get("/users/me").json()["id"]]
    }
    assert auth_client.get(f"/chats/{chat.pk}").json()["seq"] == 9
    caught_up = auth_client.get(f"/chats/{chat.pk}/messages?since_seq=9").json()
    assert caught_up == {**caught_up, "results": [], "next": None}


async def asgi_request(method: str, raw_path: bytes, token: str) -> int:
    """One request through the real ASGI application, its scope as daphne builds it: `path`
    percent-decoded with errors replaced, `raw_path` the bytes as sent. The status."""
    from chatproject.asgi import application

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": urllib.parse.unquote(raw_path.decode("ascii")),
        "raw_path": raw_path,
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost"), (b"authorization", f"Bearer {token}".encode())],
        "client": ("127.0.0.1", 1),
        "server": ("localhost", 80),
    }
    messages = iter([{"type": "http.request", "body": b"", "more_body": False}])
    statuses = []
    never = asyncio.Event()

    async def receive() -> dict:
        if (message := next(messages, None)) is not None:
            return message
        await never.wait()  # The client stays until the answer (no disconnect).
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await application(scope, receive, send)
    return statuses[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("raw", [b"%FF", b"x%C3", b"%F0%9F%91"], ids=["FF", "cut", "cut emoji"])
async def test_emoji_that_are_not_utf8_once_percent_decoded_are_400(user, other_user, raw):
    from channels.db import database_sync_to_async

    from conftest import access_token
    from messaging import services

    def setup() -> tuple[Chat, Message]:
        chat = services.chat_create(creator=user, member_ids=[other_user.pk])
        return chat, services.message_send(author=user, chat_id=chat.pk, text="hi").message

    chat, message = await database_sync_to_async(setup)()
    path = f"/chats/{chat.pk}/messages/{message.pk}/reactions/".encode() + raw

    assert await asgi_request("PUT", path, access_token(user)) == 400
    assert await asgi_request("DELETE", path, access_token(user)) == 400
    ok = f"/chats/{chat.pk}/messages/{message.pk}/reactions/%F0%9F%91%8D".encode()
    assert await asgi_request("PUT", ok, access_token(user)) == 204


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("raw", "emoji"),
    [
        (b"%2F", "/"),
        (b"a%2F", "a/"),
        (b"a%2Fb/", "a/b"),
        (b"%F0%9F%91%8D/", "\U0001f44d"),
        (b"%EF%BF%BD", "\ufffd"),  # U+FFFD sent as such, not made of bytes that are not UTF-8.
    ],
)
async def test_an_emoji_is_read_from_the_path_as_sent(user, other_user, raw, emoji):
    from channels.db import database_sync_to_async

    from conftest import access_token
    from messaging import services
    from messaging.models import Reaction

    def setup() -> tuple[Chat, Message]:
        chat = services.chat_create(creator=user, member_ids=[other_user.pk])
        return chat, services.message_send(author=user, chat_id=chat.pk, text="hi").message

    def stored() -> list[str]:
        return list(Reaction.objects.filter(message=message).values_list("emoji", flat=True))

    chat, message = await database_sync_to_async(setup)()
    path = f"/chats/{chat.pk}/messages/{message.pk}/reactions/".encode() + raw

    assert await asgi_request("PUT", path, access_token(user)) == 204
    assert await database_sync_to_async(stored)() == [emoji]
    assert await asgi_request("DELETE", path, access_token(user)) == 204
    assert await database_sync_to_async(stored)() == []
