"""The history checker itself: hand-made histories that must pass, and for each rule one that
must fail with that rule named (tests_adversarial/history.py has the rules)."""

from __future__ import annotations

from typing import Any

from tests_adversarial.history import (
    ACKED,
    DELETE,
    EDIT,
    NEW,
    REACT,
    REFUSED,
    TIMED_OUT,
    UNREACT,
    UNSETTLED,
    UPDATED,
    ClientHistory,
    check_history,
)

EDITED_AT = "2026-01-01T00:01:00Z"


def _message(message_id: int, seq: int, **changes: Any) -> dict[str, Any]:
    message = {
        "id": message_id,
        "chat_id": 1,
        "author_id": 1,
        "text": f"text {message_id}",
        "created_at": f"2026-01-01T00:00:{message_id:02d}Z",
        "client_id": f"c{message_id}",
        "seq": seq,
        "edited_at": None,
        "deleted": False,
        "reactions": {},
    }
    return message | changes


def _stored(*messages: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {message["id"]: message for message in messages}


def _author(sends: int = 3) -> ClientHistory:
    """User 1, who sent messages 1..sends (client_ids c1..), each acknowledged."""
    client = ClientHistory(name="a", user_id=1)
    client.sent = {f"c{n}": f"text {n}" for n in range(1, sends + 1)}
    client.acked = {f"c{n}": n for n in range(1, sends + 1)}
    return client


def _tried(
    client: ClientHistory,
    kind: str,
    message_id: int,
    outcome: str,
    value: str = "",
    *,
    status: int | None = None,
    seq: int | None = None,
) -> None:
    tried = client.attempt(kind, message_id, value)
    tried.outcome, tried.status, tried.seq = outcome, status, seq


def _live(client: ClientHistory, *events: tuple[str, dict[str, Any]]) -> None:
    client.connected()
    for kind, message in events:
        client.event(kind, message)


# The scenario every test starts from: user 1 sends messages 1, 2, 3 (seq 1-3); user 2 reacts
# to 1 (seq 4); user 1 edits 2 (seq 5) and deletes 3 (seq 6). Both see everything live.
M1, M2, M3 = _message(1, 1), _message(2, 2), _message(3, 3)
M1_REACTED = _message(1, 4, reactions={"👍": [2]})
M2_EDITED = _message(2, 5, text="edited", edited_at=EDITED_AT)
M3_DELETED = _message(3, 6, text="", deleted=True)
EVERYTHING = [
    (NEW, M1),
    (NEW, M2),
    (NEW, M3),
    (UPDATED, M1_REACTED),
    (UPDATED, M2_EDITED),
    (UPDATED, M3_DELETED),
]


def _scenario() -> tuple[ClientHistory, ClientHistory, dict[int, dict[str, Any]]]:
    author, reactor = _author(), ClientHistory(name="b", user_id=2)
    _tried(reactor, REACT, 1, ACKED, "👍")
    _tried(author, EDIT, 2, ACKED, "edited", seq=5)
    author.acknowledged_state(M2_EDITED)
    _tried(author, DELETE, 3, ACKED)
    for client in (author, reactor):
        _live(client, *EVERYTHING)
    return author, reactor, _stored(M1_REACTED, M2_EDITED, M3_DELETED)


def _problems(*clients: ClientHistory, stored: dict[int, dict[str, Any]]) -> list[str]:
    return check_history(list(clients), stored)


def _only_rule(problems: list[str], rule: str) -> None:
    assert problems, "the checker found nothing"
    assert all(problem.startswith(rule) for problem in problems), problems


# --- Histories that must pass -------------------------------------------------------------------


def test_a_consistent_history_of_sends_edits_reactions_and_deletes_passes() -> None:
    author, reactor, stored = _scenario()
    assert _problems(author, reactor, stored=stored) == []


def test_a_fill_that_brings_a_changed_message_once_as_it_is_now_passes() -> None:
    """On a second connection, seq 2 was lost live; by the time the socket read the gap from
    the database, message 2 had been edited (seq 5): it comes once, at seq 5, as
    message_updated (its id is below one already shown)."""
    author, reactor, stored = _scenario()
    reactor.connected()
    for kind, message in [(NEW, M1), (NEW, M3), *EVERYTHING[3:]]:
        reactor.event(kind, message)
    assert _problems(author, reactor, stored=stored) == []


def test_a_change_superseded_before_the_fill_may_be_skipped() -> None:
    """Seq 5 (an edit of 2) was lost; by the time of the fill, 2 was edited again (seq 7):
    the connection shows 6, then 2 at 7."""
    author, reactor, _ = _scenario()
    again = _message(2, 7, text="again", edited_at=EDITED_AT)
    _tried(author, EDIT, 2, ACKED, "again", seq=7)
    stored = _stored(M1_REACTED, again, M3_DELETED)
    for client in (author, reactor):
        client.sessions[-1].clear()
        client.connected()
        for kind, message in EVERYTHING[:4] + [(UPDATED, M3_DELETED), (UPDATED, again)]:
            client.event(kind, message)
    assert _problems(author, reactor, stored=stored) == []


def test_a_connection_cut_before_a_change_and_a_since_seq_catch_up_pass() -> None:
    author, reactor, stored = _scenario()
    reactor.sessions.clear()
    reactor.answered.clear()
    reactor.view.clear()
    reactor.observed.clear()
    _live(reactor, (NEW, M1), (NEW, M2))  # Cut here; then a catch-up from seq 2.
    reactor.caught_up([M1_REACTED, M2_EDITED, M3_DELETED])
    assert _problems(author, reactor, stored=stored) == []


def test_an_answer_to_a_resend_is_out_of_band() -> None:
    """The author resent c2: the answer (2 as it is now) comes after 3, and 2's live copy is
    indistinguishable from an answer: both kept apart, and the connection may skip 2."""
    author, reactor, stored = _scenario()
    author.sessions.clear()
    author.answered.clear()
    author.resent.add("c2")
    _live(author, (NEW, M1), (NEW, M3), (NEW, M2), *EVERYTHING[3:])
    assert author.answered[-1] == {2}
    assert _problems(author, reactor, stored=stored) == []


def test_unsettled_and_timed_out_tries_may_or_may_not_have_applied() -> None:
    """An edit tried after the last acknowledgement failed with a 5xx: either text is right.
    A reaction added and acknowledged, then a removal timed out: either state is right."""
    for applied in (False, True):
        author, reactor, _ = _scenario()
        _tried(author, EDIT, 2, UNSETTLED, "later")
        _tried(reactor, UNREACT, 1, TIMED_OUT, "👍")
        m1 = _message(1, 8) if applied else M1_REACTED
        m2 = _message(2, 7, text="later", edited_at=EDITED_AT) if applied else M2_EDITED
        for client in (author, reactor):
            client.caught_up([m2, m1] if applied else [])
        stored = _stored(m1, m2, M3_DELETED)
        assert _problems(author, reactor, stored=stored) == [], applied


def test_a_delete_by_the_owner_wins_over_an_acknowledged_edit_and_a_refused_one() -> None:
    author, owner, _ = _scenario()
    owner.user_id = 2  # The chat's owner (the checker does not need to know).
    _tried(owner, DELETE, 2, UNSETTLED)
    _tried(owner, DELETE, 2, ACKED)  # The retry: 204 whether the first applied or not.
    _tried(author, EDIT, 2, REFUSED, "too late", status=404)
    m2 = _message(2, 7, text="", deleted=True, edited_at=EDITED_AT)
    for client in (author, owner):
        client.event(UPDATED, m2)
    assert _problems(author, owner, stored=_stored(M1_REACTED, m2, M3_DELETED)) == []


# --- Each rule, shown to fail -------------------------------------------------------------------


def test_s1_a_lost_acknowledged_send() -> None:
    author, reactor, stored = _scenario()
    author.acked["c4"] = 4
    author.sent["c4"] = "text 4"
    _only_rule(_problems(author, reactor, stored=stored), "S1")


def test_s2_a_send_stored_twice_or_never_sent() -> None:
    author, reactor, stored = _scenario()
    twice = _message(4, 7, client_id="c2")
    never = _message(5, 8, client_id="never")
    stored |= _stored(twice, never)
    for client in (author, reactor):
        client.event(NEW, twice)
        client.event(NEW, never)
    problems = _problems(author, reactor, stored=stored)
    assert any("'c2' of user 1 stored 2 times" in problem for problem in problems)
    assert any("never sent" in problem for problem in problems)


def test_c1_an_acknowledged_edit_lost() -> None:
    author, reactor, _ = _scenario()
    m2 = _message(2, 5, edited_at=EDITED_AT)  # Stored with the old text.
    for client in (author, reactor):
        client.caught_up([m2])
        client.observed.pop((2, 5))
        client.view[2] = (5, client.view[2][1])
    problems = _problems(author, reactor, stored=_stored(M1_REACTED, m2, M3_DELETED))
    assert any(p.startswith("C1 message 2: stored text 'text 2'") for p in problems), problems


def test_c1_an_unsettled_edit_before_the_last_acknowledged_one_excuses_nothing() -> None:
    author, reactor, stored = _scenario()
    author.attempts.clear()
    _tried(author, EDIT, 2, UNSETTLED, "first try")
    _tried(author, EDIT, 2, ACKED, "edited", seq=5)
    _tried(author, DELETE, 3, ACKED)
    assert _problems(author, reactor, stored=stored) == []
    stored[2] = _message(2, 5, text="first try", edited_at=EDITED_AT)
    problems = [p for p in _problems(author, reactor, stored=stored) if p.startswith("C")]
    assert problems and all(p.startswith("C1 message 2") for p in problems), problems


def test_c1_edited_at_and_edits_by_someone_else() -> None:
    author, reactor, stored = _scenario()
    stored[2] = M2_EDITED | {"edited_at": None}
    assert any("edited_at is null" in p for p in _problems(author, reactor, stored=stored))
    author, reactor, stored = _scenario()
    stored[1] = M1_REACTED | {"edited_at": EDITED_AT}
    assert any("nobody edited it" in p for p in _problems(author, reactor, stored=stored))
    author, reactor, stored = _scenario()
    _tried(reactor, EDIT, 1, ACKED, "text 1", seq=4)
    assert any("not its author" in p for p in _problems(author, reactor, stored=stored))


def test_c2_acknowledged_reactions_lost_or_made_by_nobody() -> None:
    author, reactor, _ = _scenario()
    stored = _stored(_message(1, 4), M2_EDITED, M3_DELETED)  # The acknowledged 👍 is gone.
    problems = _problems(author, reactor, stored=stored)
    assert any(p.startswith("C2 message 1: reaction 👍 of user 2 is absent") for p in problems)
    author, reactor, stored = _scenario()
    _tried(reactor, UNREACT, 1, ACKED, "👍")  # Removed, acknowledged: still there.
    problems = _problems(author, reactor, stored=stored)
    assert any(p.startswith("C2 message 1: reaction 👍 of user 2 is present") for p in problems)
    author, reactor, stored = _scenario()
    stored[2] = M2_EDITED | {"reactions": {"🎉": [1]}}  # Nobody added it.
    problems = _problems(author, reactor, stored=stored)
    assert any(p.startswith("C2 message 2: reaction 🎉 of user 1 is present") for p in problems)


def test_c3_deletes() -> None:
    author, reactor, _ = _scenario()
    stored = _stored(M1_REACTED, M2_EDITED, M3)  # The acknowledged delete of 3 is lost.
    problems = _problems(author, reactor, stored=stored)
    assert any(p.startswith("C3 a: delete") for p in problems), problems
    author, reactor, stored = _scenario()
    author.attempts = [tried for tried in author.attempts if tried.kind != DELETE]
    _only_rule(_problems(author, reactor, stored=stored), "C3 message 3 is deleted, but no")
    author, reactor, stored = _scenario()
    stored[3] = M3_DELETED | {"text": "still here"}
    assert any("is deleted but keeps" in p for p in _problems(author, reactor, stored=stored))
    author, reactor, stored = _scenario()
    _tried(reactor, REACT, 2, REFUSED, "🎉", status=404)  # 2 is not deleted.
    problems = _problems(author, reactor, stored=stored)
    _only_rule(problems, "C3 b: react")


def test_c4_an_acknowledged_seq_beyond_the_stored_one() -> None:
    author, reactor, stored = _scenario()
    _tried(author, EDIT, 2, ACKED, "edited", seq=9)
    problems = _problems(author, reactor, stored=stored)
    assert any(p.startswith("C4 message 2: edit") for p in problems), problems


def test_a1_shown_but_not_stored_or_stored_otherwise() -> None:
    author, reactor, stored = _scenario()
    reactor.event(NEW, _message(4, 7, author_id=2, client_id="b1"))
    problems = _problems(author, reactor, stored=stored)
    assert any("A1 b: shown message 4, not stored" in p for p in problems), problems
    author, reactor, stored = _scenario()
    reactor.event(UPDATED, M2_EDITED | {"seq": 9})
    assert any(
        "shown at seq 9, stored at seq 5" in p for p in _problems(author, reactor, stored=stored)
    )
    author, reactor, stored = _scenario()
    stored[1] = M1_REACTED | {"reactions": {"👍": [2], "🎉": [1]}}
    _tried(author, REACT, 1, UNSETTLED, "🎉")
    problems = _problems(author, reactor, stored=stored)
    assert any(p.startswith("A1 b: message 1 at its stored seq 4") for p in problems), problems


def test_a2_one_change_with_two_contents() -> None:
    author, reactor, stored = _scenario()
    reactor.caught_up([M1_REACTED | {"reactions": {}}])  # Seq 4 without the reaction.
    problems = _problems(author, reactor, stored=stored)
    assert any(p.startswith("A2 b: message 1 at seq 4") for p in problems), problems
    author, reactor, stored = _scenario()
    reactor.observed[(1, 4)] = reactor.observed[(1, 1)]  # Seen differently by a and b.
    problems = _problems(author, reactor, stored=stored)
    assert any(p.startswith("A2 message 1 at seq 4 shown to a") for p in problems), problems
    author, reactor, stored = _scenario()
    reactor.observed[(2, 4)] = reactor.observed[(2, 2)]
    problems = _problems(author, reactor, stored=stored)
    assert any("A2 seq 4 names two messages: 1 and 2" in p for p in problems), problems


def test_o1_a_change_twice_or_out_of_order_on_one_connection() -> None:
    author, reactor, stored = _scenario()
    _live(reactor, (NEW, M1), (UPDATED, M1_REACTED), (UPDATED, M1_REACTED))
    _only_rule(_problems(author, reactor, stored=stored), "O1 b connection 1")
    author, reactor, stored = _scenario()
    _live(reactor, (NEW, M1), (NEW, M2), (UPDATED, M1_REACTED), (NEW, M3), (UPDATED, M2_EDITED))
    problems = _problems(author, reactor, stored=stored)
    _only_rule(problems, "O1 b connection 1: new_message of message 3 at seq 3 after seq 4")


def test_o2_new_message_ids_going_back() -> None:
    author, reactor, stored = _scenario()
    m3_first = M3 | {"seq": 2}
    m2_later = M2 | {"seq": 3}
    reactor.observed.clear()
    reactor.view.clear()
    reactor.sessions.clear()
    reactor.answered.clear()
    _live(reactor, (NEW, M1), (NEW, m3_first), (NEW, m2_later), *EVERYTHING[3:])
    problems = [p for p in _problems(author, reactor, stored=stored) if p.startswith("O")]
    assert problems == ["O2 b connection 0: new_message 2 after new_message 3"], problems


def test_o3_a_change_skipped_and_never_made_good() -> None:
    """The connection jumps from seq 3 to 5 and goes on to 6: seq 4 (1's reaction, its latest
    change) never comes. The catch-up fills the view, so only the order rule can tell."""
    author, reactor, stored = _scenario()
    _live(reactor, (NEW, M1), (NEW, M2), (NEW, M3), (UPDATED, M2_EDITED), (UPDATED, M3_DELETED))
    problems = _problems(author, reactor, stored=stored)
    _only_rule(problems, "O3 b connection 1: change seq 4 (message 1) skipped between seq 3")


def test_o4_a_message_skipped_between_two_new_messages() -> None:
    author, reactor, _ = _scenario()
    stored = _stored(M1, M2, M3)
    author.attempts.clear()
    reactor.attempts.clear()
    for client in (author, reactor):
        client.sessions.clear()
        client.answered.clear()
        client.observed.clear()
        client.view.clear()
        client.caught_up([M1, M2, M3])
    # Seq 2's message is unknown to the order rule (nobody saw its seq)...
    reactor.observed.pop((2, 2))
    _live(reactor, (NEW, M1), (NEW, M3))
    problems = _problems(author, reactor, stored=stored)
    # ...but the id rule sees message 2 skipped (A2/known changes come from the database too).
    assert any(p.startswith("O4 b connection 0: messages [2]") for p in problems), problems


def test_v1_a_view_missing_a_message_or_holding_an_old_state() -> None:
    author, reactor, stored = _scenario()
    reactor.view.pop(3)
    _only_rule(_problems(author, reactor, stored=stored), "V1 b: view holds 2 messages")
    author, reactor, stored = _scenario()
    reactor.view[2] = author.view[2] = (2, reactor.observed[(2, 2)])
    problems = _problems(author, reactor, stored=stored)
    _only_rule(problems, "V1")
    assert any("message 2 held at seq 2 as 'text 2'" in problem for problem in problems)
