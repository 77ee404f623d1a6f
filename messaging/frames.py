"""Client frames of the WebSocket: their size, decoding, and what an error echoes of them.

Channels' `AsyncJsonWebsocketConsumer.decode_json` is a bare `json.loads`, and a binary frame
raises in `receive`: either would close the socket with 1011. The consumer decodes with these
instead, so every bad frame gets an `error` event and the socket stays usable.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings

# Client events are objects of scalars; anything nested deeper is refused as `invalid_json`.
MAX_JSON_DEPTH = 32


def frame_size(text: str | None, data: bytes | None) -> int:
    """Size in bytes; UTF-8 encoding is skipped when the length alone decides."""
    if text is None:
        return len(data or b"")
    if len(text) * 4 <= settings.WS_MAX_FRAME_BYTES:
        return len(text)
    return len(text.encode())


def decode(text: str | None) -> tuple[Any, str | None]:
    """(the frame's JSON value, None), or (None, why it is not JSON)."""
    if text is None:
        return None, "Frames must be JSON text, not binary."
    try:
        # NaN and Infinity are not JSON: echoed back, they would make our frames invalid.
        content = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):  # Deep nesting fits in 64 KiB: not a crash.
        return None, "The frame is not valid JSON."
    if _nested_deeper_than(content, MAX_JSON_DEPTH):
        # Parsed just under the recursion limit, it would still exhaust it later (validation
        # calls str() on it): refused here, whatever the stack depth happens to be.
        return None, f"The frame is nested deeper than {MAX_JSON_DEPTH} levels."
    return content, None


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether lists/objects nest more than `limit` levels (iterative: no recursion)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return False


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def shown(value: Any, limit: int = 100) -> str:
    """A short repr of a client value for an error detail (repr escapes lone surrogates)."""
    scalar = isinstance(value, str | int | float | type(None))
    shown = repr(value) if scalar else type(value).__name__
    return shown if len(shown) <= limit else shown[:limit] + "..."


def _echoable(value: Any) -> bool:
    if isinstance(value, str):
        # A lone surrogate (from a JSON escape) cannot be encoded into a text frame.
        return value.isascii() or not any("\ud800" <= char <= "\udfff" for char in value)
    return value is None or isinstance(value, int | float)


def request_echo(content: Any) -> dict[str, Any]:
    """The offending event's type, chat_id and client_id, when it had them (scalars only)."""
    if not isinstance(content, dict):
        return {}
    return {
        key: content[key]
        for key in ("type", "chat_id", "client_id")
        if key in content and _echoable(content[key])
    }
