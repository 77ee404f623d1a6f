"""The history checker itself: each kind of violation it exists for is reported."""

from __future__ import annotations

from tests_adversarial.history import ClientHistory, check_history


def _message(message_id: int, author_id: int = 1, client_id: str | None = None) -> dict:
    return {
        "id": message_id,
        "author_id": author_id,
        "text": f"text {message_id}",
        "client_id": client_id or f"c{message_id}",
    }


def _stored(*ids: int) -> dict[int, dict]:
    return {
        message_id: {key: value for key, value in _message(message_id).items() if key != "id"}
        for message_id in ids
    }


def _client(live: list[int], acked: dict[str, int] | None = None) -> ClientHistory:
    client = ClientHistory(name="a", user_id=1)
    client.sent = {f"c{n}" for n in range(1, 10)}
    client.acked = acked or {}
    client.connected()
    for message_id in live:
        client.see(_message(message_id))
    return client


def test_a_consistent_history_passes() -> None:
    assert check_history([_client([1, 2, 3], {"c2": 2})], _stored(1, 2, 3)) == []


def test_a_lost_acknowledged_message_is_reported() -> None:
    problems = check_history([_client([1, 2], {"c3": 3})], _stored(1, 2))
    assert any("ack 'c3'" in problem for problem in problems)


def test_a_message_announced_but_not_stored_is_reported() -> None:
    problems = check_history([_client([1, 2, 3])], _stored(1, 3))
    assert any("announced" in problem for problem in problems)


def test_a_gap_within_one_connection_is_reported() -> None:
    problems = check_history([_client([1, 3])], _stored(1, 2, 3))
    assert any("[2] skipped between 1 and 3" in problem for problem in problems)
    assert any("missing [2]" in problem for problem in problems)


def test_a_gap_filled_by_the_answer_to_a_resend_is_not_a_gap() -> None:
    client = _client([1])
    client.answer(_message(2))
    client.see(_message(3))
    assert check_history([client], _stored(1, 2, 3)) == []


def test_a_duplicate_or_reordering_within_one_connection_is_reported() -> None:
    problems = check_history([_client([1, 2, 2, 3])], _stored(1, 2, 3))
    assert any("2 after 2" in problem for problem in problems)


def test_a_message_stored_twice_or_never_sent_is_reported() -> None:
    stored = _stored(1, 2)
    stored[3] = {"author_id": 1, "text": "text 3", "client_id": "c2"}
    stored[4] = {"author_id": 1, "text": "text 4", "client_id": "never"}
    problems = check_history([], stored)
    assert any("'c2' of user 1 stored 2 times" in problem for problem in problems)
    assert any("never sent" in problem for problem in problems)


def test_a_catch_up_fills_what_the_live_stream_missed() -> None:
    client = _client([1])
    client.connected()
    client.merge([2, 3])
    client.see(_message(3))
    client.see(_message(4))
    assert check_history([client], _stored(1, 2, 3, 4)) == []
