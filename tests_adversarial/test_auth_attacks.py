"""Forged, stolen and stale credentials, tried on both transports: every one is refused.

Each attack token is tried on an authenticated HTTP endpoint (401) and on the WebSocket
(refused, or closed with 4401 before any event). The session cookie of a logged-in admin must
open neither: only an access token authenticates. The same tokens in an in-band
`{"type": "auth"}` close the socket with 4401.

Sessions on two real instances: a password change, a logout or a deactivation through one holds
on the other at once, over HTTP and on the sockets (closed with 4401 within 2 s everywhere);
bad logouts and password changes are 4xx; forged X-Forwarded-For headers do not dodge the
per-IP login throttle, with or without a trusted proxy in front.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import itertools
import json
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import jwt
import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from accounts.models import User
from accounts.tokens import AccessToken as VersionedAccessToken
from chatproject.devkey import PUBLIC_DEVELOPMENT_KEY as DEV_SECRET_KEY
from conftest import PASSWORD, access_token
from liveserver.processes import PROJECT_DIR, DaphneServer
from tests_adversarial.live import Cluster, running_cluster
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


# --- Sessions, on two real instances ----------------------------------------------------------
# A password change, a logout or a deactivation made through one instance holds on the other at
# once (the token version and the blacklist live in PostgreSQL, checked on every request), and
# per-IP throttles count across instances and cannot be dodged with a forged X-Forwarded-For.

LIVE = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.multiprocess]
NEW_PASSWORD = "a-new-and-unusual-passphrase-9"
# Small enough to reach in a few requests; the throttle counts across both instances (Redis).
LIVE_LOGIN_RATE = "5/min"


def _request(
    instance: DaphneServer,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """(status, JSON body or None) of one request to a real instance."""
    connection = http.client.HTTPConnection(instance.host, instance.port, timeout=20)
    sent = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    try:
        connection.request(method, path, json.dumps(body) if body is not None else None, sent)
        response = connection.getresponse()
        payload = response.read()
        return response.status, json.loads(payload) if payload else None
    finally:
        connection.close()


def _redis_flushed(cluster: Cluster) -> None:
    """The cluster's own Redis (never the shared one) emptied: throttle counts start again."""
    with socket.create_connection((cluster.redis.host, cluster.redis.port), timeout=5) as conn:
        conn.sendall(b"FLUSHALL\r\n")
        assert conn.recv(64).startswith(b"+OK")


@pytest.fixture(scope="module")
def sessions_cluster(
    django_db_setup: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Two instances as deployed without a proxy in front (TRUST_PROXY_HEADERS off)."""
    env = {"THROTTLE_LOGIN": LIVE_LOGIN_RATE}
    with running_cluster(tmp_path_factory.mktemp("sessions"), extra_env=env) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def proxied_cluster(
    django_db_setup: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Two instances behind a trusted proxy (TRUST_PROXY_HEADERS on)."""
    env = {"THROTTLE_LOGIN": LIVE_LOGIN_RATE, "TRUST_PROXY_HEADERS": "1"}
    with running_cluster(tmp_path_factory.mktemp("proxied"), extra_env=env) as cluster:
        yield cluster


@pytest.fixture
def one_and_two(sessions_cluster: Cluster) -> tuple[DaphneServer, DaphneServer]:
    _redis_flushed(sessions_cluster)
    one, two = sessions_cluster.instances
    return one, two


_registered = itertools.count(1)


def _register(instance: DaphneServer) -> User:
    """A user registered through the instance (its password hashed the production way, which
    the test settings' fast hasher is not)."""
    username = f"live-{uuid.uuid4().hex[:8]}-{next(_registered)}"
    status, body = _request(
        instance, "POST", "/users/register", {"username": username, "password": PASSWORD}
    )
    assert status == 201, body
    return User.objects.get(pk=body["id"])


def _login(instance: DaphneServer, user: User, password: str = PASSWORD) -> dict[str, str]:
    status, body = _request(
        instance, "POST", "/users/login", {"username": user.username, "password": password}
    )
    assert status == 200, body
    return body


def _me(instance: DaphneServer, token: str) -> int:
    return _request(instance, "GET", "/users/me", token=token)[0]


def _refresh(instance: DaphneServer, refresh: str) -> int:
    return _request(instance, "POST", "/users/token/refresh", {"refresh": refresh})[0]


def _live(test: Callable) -> Callable:
    """Needs PostgreSQL and Redis, and starts processes (skipped without, failed under CI)."""
    for mark in LIVE:
        test = mark(test)
    return test


@_live
def test_a_password_change_on_one_instance_ends_every_session_on_both(one_and_two):
    one, two = one_and_two
    user = _register(one)
    before = _login(one, user)
    plain = access_token(user)  # simplejwt's own token, without a version: counts as 0.
    assert _me(two, before["access"]) == 200

    # Bad input first: a wrong old password, a weak new one, missing fields; nothing changes.
    for body, field in (
        ({"old_password": "not-it", "new_password": NEW_PASSWORD}, "old_password"),
        ({"old_password": PASSWORD, "new_password": "12345678"}, "new_password"),
        ({"old_password": PASSWORD, "new_password": user.username}, "new_password"),
        ({"new_password": NEW_PASSWORD}, "old_password"),
    ):
        status, answer = _request(two, "POST", "/users/me/password", body, token=before["access"])
        assert (status, list(answer)) == (400, [field]), (body, answer)
    assert _me(one, before["access"]) == 200

    status, _ = _request(
        two,
        "POST",
        "/users/me/password",
        {"old_password": PASSWORD, "new_password": NEW_PASSWORD},
        token=before["access"],
    )
    assert status == 204

    for instance in (one, two):
        assert _me(instance, before["access"]) == 401
        assert _me(instance, plain) == 401
        assert _refresh(instance, before["refresh"]) == 401
        old_login = {"username": user.username, "password": PASSWORD}
        assert _request(instance, "POST", "/users/login", old_login)[0] == 401
    # A login right after works at once, on either instance, whatever second it is.
    after = _login(one, user, NEW_PASSWORD)
    assert _me(two, after["access"]) == 200
    assert _refresh(two, after["refresh"]) == 200


@_live
def test_a_logout_on_one_instance_holds_on_the_other_and_bad_logouts_are_refused(
    one_and_two, make_user
):
    one, two = one_and_two
    user, other = _register(two), make_user()
    tokens = _login(one, user)
    other_refresh = str(RefreshToken.for_user(other))
    expired = RefreshToken.for_user(user)
    expired.set_exp(lifetime=-timedelta(seconds=1))

    # Anything but a valid refresh token: 401, or 400 for a body without one; never a 500.
    for body, expected in (
        ({"refresh": tokens["access"]}, 401),  # An access token.
        ({"refresh": "garbage"}, 401),
        ({"refresh": str(expired)}, 401),
        ({"refresh": _tampered_signature(tokens["refresh"])}, 401),
        ({"refresh": _signed_with(tokens["refresh"], DEV_SECRET_KEY)}, 401),
        ({}, 400),
        ({"refresh": 12}, 400),
    ):
        status, answer = _request(two, "POST", "/users/logout", body)
        assert status == expected, (body, status, answer)
    assert _refresh(two, tokens["refresh"]) == 200  # None of that ended the real session.

    assert _request(one, "POST", "/users/logout", {"refresh": tokens["refresh"]})[0] == 204
    assert _refresh(two, tokens["refresh"]) == 401
    assert _refresh(one, tokens["refresh"]) == 401
    # Again, on the other instance: already ended is no error.
    assert _request(two, "POST", "/users/logout", {"refresh": tokens["refresh"]})[0] == 204
    # Whoever holds a refresh token may end it (possession is the credential), but only it.
    assert _request(one, "POST", "/users/logout", {"refresh": other_refresh})[0] == 204
    assert _refresh(two, other_refresh) == 401
    assert _me(two, tokens["access"]) == 200  # Access tokens live until they expire.


@_live
def test_deactivation_and_expiry_are_refused_on_both_instances(one_and_two, make_user):
    one, two = one_and_two
    user, short_lived = _register(one), make_user()
    tokens = _login(two, user)
    brief = AccessToken.for_user(short_lived)
    brief.set_exp(lifetime=timedelta(seconds=2))
    assert _me(one, str(brief)) == 200

    user.is_active = False
    user.save()
    time.sleep(max(0.0, brief["exp"] - time.time()) + 0.05)

    for instance in (one, two):
        assert _me(instance, tokens["access"]) == 401
        assert _refresh(instance, tokens["refresh"]) == 401
        assert _me(instance, str(brief)) == 401


@_live
def test_forged_forwarded_for_headers_do_not_dodge_the_login_throttle_across_instances(
    one_and_two,
):
    """The measured attack: THROTTLE_LOGIN=5/min, 8 bad logins, each with another forged
    X-Forwarded-For, alternating between the two instances."""
    answers = [
        _request(
            (one_and_two[n % 2]),
            "POST",
            "/users/login",
            {"username": "nobody", "password": "wrong"},
            headers={"X-Forwarded-For": f"203.0.113.{n}"},
        )[0]
        for n in range(8)
    ]

    assert answers == [401] * 5 + [429] * 3


@_live
def test_behind_a_trusted_proxy_throttles_count_the_address_it_appended(proxied_cluster):
    _redis_flushed(proxied_cluster)
    one, two = proxied_cluster.instances

    def bad_login(n: int, forwarded_for: str) -> int:
        return _request(
            (one, two)[n % 2],
            "POST",
            "/users/login",
            {"username": "nobody", "password": "wrong"},
            headers={"X-Forwarded-For": forwarded_for},
        )[0]

    # One real client (198.51.100.7, appended by the proxy) forging the leftmost each time.
    same_client = [bad_login(n, f"203.0.113.{n}, 198.51.100.7") for n in range(8)]
    # Another client behind the same proxy is counted apart.
    other_client = bad_login(0, "203.0.113.1, 198.51.100.8")

    assert same_client == [401] * 5 + [429] * 3
    assert other_client == 401


# --- Renewing in band with a bad token --------------------------------------------------------


async def test_auth_with_any_token_that_must_not_pass_closes_the_socket_with_4401(
    ws, victim, intruder, make_user
) -> None:
    """Expired, forged, refresh, revoked and other users' tokens in `{"type": "auth"}`: the
    socket that sent it is closed with 4401; a valid token of the same user renews it."""

    def tokens() -> tuple[str, dict[str, str], str, str]:
        bad = _attack_tokens(victim, intruder)
        bad["another user's valid token"] = access_token(intruder)
        changed = make_user()  # Changed their password after their first token.
        before_change = str(VersionedAccessToken.for_user(changed))
        changed.revoke_sessions()
        after_change = str(VersionedAccessToken.for_user(changed))
        return access_token(victim), bad, before_change, after_change

    good, bad_tokens, before_change, after_change = await database_sync_to_async(tokens)()
    cases = [(good, token, name) for name, token in bad_tokens.items()]
    cases.append((after_change, before_change, "issued before a password change"))
    for socket_token, auth_token, name in cases:
        sock = await ws(token=socket_token)
        await sock.send_json_to({"type": "auth", "token": auth_token})
        assert await next_output(sock) == {"type": "websocket.close", "code": 4401}, name
    # The control: the same user's fresh token renews the socket, which stays open.
    sock = await ws(token=good)
    await sock.send_json_to({"type": "auth", "token": good})
    answer = await next_output(sock)
    assert answer["type"] == "websocket.send", answer
    assert json.loads(answer["text"])["type"] == "authenticated"


# --- Sockets closed on every instance ------------------------------------------------------------


async def _open(url: str) -> ClientConnection:
    return await ws_connect(url, open_timeout=20)


async def _closed_within(sock: ClientConnection, seconds: float) -> int | None:
    """The close code if the server closed the socket within `seconds`, else None."""
    try:
        await asyncio.wait_for(sock.wait_closed(), seconds)
    except TimeoutError:
        return None
    return sock.close_code


async def _refused(url: str) -> bool:
    """Refused at the handshake, or accepted and closed with 4401 before any event."""
    try:
        sock = await _open(url)
    except InvalidStatus:
        return True
    try:
        await asyncio.wait_for(sock.recv(), 5)
    except ConnectionClosed:
        return sock.close_code == 4401
    finally:
        await sock.close()
    return False  # An event came: the socket was open.


def _deactivate_in_another_process(cluster: Cluster, user_id: int) -> None:
    """`user.is_active = False; user.save()` in code, as a management shell of the deployment
    would run it (its own process, the cluster's database and Redis)."""
    one = cluster.instances[0]
    environment = one.environment()
    result = subprocess.run(
        [
            one.python,
            "manage.py",
            "shell",
            "-c",
            "from accounts.models import User\n"
            f"user = User.objects.get(pk={user_id})\n"
            "user.is_active = False\n"
            "user.save()\n",
        ],
        cwd=PROJECT_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


@_live
async def test_a_password_change_closes_the_users_sockets_on_every_instance_within_2_s(
    sessions_cluster,
) -> None:
    _redis_flushed(sessions_cluster)
    one, two = sessions_cluster.instances
    user = await database_sync_to_async(_register)(one)
    bystander = await database_sync_to_async(_register)(two)
    tokens = await asyncio.to_thread(_login, one, user)
    sockets_of_user = [
        await _open(one.ws_url(token=tokens["access"])),
        await _open(two.ws_url(token=tokens["access"])),
        await _open(two.ws_url(token=tokens["access"])),
    ]
    bystander_sock = await _open(one.ws_url(token=access_token(bystander)))
    try:
        status, _ = await asyncio.to_thread(
            _request,
            two,
            "POST",
            "/users/me/password",
            {"old_password": PASSWORD, "new_password": NEW_PASSWORD},
            token=tokens["access"],
        )
        assert status == 204
        codes = await asyncio.gather(*(_closed_within(s, 2.0) for s in sockets_of_user))
        assert codes == [4401, 4401, 4401]
        # Someone else's socket is untouched, and the old token opens nothing any more.
        assert await _closed_within(bystander_sock, 0.3) is None
        assert await _refused(one.ws_url(token=tokens["access"]))
    finally:
        for sock in [*sockets_of_user, bystander_sock]:
            await sock.close()


@_live
async def test_a_deactivation_in_code_closes_the_users_sockets_on_every_instance_within_2_s(
    sessions_cluster,
) -> None:
    _redis_flushed(sessions_cluster)
    one, two = sessions_cluster.instances
    user = await database_sync_to_async(_register)(two)
    token = await database_sync_to_async(access_token)(user)
    socks = [await _open(one.ws_url(token=token)), await _open(two.ws_url(token=token))]
    try:
        await asyncio.to_thread(_deactivate_in_another_process, sessions_cluster, user.pk)
        codes = await asyncio.gather(*(_closed_within(s, 2.0) for s in socks))
        assert codes == [4401, 4401]
    finally:
        for sock in socks:
            await sock.close()
