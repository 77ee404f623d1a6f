"""Finding people: GET /users?search= (case-insensitive prefix, active users, by username)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(make_user):
    names = ["alice", "Alicia", "alistair", "ALBERT", "bob", "malice"]
    users = {name: make_user(name) for name in names}
    users["alina (gone)"] = make_user("alina", is_active=False)
    return users


def names(response) -> list[str]:
    return [user["username"] for user in response.json()["results"]]


@pytest.mark.parametrize("path", ["/users", "/users/"])
def test_search_is_a_case_insensitive_prefix_of_active_users_by_username(auth_client, people, path):
    response = auth_client.get(path, {"search": "aL"})

    assert response.status_code == 200
    assert names(response) == ["ALBERT", "alice", "Alicia", "alistair"]
    assert response.json()["next"] is None
    assert set(response.json()["results"][0]) == {"id", "username"}


def test_search_pages_walk_every_match_once(auth_client, people):
    seen, url, pages = [], "/users?search=al&limit=1", 0
    while url:
        body = auth_client.get(url).json()
        seen += [user["username"] for user in body["results"]]
        url, pages = body["next"], pages + 1

    assert seen == ["ALBERT", "alice", "Alicia", "alistair"] and pages == 4


def test_search_of_special_characters_matches_them_literally(auth_client, make_user):
    make_user("a_b")
    make_user("axb")
    make_user("50%off")

    assert names(auth_client.get("/users", {"search": "a_"})) == ["a_b"]
    assert names(auth_client.get("/users", {"search": "50%"})) == ["50%off"]


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"search": ""},
        {"search": "a", "limit": 0},
        {"search": "a", "limit": 51},
        {"search": "a", "limit": "x"},
        {"search": "a", "cursor": "garbage"},
        {"search": "x" * 151},
        {"search": "nul\x00"},
    ],
)
def test_bad_searches_are_400_with_the_field_named(auth_client, query):
    response = auth_client.get("/users", query)

    assert response.status_code == 400
    assert response.json()


def test_search_needs_a_token(api_client):
    assert api_client.get("/users", {"search": "a"}).status_code == 401


def test_search_is_throttled_per_user(auth_client, client_for, other_user, throttle_rates):
    throttle_rates["user_search"] = "2/min"

    statuses = [auth_client.get("/users", {"search": "a"}).status_code for _ in range(3)]
    others = client_for(other_user).get("/users", {"search": "a"}).status_code

    assert statuses == [200, 200, 429] and others == 200


def test_search_is_one_query_whatever_the_number_of_matches(auth_client, people, make_user):
    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert auth_client.get("/users", {"search": "a", "limit": 50}).status_code == 200
        return len(ctx.captured_queries)

    few = count()
    for n in range(30):
        make_user(f"another{n}")

    assert count() == few
