"""Browser apps on other origins: CORS for the HTTP API, and the same origins on the WebSocket."""

from __future__ import annotations

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

APP = "https://app.example.com"


def preflight(client: APIClient, origin: str, path: str = "/chats"):
    return client.options(
        path,
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type",
    )


@pytest.mark.django_db
def test_a_preflight_from_an_allowed_origin_allows_the_token_header(api_client, settings):
    settings.CORS_ALLOWED_ORIGINS = [APP]

    response = preflight(api_client, APP)

    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == APP
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    allowed_headers = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed_headers and "content-type" in allowed_headers
    # Tokens travel in a header: cookies are never offered to other origins.
    assert "Access-Control-Allow-Credentials" not in response.headers


@pytest.mark.django_db
@pytest.mark.parametrize(
    "allowed, origin",
    [([], APP), ([APP], "https://evil.example"), ([APP], "http://app.example.com")],
    ids=["none allowed (default)", "another origin", "another scheme"],
)
def test_other_origins_get_no_cors_headers(api_client, settings, allowed, origin):
    settings.CORS_ALLOWED_ORIGINS = allowed

    answers = [preflight(api_client, origin), api_client.get("/users/me", HTTP_ORIGIN=origin)]

    for response in answers:
        assert "Access-Control-Allow-Origin" not in response.headers


def test_cors_allowed_origins_is_empty_by_default(settings):
    assert settings.CORS_ALLOWED_ORIGINS == []


@pytest.mark.django_db
def test_an_allowed_origins_api_answers_carry_the_cors_header(client_for, user, settings):
    settings.CORS_ALLOWED_ORIGINS = [APP]

    ok = client_for(user).get("/users/me", HTTP_ORIGIN=APP)
    refused = APIClient().get("/users/me", HTTP_ORIGIN=APP)  # The app can read the 401 too.

    assert ok.status_code == 200 and ok.headers["Access-Control-Allow-Origin"] == APP
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"] == APP


async def test_a_cors_origin_may_open_the_websocket_next_to_the_default_hosts(ws, user):
    with override_settings(CORS_ALLOWED_ORIGINS=[APP]):
        await ws(user, headers=[(b"origin", APP.encode())])
        await ws(user, headers=[(b"origin", b"http://localhost:8000")])  # ALLOWED_HOSTS still.
        foreign = await ws(user, headers=[(b"origin", b"https://evil.example")], connected=False)
        assert not (await foreign.connect())[0]


async def test_a_cors_origin_is_added_to_ws_allowed_origins_too(ws, user):
    with override_settings(
        WS_ALLOWED_ORIGINS=["https://chat.example.com"], CORS_ALLOWED_ORIGINS=[APP]
    ):
        await ws(user, headers=[(b"origin", APP.encode())])
        await ws(user, headers=[(b"origin", b"https://chat.example.com")])
        localhost = await ws(user, headers=[(b"origin", b"http://localhost")], connected=False)
        assert not (await localhost.connect())[0]


async def test_without_cors_origins_another_origin_cannot_open_the_websocket(ws, user):
    socket = await ws(user, headers=[(b"origin", APP.encode())], connected=False)

    assert not (await socket.connect())[0]
