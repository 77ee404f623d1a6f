"""ChatStream: each change of a chat once, in seq order, `new_message` ids only growing."""

from messaging.streams import Change, ChatStream, Found


def stream_at(seq: int = 0, newest_id: int = 0) -> ChatStream:
    return ChatStream(chat_id=1, last_seq=seq, newest_id=newest_id, joined_revision=1)


def new(seq: int, message_id: int) -> Change:
    return Change(seq, message_id, True, f"new {message_id}")


def updated(seq: int, message_id: int) -> Change:
    return Change(seq, message_id, False, f"updated {message_id}@{seq}")


def found(seq: int, message_id: int, *, deleted: bool = False) -> Found:
    return Found(
        seq,
        message_id,
        deleted,
        lambda: f"new {message_id} as now",
        lambda: f"updated {message_id} as now",
    )


def test_changes_in_seq_order_pass_straight_through():
    stream = stream_at()

    assert stream.accept(new(1, 10)) == ["new 10"]
    assert stream.accept(updated(2, 10)) == ["updated 10@2"]
    assert stream.accept(new(3, 11)) == ["new 11"]
    assert not stream.has_gap and stream.newest_id == 11


def test_a_change_waits_for_its_predecessors_then_all_go_in_order():
    stream = stream_at(seq=4)

    assert stream.accept(new(7, 12)) == []
    assert stream.accept(updated(6, 3)) == []
    assert stream.has_gap and stream.newest_waiting_seq() == 7
    assert stream.accept(new(5, 11)) == ["new 11", "updated 3@6", "new 12"]
    assert not stream.has_gap and stream.last_seq == 7


def test_duplicates_and_changes_from_before_the_start_are_dropped():
    stream = stream_at(seq=10)

    assert stream.accept(new(9, 8)) == []
    assert stream.accept(new(11, 20)) == ["new 20"]
    assert stream.accept(new(11, 20)) == []


def test_a_fill_delivers_what_the_database_has_then_what_waited_beyond_it():
    stream = stream_at(seq=2, newest_id=5)
    stream.accept(new(6, 9))  # 3, 4 and 5 are missing.

    frames = stream.fill([found(3, 6), found(5, 7)], up_to_seq=5)

    # seq 4 changed message 6 again, now at seq 5... or another message; either way the
    # database's current state stands for every seq up to 5.
    assert frames == ["new 6 as now", "new 7 as now", "new 9"]
    assert stream.last_seq == 6 and not stream.has_gap


def test_a_fill_never_shows_a_new_message_below_one_already_shown():
    """Message 6 was created (seq 3) and edited (seq 5) while its broadcasts were lost, and 7
    was created at seq 4: in seq order, 7 comes first, so 6 comes as message_updated."""
    stream = stream_at(seq=2, newest_id=5)

    frames = stream.fill([found(4, 7), found(5, 6)], up_to_seq=5)

    assert frames == ["new 7 as now", "updated 6 as now"]
    assert stream.newest_id == 7


def test_a_tombstone_never_comes_as_a_new_message():
    stream = stream_at(seq=2, newest_id=5)

    assert stream.fill([found(3, 6, deleted=True)], up_to_seq=3) == ["updated 6 as now"]


def test_a_fill_drops_waiting_changes_it_covers():
    stream = stream_at(seq=2, newest_id=5)
    stream.accept(updated(4, 5))
    stream.accept(new(6, 8))

    frames = stream.fill([found(3, 6), found(5, 7)], up_to_seq=5)

    assert frames == ["new 6 as now", "new 7 as now", "new 8"]
    assert not stream.waiting
