"""A copy of a message read from the database is the message as of its seq (history rule A2).

A message's seq is that of its latest change (CONTRACT.md, "A chat's change log"), so a copy
that says seq S must hold exactly the changes up to S. A history page (messaging/views.py), a
socket's gap fill (positions.missed_changes) and the answer to a resend
(services.messages._sent_from_row, then _repeat's reactions) once read a message's row, then its
reactions, in two statements. Under READ COMMITTED each had its own snapshot, and a reaction
committed by someone else between the two showed in a copy that still carried the older seq
(the soak found it: docs/reliability.md, finding 8). Pages and gap fills now read both in one
statement (history._PAGE_SQL); the resend's answer reads them in one snapshot
(history.one_snapshot), and here another connection commits the reaction in exactly that window.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from messaging import events, positions, services
from messaging.models import ChatMember
from messaging.reactions import reactions_by_message
from messaging.services import messages

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

EMOJI = "👍"


def _from_another_connection(work: Callable[[], Any]) -> None:
    """Run `work` in a thread of its own, hence on a database connection of its own, and
    wait for its commit."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as error:  # Re-raised in the test's thread.
            failures.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert not failures, failures


@pytest.fixture
def racing_reaction(user, other_user, make_chat, monkeypatch):
    """A chat with one message (seq 1); `arm(module)` makes the next read of reactions in
    that module first commit other_user's reaction to it (seq 2) from another connection."""
    chat = make_chat(user, [other_user])
    message = services.message_send(author=user, chat_id=chat.pk, text="hi", client_id="k").message

    def arm(module: Any) -> None:
        def read_after_a_reaction(ids: Iterable[int]) -> dict[int, dict[str, list[int]]]:
            monkeypatch.setattr(module, "reactions_by_message", reactions_by_message)
            _from_another_connection(
                lambda: services.reaction_add(
                    user=other_user, chat_id=chat.pk, message_id=message.pk, emoji=EMOJI
                )
            )
            return reactions_by_message(ids)

        monkeypatch.setattr(module, "reactions_by_message", read_after_a_reaction)

    return chat, message, arm


def _as_of_its_seq(seq: int, reactions: dict[str, list[int]], reactor_id: int) -> bool:
    return (seq, reactions) in [(1, {}), (2, {EMOJI: [reactor_id]})]


@pytest.mark.parametrize("query", ["since_seq=0", "after=0", "before=99999999", ""])
def test_a_page_reads_messages_and_their_reactions_in_one_statement(
    racing_reaction, auth_client, user, query
):
    chat, message, _ = racing_reaction
    services.reaction_add(user=user, chat_id=chat.pk, message_id=message.pk, emoji=EMOJI)

    with CaptureQueriesContext(connection) as reads:
        page = auth_client.get(f"/chats/{chat.pk}/messages?{query}").json()["results"]

    assert page[0]["reactions"] == {EMOJI: [user.pk]}
    touching = [read["sql"] for read in reads if "messaging_reaction" in read["sql"]]
    assert len(touching) == 1 and "messaging_message" in touching[0], touching


def test_a_gap_fill_reads_messages_and_their_reactions_in_one_statement(racing_reaction, user):
    chat, message, _ = racing_reaction
    services.reaction_add(user=user, chat_id=chat.pk, message_id=message.pk, emoji=EMOJI)
    member = ChatMember.objects.get(chat=chat, user=user)

    with CaptureQueriesContext(connection) as reads:
        missed = positions.missed_changes(
            chat_id=chat.pk, user_id=user.pk, joined_revision=member.joined_revision, after_seq=0
        )

    assert missed is not None
    [found] = missed.found
    assert json.loads(found.new_frame())["message"]["reactions"] == {EMOJI: [user.pk]}
    touching = [read["sql"] for read in reads if "messaging_reaction" in read["sql"]]
    assert len(touching) == 1 and "messaging_message" in touching[0], touching


def test_the_answer_to_a_resend_shows_the_message_as_of_its_seq(racing_reaction, user, other_user):
    chat, _, arm = racing_reaction
    arm(messages)

    repeat = services.message_send(author=user, chat_id=chat.pk, text="hi", client_id="k")

    assert not repeat.created
    copy = events.message_data(repeat.message, repeat.reactions)
    assert _as_of_its_seq(copy["seq"], copy["reactions"], other_user.pk), copy
