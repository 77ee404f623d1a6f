"""Forged, stolen and stale credentials, tried on both transports: every one is refused.

Each attack token is tried on an authenticated HTTP endpoint (401) and on the WebSocket
(refused, or closed with 4401 before any event). The session cookie of a logged-in admin must
open neither: only an access token authenticates.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jwt
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts.models import User
from chatproject.devkey import PUBLIC_DEVELOPMENT_KEY as DEV_SECRET_KEY
from conftest import PASSWORD, access_token
from tests_adversarial.sockets import next_output

pytestmark = pytest.mark.django_db(transaction=True)


def _b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")
    decode = lambda part: json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # noqa: E731
    return decode(header), decode(payload), signature


def _unsigned(token: str, alg: str) -> str:
    """The same claims under an `alg: none`-style header, with no signature."""
    header, payload, _ = _parts(token)
    return f"{_b64({**header, 'alg': alg})}.{_b64(payload)}."


def _tampered_signature(token: str) -> str:
    head, payload, signature = token.split(".")
    flipped = ("A" if signature[5] != "A" else "B").join((signature[:5], signature[6:]))
    return f"{head}.{payload}.{flipped}"


def _claims_changed(token: str, **changes: Any) -> str:
    """Claims edited, original signature kept (a forged identity)."""
    header, payload, signature = _parts(token)
    return f"{_b64(header)}.{_b64({**payload, **changes})}.{signature}"


def _signed_with(token: str, key: str, algorithm: str = "HS256") -> str:
    _, payload, _ = _parts(token)
    return jwt.encode(payload, key, algorithm=algorithm)


def _attack_tokens(victim: User, intruder: User) -> dict[str, str]:
    """Every token here names a real user and must still open nothing."""
    good = access_token(victim)
    expired = AccessToken.for_user(victim)
    expired.set_exp(lifetime=-timedelta(seconds=1))
    return {
        "alg none": _unsigned(good, "none"),
        "alg None": _unsigned(good, "None"),
        "alg NONE": _unsigned(good, "NONE"),
        "alg none with signature": _unsigned(good, "none") + good.split(".")[2],
        "tampered signature": _tampered_signature(good),
        "no signature": good.rsplit(".", 1)[0] + ".",
        "identity swapped, signature kept": _claims_changed(
            access_token(intruder), user_id=str(victim.pk)
        ),
        "expiry extended, signature kept": _claims_changed(good, exp=4_000_000_000),
        "signed with SECRET_KEY": _signed_with(good, settings.SECRET_KEY),
        "signed with the development key": _signed_with(good, DEV_SECRET_KEY),
        "signed with HS512 and the real key": _signed_with(
            good, settings.SIMPLE_JWT["SIGNING_KEY"], "HS512"
        ),
        "expired": str(expired),
        "refresh token": str(RefreshToken.for_user(victim)),
        "refresh token relabelled access": _claims_changed(
            str(RefreshToken.for_user(victim)), token_type="access"
        ),
        "garbage": "not-a-token",
        "two tokens": f"{good} {good}",
    }


@pytest.fixture
def victim(make_user: Callable[..., User]) -> User:
    return make_user(is_staff=True, is_superuser=True)


@pytest.fixture
def intruder(make_user: Callable[..., User]) -> User:
    return make_user()


async def _ws_refused(ws: Callable, token: str, headers: list | None = None) -> None:
    """Refused at the handshake (403) or closed with 4401 before any event."""
    sock = await ws(token=token, headers=headers, connected=False)
    accepted, code = await sock.connect()
    if not accepted:
        return
    assert await next_output(sock) == {"type": "websocket.close", "code": 4401}


def _http_status(token: str, path: str = "/users/me") -> tuple[int, Any]:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = client.get(path)
    return response.status_code, response.json()


def test_the_jwt_signing_key_is_not_the_secret_key() -> None:
    key = settings.SIMPLE_JWT["SIGNING_KEY"]
    assert key and key != settings.SECRET_KEY
    assert settings.SIMPLE_JWT["ALGORITHM"] == "HS256"


async def test_forged_and_stale_tokens_are_refused_on_http_and_websocket(
    ws, victim, intruder
) -> None:
    tokens = await sync_to_async(_attack_tokens)(victim, intruder)
    for name, token in tokens.items():
        for path in ("/users/me", "/chats"):
            status, body = await sync_to_async(_http_status)(token, path)
            assert status == 401, (name, path, status, body)
            assert "username" not in json.dumps(body), (name, body)
        await _ws_refused(ws, token)
    # The honest token of the same user works on both, so the refusals above mean something.
    good = await sync_to_async(access_token)(victim)
    assert (await sync_to_async(_http_status)(good))[0] == 200
    sock = await ws(token=good)
    assert await sock.receive_nothing(timeout=0.1)


@pytest.mark.parametrize("change", ["deactivate", "delete"])
async def test_a_deactivated_or_deleted_users_tokens_stop_working(ws, victim, change) -> None:
    access = await sync_to_async(access_token)(victim)
    refresh = await sync_to_async(lambda: str(RefreshToken.for_user(victim)))()
    if change == "deactivate":
        await sync_to_async(User.objects.filter(pk=victim.pk).update)(is_active=False)
    else:
        await sync_to_async(User.objects.filter(pk=victim.pk).delete)()
    status, _ = await sync_to_async(_http_status)(access)
    assert status == 401
    await _ws_refused(ws, access)
    # Nor can the refresh token mint a new access token for them.
    response = await sync_to_async(APIClient().post)(
        "/users/token/refresh", {"refresh": refresh}, format="json"
    )
    assert response.status_code == 401, response.json()


def test_refresh_refuses_forged_tokens(victim, intruder) -> None:
    refresh = str(RefreshToken.for_user(victim))
    for token in (
        _unsigned(refresh, "none"),
        _tampered_signature(refresh),
        _signed_with(refresh, settings.SECRET_KEY),
        access_token(victim),
    ):
        response = APIClient().post("/users/token/refresh", {"refresh": token}, format="json")
        assert response.status_code == 401, (token, response.json())
        assert "access" not in response.json()


async def test_an_admin_session_cookie_opens_neither_the_api_nor_the_socket(
    ws, victim, client
) -> None:
    """An admin logged into /admin/ in the same browser: the cookie must not authenticate
    (cross-site WebSocket hijacking, CSRF on the API)."""
    logged_in = await sync_to_async(client.login)(username=victim.username, password=PASSWORD)
    assert logged_in
    admin_page = await sync_to_async(client.get)("/admin/")
    assert admin_page.status_code == 200  # The session is real.
    for path in ("/users/me", "/chats"):
        response = await sync_to_async(client.get)(path)
        assert response.status_code == 401, response.content
    sent = await sync_to_async(client.post)(
        "/chats", {"title": "csrf"}, content_type="application/json"
    )
    assert sent.status_code == 401
    cookie = "; ".join(f"{name}={morsel.value}" for name, morsel in client.cookies.items())
    headers = [(b"cookie", cookie.encode()), (b"origin", b"http://127.0.0.1")]
    await _ws_refused(ws, "", headers)
    await _ws_refused(ws, "garbage", headers)


def test_login_answers_one_401_for_unknown_user_wrong_password_and_inactive_user(
    api_client, make_user
) -> None:
    make_user("alice")
    make_user("bob", is_active=False)
    answers = [
        api_client.post("/users/login", body, format="json")
        for body in (
            {"username": "nobody-by-this-name", "password": PASSWORD},
            {"username": "alice", "password": PASSWORD + "x"},
            {"username": "bob", "password": PASSWORD},
            {"username": "ALICE", "password": PASSWORD + "x"},
        )
    ]
    assert {response.status_code for response in answers} == {401}
    assert len({response.content for response in answers}) == 1
    assert len({response.headers.get("WWW-Authenticate") for response in answers}) == 1
