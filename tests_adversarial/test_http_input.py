"""HTTP inputs that schemathesis found answered wrongly, pinned down one by one.

Each was a 200 (or a 404) where the schema promises a 400: a query parameter that is not
what it says must be refused, not silently replaced with a default.
"""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("query", ["limit=abc", "limit=0", "limit=201", "limit=", "limit=1.5"])
def test_chat_list_refuses_a_bad_limit(auth_client, query) -> None:
    response = auth_client.get(f"/chats?{query}")
    assert response.status_code == 400, response.content
    assert "limit" in response.json()


def test_chat_list_refuses_a_cursor_it_did_not_issue(auth_client) -> None:
    response = auth_client.get("/chats?cursor=not-a-cursor")
    assert response.status_code == 400
    assert response.json() == {"cursor": ["Invalid cursor"]}


def test_chat_list_limit_and_cursor_still_page(auth_client, user, make_chat) -> None:
    for n in range(3):
        make_chat(user, title=f"chat {n}")
    first = auth_client.get("/chats?limit=2").json()
    assert len(first["results"]) == 2 and first["next"]
    rest = auth_client.get(first["next"]).json()
    assert len(rest["results"]) == 1 and rest["next"] is None


@pytest.mark.parametrize("query", ["limit=", "after=", "before="])
def test_history_refuses_empty_parameters(auth_client, user, make_chat, query) -> None:
    chat = make_chat(user)
    response = auth_client.get(f"/chats/{chat.pk}/messages?{query}")
    assert response.status_code == 400, response.content


def test_every_operation_documents_its_errors(client) -> None:
    schema = client.get("/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            has_input = "requestBody" in operation or any(
                parameter["in"] == "query" for parameter in operation.get("parameters", [])
            )
            assert "400" in codes or not has_input, (method, path, codes)
            if "{id}" in path:
                assert "404" in codes, (method, path, codes)
            if operation.get("security") or path.startswith(("/users/login", "/users/token")):
                assert "401" in codes, (method, path, codes)


def test_the_schema_refuses_white_space_alone_where_the_server_does(client) -> None:
    """A trimmed string that may not be blank refuses " " and "\u00a0": its pattern says so
    (schemathesis sends what the schema allows and expects it accepted)."""
    schema = client.get("/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    bodies = schema["components"]["schemas"]
    for component, field in [
        ("LogoutRequest", "refresh"),
        ("RefreshRequest", "refresh"),
        ("LoginRequest", "username"),
    ]:
        pattern = bodies[component]["properties"][field]["pattern"]
        assert re.fullmatch(pattern, "\u00a0") is None, (component, field)
        assert re.fullmatch(pattern, " x ") is not None, (component, field)
    password = bodies["LoginRequest"]["properties"]["password"]["pattern"]
    assert re.fullmatch(password, " ") is not None  # Taken as given.


def test_the_schema_requires_an_edits_text_as_the_server_does(client) -> None:
    schema = client.get("/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    edit = schema["paths"]["/chats/{id}/messages/{message_id}/"]["patch"]["requestBody"]
    [media] = edit["content"].values()
    component = media["schema"]["$ref"].rsplit("/", 1)[-1]

    assert edit["required"] is True
    assert schema["components"]["schemas"][component]["required"] == ["text"]
    # The chat's PATCH stays partial: a field left out is left as it is.
    chat_edit = schema["paths"]["/chats/{id}/"]["patch"]["requestBody"]
    [chat_media] = chat_edit["content"].values()
    chat_component = chat_media["schema"]["$ref"].rsplit("/", 1)[-1]
    assert "required" not in schema["components"]["schemas"][chat_component]
