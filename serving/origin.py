"""Browser Origin check for the WebSocket handshake.

Channels' `AllowedHostsOriginValidator` refuses a handshake that has no Origin header; the
contract accepts those (apps and scripts send none, and they cannot be hijacked through a
victim's browser), so this validator refuses only an Origin that is present and not allowed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import validate_host


def allowed_origin_hosts() -> list[str]:
    """WS_ALLOWED_ORIGINS when set, else the hosts of ALLOWED_HOSTS (any scheme and port); and
    the origins of CORS_ALLOWED_ORIGINS, whose browser apps may use the WebSocket too."""
    base = settings.WS_ALLOWED_ORIGINS or settings.ALLOWED_HOSTS
    return [*base, *settings.CORS_ALLOWED_ORIGINS]


def origin_allowed(origin: str, allowed: list[str]) -> bool:
    """`allowed` holds full origins (`https://app.example.com`) and/or host patterns
    (`example.com`, `.example.com`, `*`) as in ALLOWED_HOSTS."""
    if "*" in allowed:
        return True
    if origin in allowed:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return False
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return validate_host(host, [entry for entry in allowed if "://" not in entry])


class OriginValidator:
    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        origin = dict(scope.get("headers", [])).get(b"origin")
        if origin is not None and not origin_allowed(
            origin.decode("latin-1"), allowed_origin_hosts()
        ):
            denier = WebsocketDenier()
            return await denier(scope, receive, send)
        return await self.application(scope, receive, send)
