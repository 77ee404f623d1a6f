"""Which tokens authenticate, over HTTP and on the WebSocket: simplejwt's checks (signature,
expiry, type "access", an active user that exists) plus the token version.

A token whose "tv" claim (accounts/tokens.py) is not its user's current `token_version` was
issued before a password change or a deactivation and is refused: HTTP answers 401, a
WebSocket handshake is refused (the consumer closes with 4401), an in-band `auth` fails. The
user row is loaded by simplejwt anyway, so the check costs no query of its own.

Only an access token opens a socket: refresh tokens (wrong type), expired or tampered
tokens, tokens of inactive or deleted users, and session cookies all leave the scope's user
anonymous, and the consumer closes the socket with 4401 before sending anything.

At a handshake the token's signature and claims are checked on the event loop (pure CPU,
tens of microseconds), and the user is read with every other handshake's of the moment in
one query (chatproject/batching.py): a reconnect storm costs a query per batch, not a thread
hop and a query per socket. The checks on the user are simplejwt's `get_user`'s (exists,
active, the password-hash claim when CHECK_REVOKE_TOKEN is on) and the token version, the
same as `access_token_check` makes (accounts/tests/test_auth.py compares the two).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from channels.middleware import BaseMiddleware
from django.contrib.auth.models import AnonymousUser
from rest_framework_simplejwt import authentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken, TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import Token
from rest_framework_simplejwt.utils import get_md5_hash_password

from accounts.models import User
from accounts.tokens import token_version
from chatproject.batching import BatchedRead


def user_for_token(token: Token, user: User) -> User:
    """`user` (the one the token names, active) if the token's version is the user's current
    one; AuthenticationFailed (a 401) otherwise."""
    if token_version(token) != user.token_version:
        raise AuthenticationFailed(
            "Token has been revoked (password change, deactivation).", code="token_revoked"
        )
    return user


class JWTAuthentication(authentication.JWTAuthentication):
    """simplejwt's authentication (DEFAULT_AUTHENTICATION_CLASSES) with the version check."""

    def get_user(self, validated_token: Token) -> User:
        return user_for_token(validated_token, super().get_user(validated_token))


_jwt = JWTAuthentication()


@dataclass(frozen=True)
class TokenCheck:
    """What a valid access token says: whose it is, until when, and under which version."""

    user: User
    expires_at: float  # Epoch seconds (the token's `exp`).
    token_version: int


def access_token_check(raw_token: str) -> TokenCheck | None:
    """The facts of a valid access token, or None for any token that must not pass (expired,
    forged, a refresh token, a revoked version, an inactive or deleted user). Sync: call it
    through `database_sync_to_async` (one query: the user)."""
    try:
        validated = _jwt.get_validated_token(raw_token.encode())
        user = _jwt.get_user(validated)
    except (InvalidToken, TokenError, AuthenticationFailed):
        return None
    return TokenCheck(
        user=user, expires_at=float(validated["exp"]), token_version=user.token_version
    )


def _users_by_id(user_ids: list[int]) -> dict[int, User]:
    return {user.pk: user for user in User.objects.filter(pk__in=user_ids)}


users_by_id: BatchedRead[int, User] = BatchedRead(_users_by_id, name="users")


async def access_token_check_batched(raw_token: str) -> TokenCheck | None:
    """`access_token_check`, for many handshakes at once: the token is checked here, on the
    event loop, and the user read in a batch with the others' (one query per batch)."""
    try:
        validated = _jwt.get_validated_token(raw_token.encode())
        user_id = int(validated[api_settings.USER_ID_CLAIM])
    except (InvalidToken, TokenError, KeyError, TypeError, ValueError):
        return None
    return user_checked(validated, await users_by_id.get(user_id))


def user_checked(validated: Token, user: User | None) -> TokenCheck | None:
    """simplejwt's `JWTAuthentication.get_user` checks, then the token version, on a user
    already read; None where either would refuse."""
    if user is None:
        return None
    if api_settings.CHECK_USER_IS_ACTIVE and not user.is_active:
        return None
    if api_settings.CHECK_REVOKE_TOKEN and validated.get(
        api_settings.REVOKE_TOKEN_CLAIM
    ) != get_md5_hash_password(user.password):
        return None
    if token_version(validated) != user.token_version:
        return None
    return TokenCheck(
        user=user, expires_at=float(validated["exp"]), token_version=user.token_version
    )


class JWTQueryAuthMiddleware(BaseMiddleware):
    """Puts on the scope `user` (AnonymousUser unless the `?token=` is a valid access token),
    and for a valid token `token_expires_at` (epoch seconds) and `token_version`."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        token = (query.get("token") or [""])[0]
        checked = await access_token_check_batched(token) if token else None
        if checked is None:
            scope = dict(scope, user=AnonymousUser())
        else:
            scope = dict(
                scope,
                user=checked.user,
                token_expires_at=checked.expires_at,
                token_version=checked.token_version,
            )
        return await super().__call__(scope, receive, send)
