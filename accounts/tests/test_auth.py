"""The WebSocket's token check: `access_token_check` and what the middleware puts on the scope."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from rest_framework_simplejwt.tokens import AccessToken as SimpleJWTAccessToken

from accounts.auth import JWTQueryAuthMiddleware, TokenCheck, access_token_check
from accounts.models import User
from accounts.tokens import TOKEN_VERSION_CLAIM, AccessToken, RefreshToken

pytestmark = pytest.mark.django_db


def test_a_valid_access_token_gives_its_user_expiry_and_version(user):
    user.revoke_sessions()
    token = AccessToken.for_user(user)

    checked = access_token_check(str(token))

    assert checked == TokenCheck(user=user, expires_at=float(token["exp"]), token_version=1)
    assert isinstance(checked.expires_at, float)


def _expired(user: User) -> str:
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=-timedelta(seconds=1))
    return str(token)


def _other_version(user: User) -> str:
    token = AccessToken.for_user(user)
    token[TOKEN_VERSION_CLAIM] = user.token_version + 1
    return str(token)


@pytest.mark.parametrize(
    "make_token",
    [
        _expired,
        _other_version,
        lambda user: str(RefreshToken.for_user(user)),
        lambda user: str(AccessToken.for_user(user))[:-2] + "xx",
        lambda user: "garbage",
        lambda user: "",
        lambda user: "é" * 10,
    ],
    ids=["expired", "other version", "refresh", "bad signature", "garbage", "empty", "non-ascii"],
)
def test_tokens_that_must_not_pass_give_none(user, make_token):
    assert access_token_check(make_token(user)) is None


def test_a_revoked_inactive_or_deleted_users_token_gives_none(make_user):
    revoked, inactive, deleted = make_user(), make_user(), make_user()
    tokens = {
        name: str(SimpleJWTAccessToken.for_user(u))
        for name, u in (("revoked", revoked), ("inactive", inactive), ("deleted", deleted))
    }
    revoked.revoke_sessions()
    User.objects.filter(pk=inactive.pk).update(is_active=False)
    deleted.delete()

    assert {name: access_token_check(token) for name, token in tokens.items()} == dict.fromkeys(
        tokens
    )


async def _scope_after_middleware(query: bytes) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.update(scope)

    await JWTQueryAuthMiddleware(inner)({"type": "websocket", "query_string": query}, None, None)
    return seen


@pytest.mark.django_db(transaction=True)
async def test_the_middleware_puts_user_expiry_and_version_on_the_scope(user):
    token = await sync_to_async(AccessToken.for_user)(user)

    scope = await _scope_after_middleware(f"token={token}".encode())

    assert scope["user"] == user
    assert scope["token_expires_at"] == float(token["exp"])
    assert scope["token_version"] == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("query", [b"", b"token=", b"token=garbage", b"other=1"], ids=repr)
async def test_the_middleware_leaves_an_anonymous_user_without_token_facts(query):
    scope = await _scope_after_middleware(query)

    assert not scope["user"].is_authenticated
    assert "token_expires_at" not in scope and "token_version" not in scope


def _token_cases(make_user: Any) -> dict[str, str]:
    """Tokens of every kind a handshake may bring, for users of every state."""
    valid, versioned, revoked, inactive, deleted = (make_user() for _ in range(5))
    versioned.revoke_sessions()
    cases = {
        "valid": str(AccessToken.for_user(valid)),
        "valid, version 1": str(AccessToken.for_user(versioned)),
        "expired": _expired(valid),
        "other version": _other_version(valid),
        "refresh": str(RefreshToken.for_user(valid)),
        "bad signature": str(AccessToken.for_user(valid))[:-2] + "xx",
        "garbage": "garbage",
        "revoked": str(SimpleJWTAccessToken.for_user(revoked)),
        "inactive": str(SimpleJWTAccessToken.for_user(inactive)),
        "deleted": str(SimpleJWTAccessToken.for_user(deleted)),
    }
    no_user = AccessToken.for_user(valid)
    no_user["user_id"] = "not a number"
    cases["user claim not a number"] = str(no_user)
    revoked.revoke_sessions()
    User.objects.filter(pk=inactive.pk).update(is_active=False)
    deleted.delete()
    return cases


@pytest.mark.django_db(transaction=True)
async def test_the_handshakes_batched_check_agrees_with_the_sync_check(make_user):
    from accounts.auth import access_token_check_batched

    cases = await sync_to_async(_token_cases)(make_user)

    for name, token in cases.items():
        try:
            expected = await sync_to_async(access_token_check)(token)
        except ValueError:  # The ORM refuses a user id that is not a number.
            expected = None
        assert await access_token_check_batched(token) == expected, name
    assert expected is None
    assert (await access_token_check_batched(cases["valid"])) is not None


@pytest.mark.django_db(transaction=True)
async def test_handshakes_at_once_read_their_users_in_one_query(make_user):
    import asyncio

    from accounts.auth import access_token_check_batched, users_by_id

    users = await sync_to_async(lambda: [make_user() for _ in range(40)])()
    tokens = [str(AccessToken.for_user(user)) for user in users]
    before = users_by_id.batches

    checked = await asyncio.gather(*(access_token_check_batched(token) for token in tokens))

    assert [check.user for check in checked] == users
    assert users_by_id.batches - before <= 2  # The first asker's batch, then all the others.
