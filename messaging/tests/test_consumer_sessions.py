"""A socket's session ends when its token does: at expiry unless renewed in band, on a
revocation (password change, deactivation), and a cancelled consumer gives back its slot."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from unittest import mock

import pytest
from channels.db import database_sync_to_async
from django.test import override_settings

from accounts.services import user_password_change
from accounts.tokens import AccessToken, RefreshToken
from conftest import PASSWORD, access_token
from messaging.limits import sockets
from messaging.sessions import SessionWatch, local_watch

pytestmark = pytest.mark.django_db(transaction=True)


def token_for(user, seconds: float) -> str:
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=timedelta(seconds=seconds))
    return str(token)


async def closed_with(socket, seconds: float) -> int | None:
    """The close code the server sends within `seconds` (frames before it are skipped)."""
    async with asyncio.timeout(seconds):
        while True:
            output = await socket.receive_output(timeout=seconds)
            if output["type"] == "websocket.close":
                return output.get("code")


async def test_a_socket_closes_with_4401_when_its_token_expires(ws, user):
    # `exp` is in whole seconds: a token made with a 2 s lifetime may have 1.0 s left when it
    # is made, and less once the socket is open on a busy machine (it failed in 1 of 5 runs of
    # the suite so). So the token expires at a whole second 3 to 4 s ahead; the socket must stay
    # quiet until half a second before that moment, then close with 4401.
    token = AccessToken.for_user(user)
    expires_at = int(time.time()) + 4
    token["exp"] = expires_at
    socket = await ws(token=str(token))

    assert await socket.receive_nothing(timeout=expires_at - time.time() - 0.5)
    assert await closed_with(socket, 4) == 4401


async def test_renewing_the_token_in_band_keeps_the_socket_past_the_old_expiry(ws, user):
    socket = await ws(token=token_for(user, 2))
    fresh = AccessToken.for_user(user)

    await socket.send_json_to({"type": "auth", "token": str(fresh)})
    answer = await socket.receive_json_from(timeout=3)

    assert answer["type"] == "authenticated"
    expected = fresh.current_time.replace(microsecond=0) + fresh.lifetime
    assert answer["expires_at"] == expected.isoformat().replace("+00:00", "Z")
    assert await socket.receive_nothing(timeout=3.5)  # The first token expired meanwhile.


@pytest.mark.parametrize("which", ["garbage", "refresh", "expired", "another user's"])
async def test_a_bad_token_in_auth_closes_the_socket_with_4401(ws, user, other_user, which):
    socket = await ws(user)

    def make() -> str:
        if which == "refresh":
            return str(RefreshToken.for_user(user))  # Writes its OutstandingToken row.
        if which == "expired":
            return token_for(user, -1)
        return {"garbage": "a.b.c", "another user's": str(AccessToken.for_user(other_user))}[which]

    token = await database_sync_to_async(make)()

    await socket.send_json_to({"type": "auth", "token": token})

    assert await closed_with(socket, 3) == 4401


async def test_sockets_that_came_and_went_leave_no_expiries_behind(
    ws, user, other_user, monkeypatch
):
    # With another socket open the watch keeps running, and each closed socket's heap entry
    # used to stay until its token expired (30 minutes): 200 bytes per connect/disconnect.
    monkeypatch.setattr(SessionWatch, "COMPACT_AFTER", 10)
    await ws(other_user)  # Stays open.
    token = access_token(user)
    for _ in range(30):
        socket = await ws(token=token)
        await socket.disconnect()

    watch = local_watch()
    assert len(watch.sessions) == 1
    assert len(watch.expiries) <= SessionWatch.COMPACT_AFTER
    # The open socket's own entry was kept: its token still ends its session.
    assert [ref() in watch.sessions for _, _, ref in watch.expiries].count(True) == 1


@pytest.mark.parametrize("event", [{"type": "auth"}, {"type": "auth", "token": 5}])
async def test_a_malformed_auth_is_a_validation_error(ws, user, event):
    socket = await ws(user)

    await socket.send_json_to(event)

    answer = await socket.receive_json_from(timeout=3)
    assert (answer["type"], answer["code"]) == ("error", "validation_error")


async def test_a_password_change_closes_every_socket_of_the_user_with_4401(ws, user, other_user):
    mine, my_phone, theirs = await ws(user), await ws(user), await ws(other_user)

    await database_sync_to_async(user_password_change)(
        user=user, old_password=PASSWORD, new_password="another-long-unusual-passphrase-8"
    )

    assert await closed_with(mine, 2) == 4401
    assert await closed_with(my_phone, 2) == 4401
    assert await theirs.receive_nothing(timeout=0.3)


@override_settings(SESSION_RECHECK_SECONDS=1)
async def test_a_revocation_whose_announcement_was_lost_still_ends_the_session(ws, user):
    socket = await ws(user)

    with mock.patch("messaging.events.on_commit_sessions_revoked"):
        await database_sync_to_async(user.revoke_sessions)()

    assert await closed_with(socket, 4) == 4401


async def test_a_deactivated_user_is_closed_out(ws, user):
    socket = await ws(user)
    user.is_active = False

    await database_sync_to_async(user.save)()

    assert await closed_with(socket, 2) == 4401


@override_settings(WS_MAX_SOCKETS_PER_USER=1)
async def test_a_consumer_cancelled_mid_send_gives_back_its_slot_groups_and_tasks(
    ws, user, make_chat
):
    from channels.layers import get_channel_layer

    from messaging.fanout import local_fanout

    chat = await database_sync_to_async(make_chat)(user)
    sending = asyncio.Event()

    async def stuck_writer(*args, **kwargs):
        sending.set()
        await asyncio.Event().wait()  # The database never answers.

    socket = await ws(user)
    fanout = local_fanout(get_channel_layer())
    assert f"chat.{chat.pk}" in fanout.listeners and sockets.socket_count(user.pk) == 1
    with mock.patch("messaging.consumers.run_on_writer", stuck_writer):
        await socket.send_json_to({"type": "new_message", "chat_id": chat.pk, "text": "hi"})
        await asyncio.wait_for(sending.wait(), 3)
        socket.future.cancel()  # What daphne does past its application close timeout.
        with pytest.raises(asyncio.CancelledError):
            await socket.future

    assert sockets.socket_count(user.pk) == 0  # Given back by the cancellation itself.
    for _ in range(300):  # The unsubscriptions run in the background.
        if not {f"chat.{chat.pk}", f"user.{user.pk}"} & set(fanout.listeners):
            break
        await asyncio.sleep(0.01)
    assert f"chat.{chat.pk}" not in fanout.listeners
    assert f"user.{user.pk}" not in fanout.listeners
    await ws(user)  # Not refused with 4429.
