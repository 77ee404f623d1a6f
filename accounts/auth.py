"""WebSocket authentication by the access token in `?token=`, reusing simplejwt's checks.

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
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken, TokenError

from accounts.models import User

_jwt = JWTAuthentication()


@dataclass(frozen=True)
class TokenCheck:
    user: User
    expires_at: float  # Epoch seconds.
    token_version: int


def access_token_check(raw_token: str) -> TokenCheck | None:
    """What a valid access token says, or None for any token that must not pass."""
    try:
        validated = _jwt.get_validated_token(raw_token.encode())
        user = _jwt.get_user(validated)
    except (InvalidToken, TokenError, AuthenticationFailed):
        return None
    return TokenCheck(
        user=user, expires_at=float(validated["exp"]), token_version=validated.get("tv", 0)
    )


class JWTQueryAuthMiddleware(BaseMiddleware):
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
