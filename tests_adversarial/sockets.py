"""Reading what the chat consumer sends to a `WebsocketCommunicator`, close frames included.

Channels' `receive_json_from` asserts on a close; these return it, so a test can tell an
`error` event from a closed socket. Beware: when `receive_output` times out, asgiref cancels
the application, so "nothing arrives" is asked with `receive_nothing`, never with a timeout.
"""

from __future__ import annotations

import json
from typing import Any

from channels.testing import WebsocketCommunicator

# Long enough for a database round trip on a busy 2-core machine.
REPLY_TIMEOUT = 5.0
# How long "nothing arrives" is watched for; a broadcast in process takes milliseconds.
QUIET_TIMEOUT = 0.2


async def next_output(sock: WebsocketCommunicator, wait: float = REPLY_TIMEOUT) -> dict[str, Any]:
    """The next ASGI message from the server: {"type": "websocket.send" | "websocket.close"}."""
    return await sock.receive_output(wait)


async def next_event(sock: WebsocketCommunicator, wait: float = REPLY_TIMEOUT) -> dict[str, Any]:
    """The next JSON event; fails the test if the server closed the socket instead."""
    output = await next_output(sock, wait)
    assert output["type"] == "websocket.send", f"expected an event, got {output}"
    return json.loads(output["text"])


async def next_error(sock: WebsocketCommunicator, code: str) -> dict[str, Any]:
    event = await next_event(sock)
    assert event["type"] == "error", event
    assert event["code"] == code, event
    return event


async def quiet(sock: WebsocketCommunicator, wait: float = QUIET_TIMEOUT) -> bool:
    """True when nothing arrives within `wait` seconds."""
    return await sock.receive_nothing(timeout=wait)


async def drain(sock: WebsocketCommunicator, wait: float = QUIET_TIMEOUT) -> list[Any]:
    """Every event that arrives until the socket stays quiet for `wait` seconds."""
    # Not a timed-out receive_output: asgiref cancels the application when one times out.
    events = []
    while not await sock.receive_nothing(timeout=wait):
        events.append(await next_event(sock))
    return events


async def send_message(
    sock: WebsocketCommunicator, chat_id: int, text: str, client_id: str | None = None
) -> dict[str, Any]:
    """Send a `new_message` and return the sender's own copy (skipping other events)."""
    event: dict[str, Any] = {"type": "new_message", "chat_id": chat_id, "text": text}
    if client_id is not None:
        event["client_id"] = client_id
    await sock.send_json_to(event)
    while True:
        reply = await next_event(sock)
        if reply["type"] == "error" or (
            reply["type"] == "new_message" and reply["message"]["text"] == text
        ):
            return reply
