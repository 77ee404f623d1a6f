"""The answer to a resend against a socket's seq order (docs/websocket.md, "Order" and
"Staying in sync after a reconnect"; docs/reliability.md, finding 9).

A repeated client_id is answered with the original message as it is now, straight to the
socket. Its seq is the original's latest change, which may be ahead of what the socket has
shown: changes whose broadcast was lost (Redis down) and that no later change has made the
socket fill yet. Before the fix, a client that keeps "the largest seq from every new_message"
(the guide's recipe) and whose connection was then cut caught up from that seq and missed
those changes for good. The socket now shows every change up to the answer's seq first
(`ChatSubscriptions.catch_up_to`).
"""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from messaging import events, services

pytestmark = pytest.mark.django_db(transaction=True)


async def test_catching_up_from_the_largest_seq_shown_misses_nothing_after_a_resend(
    ws, user, other_user, make_chat, auth_client, monkeypatch
):
    chat = await database_sync_to_async(make_chat)(user, [other_user])
    socket = await ws(user)
    event = {"type": "new_message", "chat_id": chat.pk, "text": "x", "client_id": "k"}
    await socket.send_json_to(event)
    shown = [(await socket.receive_json_from(timeout=3))["message"]]  # Seq 1.
    # Redis loses what follows: another member's message (seq 2), their reaction to x (seq 3).
    monkeypatch.setattr(events, "_publish", lambda *args, **kwargs: None)
    other = await database_sync_to_async(services.message_send)(
        author=other_user, chat_id=chat.pk, text="y"
    )
    await database_sync_to_async(services.reaction_add)(
        user=other_user, chat_id=chat.pk, message_id=shown[0]["id"], emoji="👍"
    )

    # The client missed its acknowledgement (say) and resends; the answer comes at once.
    await socket.send_json_to(event)
    while True:  # What the socket shows until the answer (a new_message of x).
        frame = await socket.receive_json_from(timeout=3)
        shown.append(frame["message"])
        if frame["type"] == "new_message" and frame["message"]["id"] == shown[0]["id"]:
            break
    # Now the connection is cut, and the client catches up as the guide says.
    largest = max(message["seq"] for message in shown)
    page = await database_sync_to_async(auth_client.get)(
        f"/chats/{chat.pk}/messages?since_seq={largest}"
    )

    seqs = [message["seq"] for message in shown]
    assert seqs == sorted(seqs), f"shown out of seq order: {seqs}"
    held = {message["id"] for message in shown + page.json()["results"]}
    assert other.message.pk in held, f"largest seq shown {largest}, held {held}"
