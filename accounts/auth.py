"""Which tokens authenticate, over HTTP and on the WebSocket: simplejwt's checks (signature,
expiry, type "access", an active user that exists) plus the token version.

A token whose "tv" claim (accounts/tokens.py) is not its user's current `token_version` was
issued before a password change or a deactivation and is refused: HTTP answers 401, a
WebSocket handshake is refused (the consumer closes with 4401), an in-band `auth` fails. The
user row is loaded by simplejwt anyway, so the check costs no query of its own.

Only an access token opens a socket: refresh tokens (wrong type), expired or tampered
tokens, tokens of inactive or deleted users, and session cookies all leave the scope's user
anonymous, and the consumer closes the socket with 4401 before sending anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.contrib.auth.models import AnonymousUser
from rest_framework_simplejwt import authentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken, TokenError
from rest_framework_simplejwt.tokens import Token

from accounts.models import User
from accounts.tokens import token_version


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


class JWTQueryAuthMiddleware(BaseMiddleware):
    """Puts on the scope `user` (AnonymousUser unless the `?token=` is a valid access token),
    and for a valid token `token_expires_at` (epoch seconds) and `token_version`."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        token = (query.get("token") or [""])[0]
        checked = await database_sync_to_async(access_token_check)(token) if token else None
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
