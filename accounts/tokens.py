"""The JWTs this service issues: simplejwt's, plus the claim "tv" (the user's token version).

SIMPLE_JWT names these classes (AUTH_TOKEN_CLASSES, and the login and refresh serializers in
accounts/serializers.py), so every token the service issues carries "tv": a login's pair, and
the access tokens derived from a refresh token (simplejwt copies its claims, "tv" included).
`accounts.auth` refuses a token whose "tv" is not the user's current `token_version`.

A token without "tv" reads as version 0. Every user starts at 0 and the version only goes up,
so such a token (issued before versions existed, or minted in a test with simplejwt's own
`AccessToken.for_user`) passes exactly as long as its user has never revoked a session, and is
refused from the first password change or deactivation on, like any token of version 0.
"""

from __future__ import annotations

from typing import Any

from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken
from rest_framework_simplejwt.tokens import AccessToken as SimpleJWTAccessToken
from rest_framework_simplejwt.tokens import RefreshToken as SimpleJWTRefreshToken
from rest_framework_simplejwt.tokens import Token
from rest_framework_simplejwt.utils import datetime_from_epoch

TOKEN_VERSION_CLAIM = "tv"


def token_version(token: Token) -> int | None:
    """The token version a token was issued under; None when the claim is not a proper one
    (only a token signed with our key gets this far, but a malformed claim must not pass)."""
    claimed: Any = token.get(TOKEN_VERSION_CLAIM, 0)
    return claimed if type(claimed) is int and claimed >= 0 else None


class AccessToken(SimpleJWTAccessToken):
    @classmethod
    def for_user(cls, user: Any) -> AccessToken:
        token = super().for_user(user)
        token[TOKEN_VERSION_CLAIM] = user.token_version
        return token


class RefreshToken(SimpleJWTRefreshToken):
    access_token_class = AccessToken

    @classmethod
    def for_user(cls, user: Any) -> RefreshToken:
        """simplejwt's, with "tv" in the token before the blacklist app records it as
        outstanding (simplejwt's own `for_user` records the token as it was before)."""
        token = cls()
        token[api_settings.USER_ID_CLAIM] = str(getattr(user, api_settings.USER_ID_FIELD))
        token[TOKEN_VERSION_CLAIM] = user.token_version
        # The blacklist app's row for it (deleted once expired by `flushexpiredtokens`:
        # docs/deployment.md), as simplejwt's `for_user` writes it.
        OutstandingToken.objects.create(
            user=user,
            jti=token[api_settings.JTI_CLAIM],
            token=str(token),
            created_at=token.current_time,
            expires_at=datetime_from_epoch(token["exp"]),
        )
        return token
