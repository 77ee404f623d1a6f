"""HTTP API of chats and messages, errors included."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from messaging.models import Chat, ChatMember, Message

pytestmark = pytest.mark.django_db

NOT_FOUND = {"detail": "Not found."}


def bulk_messages(chat: Chat, authors: list, count: int) -> list[Message]:
    """Many messages at once, without the per-message service cost (history tests)."""
    chat.refresh_from_db()
    Message.objects.bulk_create(
        Message(chat=chat, author=authors[i % len(authors)], text=f"m{i}", seq=chat.seq + 1 + i)
        for i in range(count)
    )
    messages = list(Message.objects.filter(chat=chat).order_by("id"))
    Chat.objects.filter(pk=chat.pk).update(last_message=messages[-1], seq=messages[-1].seq)
    return messages


def walk(client, url: str) -> list[dict]:
    """Follow `next` from `url` to the end; every page's results, in order."""
    seen: list[dict] = []
    pages = 0
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content
        seen += response.json()["results"]
        url = response.json()["next"]
        pages += 1
        assert pages < 1000, "next never ends"
    return seen


# --- POST /chats ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/chats", "/chats/"])
def test_create_chat_makes_the_caller_a_member_once(auth_client, user, other_user, path):
    response = auth_client.post(
        path,
        {"title": "Plans", "member_ids": [other_user.pk, other_user.pk, user.pk]},
        format="json",
    )

    assert response.status_code == 201
    body = response.json()
    assert body["title"] == "Plans"
    assert [m["id"] for m in body["members"]] == sorted([user.pk, other_user.pk])
    assert body["last_message"] is None
    assert body["unread_count"] == 0
    assert set(body) == {
        "id",
        "title",
        "members",
        "created_at",
        "last_message",
        "unread_count",
        "kind",
        "owner_id",
        "seq",
    }
    assert (body["kind"], body["owner_id"], body["seq"]) == ("group", user.pk, 0)


def test_create_chat_with_no_body_fields_gives_an_untitled_chat_of_one(auth_client, user):
    response = auth_client.post("/chats", {}, format="json")

    assert response.status_code == 201
    assert response.json()["title"] == ""
    assert [m["id"] for m in response.json()["members"]] == [user.pk]


def test_create_chat_with_unknown_member_ids_creates_nothing(auth_client, other_user):
    response = auth_client.post("/chats", {"member_ids": [other_user.pk, 999999]}, format="json")

    assert response.status_code == 400
    assert "member_ids" in response.json()
    assert "999999" in response.json()["member_ids"][0]
    assert not Chat.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {"title": "x" * 201},
        {"title": 5},
        {"title": None},
        {"member_ids": "1"},
        {"member_ids": [0]},
        {"member_ids": [-1]},
        {"member_ids": ["a"]},
        {"member_ids": [2**63]},
        {"member_ids": [{"id": 1}]},
        [],
        "text",
    ],
    ids=repr,
)
def test_create_chat_refuses_invalid_bodies(auth_client, body):
    response = auth_client.post("/chats", body, format="json")

    assert response.status_code == 400
    assert response.json()
    assert not Chat.objects.exists()


def test_create_chat_refuses_non_json(auth_client):
    response = auth_client.post("/chats", "{", content_type="application/json")

    assert response.status_code == 400
    assert "detail" in response.json()


def test_create_chat_accepts_a_title_of_200_characters_verbatim(auth_client):
    title = " é" * 100

    response = auth_client.post("/chats", {"title": title}, format="json")

    assert response.status_code == 201
    assert response.json()["title"] == title


@pytest.mark.parametrize("method", ["get", "post"])
def test_chats_need_a_token(api_client, method):
    response = getattr(api_client, method)("/chats")

    assert response.status_code == 401
    assert "detail" in response.json()


def test_chats_refuse_unsupported_methods_with_405(auth_client):
    assert auth_client.delete("/chats").status_code == 405
    assert auth_client.put("/chats", {}, format="json").status_code == 405


# --- GET /chats and /chats/{id} -------------------------------------------------------------------


def test_list_shows_only_the_callers_chats_most_recent_activity_first(
    auth_client, user, other_user, make_chat, make_message, make_user
):
    quiet = make_chat(user, title="quiet")
    busy = make_chat(user, [other_user], title="busy")
    newest = make_chat(user, title="newest, no messages")
    make_chat(other_user, [make_user()], title="not mine")
    make_message(busy, other_user, "latest activity")

    response = auth_client.get("/chats")

    assert response.status_code == 200
    body = response.json()
    assert [chat["id"] for chat in body["results"]] == [busy.pk, newest.pk, quiet.pk]
    assert body["next"] is None
    assert body["results"][0]["last_message"]["text"] == "latest activity"


def test_list_is_paginated_with_next(auth_client, user, make_chat):
    chats = [make_chat(user, title=str(i)) for i in range(5)]

    seen = walk(auth_client, "/chats?limit=2")

    assert [chat["id"] for chat in seen] == [chat.pk for chat in reversed(chats)]


def test_list_costs_the_same_queries_for_one_chat_or_many(
    auth_client, user, other_user, make_chat, make_message, django_assert_num_queries
):
    def count_queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert auth_client.get("/chats").status_code == 200
        return len(ctx.captured_queries)

    chat = make_chat(user, [other_user])
    make_message(chat, other_user)
    one = count_queries()
    for _ in range(10):
        chat = make_chat(user, [other_user])
        make_message(chat, other_user)

    with django_assert_num_queries(one):
        response = auth_client.get("/chats")
    assert len(response.json()["results"]) == 11


def test_unread_count_counts_others_messages_after_the_cursor(
    client_for, user, other_user, make_chat, make_message
):
    chat = make_chat(user, [other_user])
    first = make_message(chat, other_user)
    make_message(chat, other_user)
    make_message(chat, user)  # Own message: not unread, and it moves the own cursor.
    make_message(chat, other_user)

    user_view = client_for(user).get(f"/chats/{chat.pk}").json()
    other_view = client_for(other_user).get(f"/chats/{chat.pk}").json()

    assert user_view["unread_count"] == 1
    assert other_view["unread_count"] == 0  # Their own last message moved their cursor.
    assert first.pk < user_view["last_message"]["id"]


def test_unread_count_of_a_member_who_read_nothing_counts_all_others_messages(
    client_for, user, other_user, make_chat, make_message
):
    chat = make_chat(user, [other_user])
    for _ in range(3):
        make_message(chat, user)

    assert client_for(other_user).get(f"/chats/{chat.pk}").json()["unread_count"] == 3


@pytest.mark.parametrize("suffix", ["", "/"])
def test_retrieve_a_chat(auth_client, user, make_chat, suffix):
    chat = make_chat(user, title="mine")

    response = auth_client.get(f"/chats/{chat.pk}{suffix}")

    assert response.status_code == 200
    assert response.json()["title"] == "mine"


@pytest.mark.parametrize("path", ["/chats/{id}", "/chats/{id}/messages"])
def test_non_member_gets_the_same_404_as_for_a_missing_chat(
    client_for, other_user, make_user, make_chat, path
):
    outsider = make_user()
    chat = make_chat(other_user)

    not_mine = client_for(outsider).get(path.format(id=chat.pk))
    missing = client_for(outsider).get(path.format(id=chat.pk + 1000))

    assert not_mine.status_code == missing.status_code == 404
    assert not_mine.json() == missing.json() == NOT_FOUND


@pytest.mark.parametrize("chat_id", ["0", "9223372036854775808", "99999999999999999999999"])
def test_out_of_range_chat_ids_are_404_not_500(auth_client, chat_id):
    assert auth_client.get(f"/chats/{chat_id}").status_code == 404
    assert auth_client.get(f"/chats/{chat_id}/messages").status_code == 404


# --- GET /chats/{id}/messages ---------------------------------------------------------------------


def test_history_is_newest_first_with_every_members_cursor(
    client_for, user, other_user, make_user, make_chat, make_message
):
    silent = make_user()
    chat = make_chat(user, [other_user, silent])
    first = make_message(chat, user, "one")
    second = make_message(chat, other_user, "two")

    response = client_for(user).get(f"/chats/{chat.pk}/messages")

    assert response.status_code == 200
    body = response.json()
    assert [m["id"] for m in body["results"]] == [second.pk, first.pk]
    assert body["results"][0] == {
        "id": second.pk,
        "chat_id": chat.pk,
        "author_id": other_user.pk,
        "text": "two",
        "created_at": second.created_at.isoformat().replace("+00:00", "Z"),
        "client_id": None,
        "seq": 2,
        "edited_at": None,
        "deleted": False,
        "reactions": {},
    }
    assert body["next"] is None
    assert sorted(body["read_cursors"], key=lambda c: c["user_id"]) == [
        {"user_id": user.pk, "message_id": first.pk},
        {"user_id": other_user.pk, "message_id": second.pk},
        {"user_id": silent.pk, "message_id": None},
    ]


def test_walking_next_returns_every_message_once_in_descending_order(
    auth_client, user, other_user, make_chat
):
    chat = make_chat(user, [other_user])
    messages = bulk_messages(chat, [user, other_user], 321)

    seen = walk(auth_client, f"/chats/{chat.pk}/messages?limit=50")

    ids = [m["id"] for m in seen]
    assert ids == sorted((m.pk for m in messages), reverse=True)
    assert len(set(ids)) == 321


def test_default_page_is_50_and_limit_200_is_allowed(auth_client, user, make_chat):
    chat = make_chat(user)
    bulk_messages(chat, [user], 210)

    default = auth_client.get(f"/chats/{chat.pk}/messages").json()
    largest = auth_client.get(f"/chats/{chat.pk}/messages?limit=200").json()

    assert len(default["results"]) == 50
    assert len(largest["results"]) == 200
    assert largest["next"] is not None


def test_after_returns_newer_messages_oldest_first_until_caught_up(auth_client, user, make_chat):
    chat = make_chat(user)
    messages = bulk_messages(chat, [user], 120)
    start = messages[9].pk

    first_page = auth_client.get(f"/chats/{chat.pk}/messages?after={start}&limit=100").json()
    seen = walk(auth_client, f"/chats/{chat.pk}/messages?after={start}&limit=25")

    assert [m["id"] for m in first_page["results"]] == [m.pk for m in messages[10:110]]
    assert first_page["next"] is not None
    assert [m["id"] for m in seen] == [m.pk for m in messages[10:]]


def test_after_the_newest_message_is_an_empty_caught_up_page(auth_client, user, make_chat):
    chat = make_chat(user)
    messages = bulk_messages(chat, [user], 3)

    body = auth_client.get(f"/chats/{chat.pk}/messages?after={messages[-1].pk}").json()

    assert body["results"] == []
    assert body["next"] is None


def test_after_zero_returns_the_whole_history_oldest_first(auth_client, user, make_chat):
    chat = make_chat(user)
    messages = bulk_messages(chat, [user], 7)

    body = auth_client.get(f"/chats/{chat.pk}/messages?after=0").json()

    assert [m["id"] for m in body["results"]] == [m.pk for m in messages]


def test_history_pages_cost_the_same_queries_whatever_their_size_or_depth(
    auth_client, user, other_user, make_chat, django_assert_num_queries
):
    chat = make_chat(user, [other_user])
    messages = bulk_messages(chat, [user, other_user], 250)

    def count(url: str) -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert auth_client.get(url).status_code == 200
        return len(ctx.captured_queries)

    small = count(f"/chats/{chat.pk}/messages?limit=1")
    for url in [
        f"/chats/{chat.pk}/messages?limit=200",
        f"/chats/{chat.pk}/messages?limit=50&before={messages[20].pk}",
        f"/chats/{chat.pk}/messages?limit=200&after=0",
        f"/chats/{chat.pk}/messages?limit=200&since_seq=17",
    ]:
        with django_assert_num_queries(small):
            auth_client.get(url)


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=-5",
        "limit=abc",
        "limit=1.5",
        "after=-1",
        "after=abc",
        "before=0",
        "before=x",
        "after=1&before=5",
        "since_seq=-1",
        "since_seq=x",
        "since_seq=3&after=2",
        "limit=5&limit=2",
        "since_seq=1&since_seq=2",
    ],
)
def test_history_refuses_bad_query_parameters(auth_client, user, make_chat, query):
    chat = make_chat(user)

    response = auth_client.get(f"/chats/{chat.pk}/messages?{query}")

    assert response.status_code == 400
    assert response.json()


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/chats/{chat}/messages?after=1&after=2", "after"),
        ("/chats?limit=5&limit=2", "limit"),
        ("/chats?cursor=a&cursor=b", "cursor"),
        ("/users?search=al&search=bo", "search"),
        ("/users?search=al&limit=1&limit=2", "limit"),
    ],
)
def test_a_parameter_given_twice_is_refused_by_name(auth_client, user, make_chat, path, name):
    chat = make_chat(user)

    response = auth_client.get(path.format(chat=chat.pk))

    assert response.status_code == 400
    assert response.json() == {name: ["Give this parameter once."]}


@pytest.mark.parametrize("bound", ["9223372036854775807", "9223372036854775808", "9" * 40])
def test_positions_larger_than_any_id_or_seq_are_fine(
    auth_client, user, make_chat, make_message, bound
):
    chat = make_chat(user)
    message = make_message(chat, user)
    path = f"/chats/{chat.pk}/messages"

    after = auth_client.get(f"{path}?after={bound}")
    since = auth_client.get(f"{path}?since_seq={bound}")
    before = auth_client.get(f"{path}?before={bound}")

    assert (after.status_code, since.status_code, before.status_code) == (200, 200, 200)
    assert after.json()["results"] == since.json()["results"] == []
    assert [m["id"] for m in before.json()["results"]] == [message.pk]


# --- POST /chats/{id}/messages (HTTP sending) and /read ------------------------------------------


def test_send_over_http_stores_the_message_and_moves_the_authors_cursor(
    auth_client, user, make_chat
):
    chat = make_chat(user)

    response = auth_client.post(f"/chats/{chat.pk}/messages", {"text": "  hi  \n"}, format="json")

    assert response.status_code == 201
    message = Message.objects.get()
    assert message.text == "  hi  \n"  # Verbatim: never trimmed.
    assert response.json()["id"] == message.pk
    assert ChatMember.objects.get(chat=chat, user=user).last_read_message_id == message.pk


def test_send_with_a_repeated_client_id_returns_the_original(auth_client, user, make_chat):
    chat = make_chat(user)
    url = f"/chats/{chat.pk}/messages"

    first = auth_client.post(url, {"text": "once", "client_id": "k1"}, format="json")
    repeat = auth_client.post(url, {"text": "different", "client_id": "k1"}, format="json")

    assert (first.status_code, repeat.status_code) == (201, 200)
    assert repeat.json() == first.json()
    assert Message.objects.count() == 1


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"text": ""},
        {"text": "   \n\t "},
        {"text": "x" * 4097},
        {"text": "nul\x00inside"},
        {"text": 5},
        {"text": None},
        {"text": ["a"]},
        {"text": "ok", "client_id": ""},
        {"text": "ok", "client_id": "c" * 65},
        {"text": "ok", "client_id": 7},
    ],
    ids=lambda body: repr(body)[:40],
)
def test_send_refuses_invalid_messages(auth_client, user, make_chat, body):
    chat = make_chat(user)

    response = auth_client.post(f"/chats/{chat.pk}/messages", body, format="json")

    assert response.status_code == 400
    assert response.json()
    assert not Message.objects.exists()


def test_send_accepts_4096_code_points(auth_client, user, make_chat):
    chat = make_chat(user)
    text = "😀" * 4096

    response = auth_client.post(f"/chats/{chat.pk}/messages", {"text": text}, format="json")

    assert response.status_code == 201
    assert Message.objects.get().text == text


def test_non_member_cannot_send(client_for, make_user, other_user, make_chat):
    chat = make_chat(other_user)

    response = client_for(make_user()).post(
        f"/chats/{chat.pk}/messages", {"text": "hi"}, format="json"
    )

    assert response.status_code == 404
    assert response.json() == NOT_FOUND
    assert not Message.objects.exists()


def test_read_moves_the_cursor_forward_only(client_for, user, other_user, make_chat, make_message):
    chat = make_chat(user, [other_user])
    first = make_message(chat, user)
    second = make_message(chat, user)
    client = client_for(other_user)

    forward = client.post(f"/chats/{chat.pk}/read", {"message_id": second.pk}, format="json")
    backward = client.post(f"/chats/{chat.pk}/read", {"message_id": first.pk}, format="json")

    assert forward.json() == {"user_id": other_user.pk, "message_id": second.pk}
    assert backward.json() == {"user_id": other_user.pk, "message_id": second.pk}


def test_read_of_a_message_of_another_chat_is_404(auth_client, user, make_chat, make_message):
    mine = make_chat(user)
    elsewhere = make_chat(user)
    foreign = make_message(elsewhere, user)

    response = auth_client.post(f"/chats/{mine.pk}/read", {"message_id": foreign.pk}, format="json")

    assert response.status_code == 404
    assert ChatMember.objects.get(chat=mine, user=user).last_read_message_id is None


# --- Docs -----------------------------------------------------------------------------------------


def test_schema_and_docs_need_no_token_and_load_nothing_from_other_hosts(api_client):
    schema = api_client.get("/api/schema")
    docs = api_client.get("/docs")

    assert schema.status_code == 200
    assert docs.status_code == 200
    page = docs.content.decode()
    assert "swagger-ui-bundle.js" in page
    assert "http://" not in page.replace("http://testserver", "")
    assert "https://" not in page


def test_sending_over_http_is_throttled_per_user(
    client_for, user, other_user, make_chat, throttle_rates
):
    chat = make_chat(user, [other_user])
    throttle_rates["send"] = "2/min"

    mine = [
        client_for(user).post(f"/chats/{chat.pk}/messages", {"text": "x"}, format="json")
        for _ in range(3)
    ]
    theirs = client_for(other_user).post(f"/chats/{chat.pk}/messages", {"text": "y"}, format="json")
    reading = client_for(user).get(f"/chats/{chat.pk}/messages")

    assert [r.status_code for r in mine] == [201, 201, 429]
    assert "detail" in mine[-1].json()
    assert theirs.status_code == 201
    assert reading.status_code == 200
    assert Message.objects.count() == 3
