"""WebSocket authentication by the access token in `?token=`, reusing simplejwt's checks.

Only an access token opens a socket: refresh tokens (wrong type), expired or tampered
tokens, tokens of inactive or deleted users, and session cookies all leave the scope's user
anonymous, and the consumer closes the socket with 4401 before sending anything.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.contrib.auth.models import AnonymousUser
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken, TokenError

from accounts.models import User

_jwt = JWTAuthentication()


def user_for_access_token(raw_token: str) -> User | None:
    """The active user an access token names, or None for any token that must not pass."""
    try:
        validated = _jwt.get_validated_token(raw_token.encode())
        return _jwt.get_user(validated)
    except (InvalidToken, TokenError, AuthenticationFailed):
        return None


class JWTQueryAuthMiddleware(BaseMiddleware):
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        token = (query.get("token") or [""])[0]
        user = await database_sync_to_async(user_for_access_token)(token) if token else None
        scope = dict(scope, user=user or AnonymousUser())
        return await super().__call__(scope, receive, send)
