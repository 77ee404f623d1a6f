"""Client frames: decoding that never raises, and the echo an error carries."""

from __future__ import annotations

import json

import pytest

from messaging import frames


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (None, "Frames must be JSON text, not binary."),
        ("{", "The frame is not valid JSON."),
        ('{"a": NaN}', "The frame is not valid JSON."),
        ("[" * 40 + "]" * 40, "The frame is nested deeper than 32 levels."),
        # Past Python's recursion limit the parser itself gives up: still an answer.
        ("[" * 5000 + "]" * 5000, "The frame is not valid JSON."),
    ],
)
def test_what_is_not_a_json_event_gets_a_reason_not_an_exception(text, problem):
    assert frames.decode(text) == (None, problem)


def test_json_is_decoded_as_it_is():
    assert frames.decode('{"type": "typing", "chat_id": 1}') == (
        {"type": "typing", "chat_id": 1},
        None,
    )


def test_the_echo_holds_only_the_scalars_type_chat_id_and_client_id():
    event = {"type": "new_message", "chat_id": [1], "client_id": "a\ud800", "text": "secret"}

    assert frames.request_echo(event) == {"type": "new_message"}
    assert frames.request_echo({"type": "x", "chat_id": 5, "client_id": "c"}) == {
        "type": "x",
        "chat_id": 5,
        "client_id": "c",
    }
    assert frames.request_echo(["not", "an", "object"]) == {}


def test_sizes_count_utf8_bytes_when_the_length_alone_does_not_decide(settings):
    settings.WS_MAX_FRAME_BYTES = 100

    assert frames.frame_size("a" * 25, None) == 25
    assert frames.frame_size("é" * 60, None) == 120
    assert frames.frame_size(None, b"\x00" * 7) == 7
    assert json.loads(json.dumps(frames.shown("x" * 500)))[-3:] == "..."
