"""ChatStream: in-order, exactly-once delivery of a chat's messages to one socket."""

from messaging.streams import ChatStream


def test_in_order_messages_pass_straight_through():
    stream = ChatStream(chat_id=1, last_id=None)

    assert stream.accept(10, None, "m10") == ["m10"]
    assert stream.accept(12, 10, "m12") == ["m12"]
    assert not stream.has_gap


def test_a_message_waits_for_its_predecessor_then_both_go_in_order():
    stream = ChatStream(chat_id=1, last_id=10)

    assert stream.accept(14, 12, "m14") == []
    assert stream.has_gap and stream.newest_waiting_id() == 14
    assert stream.accept(12, 10, "m12") == ["m12", "m14"]
    assert not stream.has_gap


def test_duplicates_and_messages_older_than_the_start_are_dropped():
    stream = ChatStream(chat_id=1, last_id=10)

    assert stream.accept(9, 8, "old") == []
    assert stream.accept(11, 10, "m11") == ["m11"]
    assert stream.accept(11, 10, "m11 again") == []


def test_a_gap_is_filled_from_the_database_and_unblocks_what_waited():
    stream = ChatStream(chat_id=1, last_id=10)
    stream.accept(16, 15, "m16")

    frames = stream.fill([(12, "m12"), (15, "m15"), (16, "m16 from db")])

    assert frames == ["m12", "m15", "m16 from db"]
    assert stream.last_id == 16 and not stream.has_gap


def test_a_fill_that_stops_short_still_releases_what_it_reached():
    stream = ChatStream(chat_id=1, last_id=10)
    stream.accept(16, 15, "m16")
    stream.accept(18, 16, "m18")

    assert stream.fill([(15, "m15")]) == ["m15", "m16", "m18"]


def test_a_broken_chain_after_a_deletion_does_not_block_forever():
    stream = ChatStream(chat_id=1, last_id=10)

    # The predecessor was deleted, so the chat's previous message id became null.
    assert stream.accept(20, None, "m20") == ["m20"]


def test_a_predecessor_behind_what_was_delivered_is_not_a_gap():
    stream = ChatStream(chat_id=1, last_id=30)

    assert stream.accept(31, 25, "m31") == ["m31"]
