"""Limits on one user's use of the WebSocket: event rate, sockets held, frame size.

(The slow reader, which needs a real server's buffers, is in test_slow_reader.py.)
"""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from messaging.limits import sockets
from messaging.models import Message
from tests_adversarial.sockets import drain, next_event, next_output, send_message

pytestmark = pytest.mark.django_db(transaction=True)

BURST = 30
PER_SECOND = 5.0


@pytest.fixture
def tight_limits(settings) -> None:
    settings.WS_RATE_BURST = BURST
    settings.WS_RATE_PER_SECOND = PER_SECOND
    settings.WS_MAX_SOCKETS_PER_USER = 3


@pytest.fixture
def trio(make_user, make_chat, tight_limits):
    flooder, member, bystander = make_user(), make_user(), make_user()
    return flooder, member, bystander, make_chat(flooder, [member, bystander])


async def _flood(sock, chat_id: int, count: int, tag: str) -> tuple[list[int], int]:
    """Send `count` messages without waiting; (ids acknowledged, rate_limited errors).

    Every one of the `count` client_ids comes back once: in its message or in the echo of
    its `rate_limited` error (so the client knows what to send again)."""
    for n in range(count):
        await sock.send_json_to(
            {
                "type": "new_message",
                "chat_id": chat_id,
                "text": f"{tag} {n}",
                "client_id": f"{tag}-{n}",
            }
        )
    acked, limited, answered = [], 0, []
    while len(answered) < count:
        event = await next_event(sock)
        if event["type"] == "new_message":
            if event["message"]["text"].startswith(f"{tag} "):  # Not another socket's.
                acked.append(event["message"]["id"])
                answered.append(event["message"]["client_id"])
        else:
            assert event["code"] == "rate_limited", event
            assert event["request"]["type"] == "new_message"
            assert event["request"]["chat_id"] == chat_id
            limited += 1
            answered.append(event["request"]["client_id"])
    assert sorted(answered) == sorted(f"{tag}-{n}" for n in range(count))
    return acked, limited


async def test_a_flood_is_rate_limited_and_nobody_else_is_affected(ws, trio) -> None:
    flooder, member, bystander, chat = trio
    flood_socket, member_socket = await ws(flooder), await ws(member)
    acked, limited = await _flood(flood_socket, chat.pk, 3 * BURST, "flood")
    # The burst passes (plus what refilled during the flood); the rest is refused.
    assert BURST <= len(acked) < BURST + PER_SECOND * 3
    assert limited == 3 * BURST - len(acked)
    # Exactly the acknowledged messages were stored and broadcast, nothing else.
    stored = await sync_to_async(list)(
        Message.objects.filter(chat=chat).order_by("id").values_list("id", flat=True)
    )
    assert stored == acked
    received = [event["message"]["id"] for event in await drain(member_socket)]
    assert received == acked
    # Others have budgets of their own: the member and a bystander send at once, unhindered.
    reply = await send_message(member_socket, chat.pk, "unaffected")
    assert reply["type"] == "new_message"
    bystander_socket = await ws(bystander)
    assert (await send_message(bystander_socket, chat.pk, "me too"))["type"] == "new_message"
    # The flooder's socket is still open, and usable again once its bucket refills.
    await asyncio.sleep(1.5 / PER_SECOND)
    assert (await send_message(flood_socket, chat.pk, "calm again"))["type"] == "new_message"


async def test_reconnecting_does_not_refill_the_budget(ws, trio) -> None:
    """The budget is the user's, not the socket's: closing the last socket and opening a new
    one must not hand out a fresh burst (else a loop of reconnects floods at will)."""
    flooder, _, _, chat = trio
    first = await ws(flooder)
    acked, _ = await _flood(first, chat.pk, BURST + 5, "first")
    assert len(acked) >= BURST
    await first.disconnect()
    second = await ws(flooder)
    acked_again, limited = await _flood(second, chat.pk, BURST, "second")
    assert len(acked_again) < BURST // 2, (len(acked_again), limited)


async def test_a_users_sockets_share_one_budget(ws, trio) -> None:
    flooder, _, _, chat = trio
    one, two = await ws(flooder), await ws(flooder)
    acked_one, _ = await _flood(one, chat.pk, BURST, "one")
    acked_two, limited_two = await _flood(two, chat.pk, BURST, "two")
    assert len(acked_one) + len(acked_two) < BURST + PER_SECOND * 3
    assert limited_two > 0


async def test_sockets_past_the_cap_are_refused_with_4429_and_counted_back(ws, trio) -> None:
    flooder, member, _, chat = trio
    held = [await ws(flooder) for _ in range(3)]
    extra = await ws(flooder, connected=False)
    assert (await extra.connect())[0]
    assert await next_output(extra) == {"type": "websocket.close", "code": 4429}
    # Frames sent on the refused socket before it closed are ignored.
    await extra.send_json_to({"type": "new_message", "chat_id": chat.pk, "text": "sneaky"})
    # Another user is not affected by this user's cap.
    member_socket = await ws(member)
    assert (await send_message(member_socket, chat.pk, "fine"))["type"] == "new_message"
    for sock in held:
        assert (await next_event(sock))["message"]["text"] == "fine"
    # Closing one frees a place; closing all leaves no count behind.
    await held.pop().disconnect()
    held.append(await ws(flooder))
    for sock in held:
        await sock.disconnect()
    assert sockets.socket_count(flooder.pk) == 0
    texts = await sync_to_async(list)(Message.objects.values_list("text", flat=True))
    assert "sneaky" not in texts
