"""Property-based fuzzing of the WebSocket protocol on the real ASGI application.

Every frame drawn here is one the server must refuse: arbitrary JSON values, objects with
unknown or internal type names (`websocket.disconnect`, `chat.message`: the names of the
consumer's own ASGI and channel-layer handlers must not be reachable from a client), known
types with a field of the wrong type or out of range, non-JSON text, binary frames, NaN and
Infinity, deep nesting. For each, the sending socket gets exactly one `error` event with a
contract code and stays usable; at the end nothing was stored, nobody else got anything, and
both sockets still send and receive.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import IN_CI
from messaging import services
from messaging.frames import MAX_JSON_DEPTH, _nested_deeper_than
from messaging.models import ChatMember, Message
from messaging.serializers import MAX_ID
from tests_adversarial.sockets import drain, next_event, next_output, quiet, send_message

pytestmark = pytest.mark.django_db(transaction=True)

CONTRACT_CODES = {"invalid_json", "unknown_type", "validation_error", "not_found", "rate_limited"}
VALID_TYPES = ("new_message", "read_message", "typing")
# Valid too, but a bad token in it closes the socket (4401) by design: not fuzzed as "unknown".
SESSION_TYPES = ("auth",)
# Names the consumer answers to internally: ASGI message types, channel-layer event types and
# the Python methods behind them. None may be dispatched from a client frame.
INTERNAL_TYPES = (
    "websocket.connect",
    "websocket.receive",
    "websocket.disconnect",
    "websocket.send",
    "websocket.close",
    "websocket.accept",
    "chat.message",
    "chat.change",
    "chat.info",
    "chat.typing",
    "user.read",
    "user.membership",
    "user.revoked",
    "layer.reconnected",
    "on_chat_event",
    "on_group_event",
    "on_layer_reconnected",
    "end_session",
    "on_auth",
    "chat_message",
    "chat_typing",
    "user_read",
    "user_membership",
    "websocket_receive",
    "websocket_disconnect",
    "receive_json",
    "on_new_message",
    "connect",
    "disconnect",
    "dispatch",
    "send",
    "close",
    "__init__",
    "HANDLERS",
    "NEW_MESSAGE",
    "new_message ",
    "Typing",
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=25,
)

# Values that no id field may accept: wrong JSON types, out of range, or floats with a
# fraction. (Numeric strings and integral floats such as "5" or 5.0 are coerced by DRF's
# IntegerField, so they are valid ids, not wrong types.)
bad_ids = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(max_value=0),
    st.integers(min_value=MAX_ID + 1, max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()),
    st.text(max_size=12).filter(lambda s: not s.strip().lstrip("+-").isdigit()),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
bad_texts = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.just(""),
    st.text(alphabet=" \t\n\r\u00a0\u2003\u3000", min_size=1, max_size=30),
    st.text(min_size=1, max_size=10).map(lambda s: s + "\x00"),
    st.text(min_size=4097, max_size=4200),
    st.lists(st.text(max_size=3), max_size=3),
)
bad_client_ids = st.one_of(
    st.just(""),
    st.text(min_size=65, max_size=80),
    st.integers(),
    st.booleans(),
    st.lists(st.text(max_size=3), min_size=1, max_size=2),
)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _not_json(name: str) -> None:
    raise ValueError(name)


def _text_frame(value: Any) -> str:
    return json.dumps(value)


class Ctx:
    """Ids of the world the fuzzer attacks, filled in by the test before drawing."""

    chat_id = 0  # A chat of A and B.
    foreign_chat_id = 0  # A chat that A is not a member of.
    foreign_message_id = 0  # A message in the foreign chat.


def _wrong_field(event_type: str) -> st.SearchStrategy[dict[str, Any]]:
    """A known event type with exactly one field made invalid (or missing)."""
    chat = st.builds(lambda: Ctx.chat_id)
    if event_type == "typing":
        return st.fixed_dictionaries({"type": st.just("typing"), "chat_id": bad_ids})
    if event_type == "read_message":
        return st.one_of(
            st.fixed_dictionaries({"type": st.just(event_type), "chat_id": bad_ids, "id": chat}),
            st.fixed_dictionaries({"type": st.just(event_type), "chat_id": chat, "id": bad_ids}),
            st.fixed_dictionaries({"type": st.just(event_type), "chat_id": chat}),
        )
    return st.one_of(
        st.fixed_dictionaries({"type": st.just(event_type), "chat_id": bad_ids, "text": st.text()}),
        st.fixed_dictionaries({"type": st.just(event_type), "chat_id": chat, "text": bad_texts}),
        st.fixed_dictionaries({"type": st.just(event_type), "chat_id": chat}),
        st.fixed_dictionaries(
            {
                "type": st.just(event_type),
                "chat_id": chat,
                "text": st.just("hi"),
                "client_id": bad_client_ids,
            }
        ),
    )


def _foreign(event_type: str) -> dict[str, Any]:
    """A well-formed event about a chat (and message) that belong to other people."""
    event: dict[str, Any] = {"type": event_type, "chat_id": Ctx.foreign_chat_id}
    if event_type == "new_message":
        event.update(text="let me in", client_id="intruder")
    if event_type == "read_message":
        event["id"] = Ctx.foreign_message_id
    return event


@st.composite
def rejected_frames(draw: st.DrawFn) -> tuple[str | bytes, set[str]]:
    """A frame the server must refuse, and the error codes it may answer with."""
    kind = draw(
        st.sampled_from(
            [
                "json_value",
                "object",
                "internal",
                "wrong_field",
                "foreign",
                "not_json",
                "binary",
                "non_finite",
                "deep",
            ]
        )
    )
    if kind == "json_value":
        value = draw(json_values.filter(lambda v: not isinstance(v, dict)))
        return _text_frame(value), {"invalid_json", "validation_error"}
    if kind == "object":
        value = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
        if draw(st.booleans()):
            value["type"] = draw(json_values)
        assume(value.get("type") not in (*VALID_TYPES, *SESSION_TYPES))
        return _text_frame(value), {"unknown_type"}
    if kind == "internal":
        value = draw(st.dictionaries(st.text(max_size=8), json_scalars, max_size=3))
        value["type"] = draw(st.sampled_from(INTERNAL_TYPES))
        # What a forged channel-layer event would carry, were it dispatched.
        value.update(chat_id=Ctx.foreign_chat_id, message_id=1, seq=1, rev=99, new=True)
        value["frame"] = json.dumps({"type": "new_message", "message": {"id": 1}})
        return _text_frame(value), {"unknown_type"}
    if kind == "wrong_field":
        value = draw(st.sampled_from(VALID_TYPES).flatmap(_wrong_field))
        return _text_frame(value), {"validation_error"}
    if kind == "foreign":
        return _text_frame(_foreign(draw(st.sampled_from(VALID_TYPES)))), {"not_found"}
    if kind == "not_json":
        text = draw(st.text(max_size=200).filter(lambda t: not _is_json(t)))
        return text, {"invalid_json"}
    if kind == "binary":
        return draw(st.binary(max_size=2048)), {"invalid_json"}
    if kind == "non_finite":
        literal = draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))
        field = draw(st.sampled_from(["chat_id", "id", "text", "client_id", "x"]))
        return f'{{"type": "new_message", "{field}": {literal}}}', {"invalid_json"}
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    # As deep as fits in one 64 KiB frame: far deeper than Python's recursion limit.
    depth = draw(st.integers(min_value=100, max_value=65_000 // len(opener + closer)))
    core = opener * depth + "1" + closer * depth
    # Deeper than MAX_JSON_DEPTH: refused as invalid_json, however deep the parser got.
    if draw(st.booleans()):
        return f'{{"type": "typing", "chat_id": {core}}}', {"invalid_json"}
    return core, {"invalid_json"}


def _echo_expected(frame: str | bytes) -> dict[str, Any]:
    """What the error's `request` must echo: the event's scalar type, chat_id and client_id."""
    if isinstance(frame, bytes):
        return {}
    try:
        content = json.loads(frame, parse_constant=_not_json)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(content, dict) or _nested_deeper_than(content, MAX_JSON_DEPTH):
        return {}
    return {
        key: content[key]
        for key in ("type", "chat_id", "client_id")
        if key in content and isinstance(content[key], str | int | float | type(None))
    }


async def _send_frame(sock: Any, frame: str | bytes) -> None:
    # send_input, not send_to: an empty frame is a frame too.
    key = "bytes" if isinstance(frame, bytes) else "text"
    await sock.send_input({"type": "websocket.receive", key: frame})


@pytest.fixture
def world(make_user, make_chat, make_message, settings):
    """A and B share a chat; C and D share another, with a message, that A is not in."""
    settings.WS_RATE_BURST = 100_000  # The fuzzer is not testing the rate limit.
    a, b, c, d = (make_user() for _ in range(4))
    chat = make_chat(a, [b])
    foreign_chat = make_chat(c, [d])
    foreign_message = make_message(foreign_chat, c, "secret")
    Ctx.chat_id, Ctx.foreign_chat_id = chat.pk, foreign_chat.pk
    Ctx.foreign_message_id = foreign_message.pk
    return a, b, c, chat


def _db_state() -> tuple[list[tuple], list[tuple]]:
    messages = list(Message.objects.order_by("id").values_list("id", "chat_id", "text"))
    cursors = list(
        ChatMember.objects.order_by("id").values_list("chat_id", "user_id", "last_read_message_id")
    )
    return messages, cursors


@settings(
    max_examples=int(os.environ.get("WS_FUZZ_EXAMPLES", "150")),
    deadline=None,
    # Reproducible in CI (the same examples every run); a fresh search on developers' machines.
    derandomize=IN_CI,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(drawn=rejected_frames())
async def test_every_rejected_frame_gets_one_error_and_the_socket_stays_usable(
    ws_pair: dict[str, Any], drawn: tuple[str | bytes, set[str]]
) -> None:
    frame, codes = drawn
    sock = ws_pair["a"]
    await _send_frame(sock, frame)
    event = await next_event(sock)
    assert event["type"] == "error", (frame[:200], event)
    assert event["code"] in codes & CONTRACT_CODES, (frame[:200], event)
    assert isinstance(event["detail"], str) and event["detail"]
    assert event["request"] == _echo_expected(frame), (frame[:200], event)
    # A probe right behind it: its answer comes next, so the frame got exactly one reply and
    # the socket still works.
    ws_pair["probes"] += 1
    probe_id = f"probe-{ws_pair['probes']}"
    await sock.send_json_to({"type": "typing", "chat_id": MAX_ID, "client_id": probe_id})
    probe = await next_event(sock)
    assert probe["code"] == "not_found" and probe["request"]["client_id"] == probe_id, probe


@pytest.fixture
async def ws_pair(ws, world) -> Any:
    """A's socket under fuzz, and the sockets of B (same chat) and C (a stranger) watching."""
    a, b, c, chat = world
    before = await sync_to_async(_db_state)()
    pair = {
        "a": await ws(a),
        "b": await ws(b),
        "c": await ws(c),
        "probes": 0,
    }
    yield pair
    # After all the examples: nothing stored or changed, nobody else told anything...
    assert await sync_to_async(_db_state)() == before
    assert await drain(pair["b"]) == []
    assert await drain(pair["c"]) == []
    assert await quiet(pair["a"])
    # ...and every socket still works both ways.
    sent = await send_message(pair["a"], chat.pk, "still here", client_id="after-fuzz")
    assert sent["type"] == "new_message", sent
    assert (await next_event(pair["b"]))["message"]["text"] == "still here"
    reply = await send_message(pair["b"], chat.pk, "me too")
    assert reply["type"] == "new_message", reply
    assert (await next_event(pair["a"]))["message"]["text"] == "me too"
    # No forged `user.membership` subscribed A to the strangers' chat.
    await sync_to_async(services.message_send)(
        author=c, chat_id=Ctx.foreign_chat_id, text="still private"
    )
    assert (await next_event(pair["c"]))["message"]["text"] == "still private"
    assert await drain(pair["a"]) == []


async def test_a_frame_over_64_kib_closes_with_1009_and_others_are_unaffected(ws, world) -> None:
    a, b, _, chat = world
    limit = 64 * 1024
    for frame in ("x" * (limit + 1), b"\x00" * (limit + 1), json.dumps({"t": "é" * limit})):
        big, witness = await ws(a), await ws(b)
        await _send_frame(big, frame)
        output = await next_output(big)
        assert output == {"type": "websocket.close", "code": 1009}
        reply = await send_message(witness, chat.pk, "unaffected")
        assert reply["type"] == "new_message"
    stored = await sync_to_async(Message.objects.filter(chat=chat).count)()
    assert stored == 3


async def test_a_frame_of_exactly_64_kib_is_read(ws, world) -> None:
    a, _, _, chat = world
    sock = await ws(a)
    padding = 64 * 1024 - len(json.dumps({"type": "typing", "chat_id": MAX_ID, "p": ""}))
    frame = json.dumps({"type": "typing", "chat_id": MAX_ID, "p": "x" * padding})
    assert len(frame.encode()) == 64 * 1024
    await sock.send_to(text_data=frame)
    assert (await next_event(sock))["code"] == "not_found"


@pytest.mark.parametrize(
    ("frame", "code", "echo"),
    [
        # Each of these once crashed the consumer or made it send invalid JSON.
        ('{"type": ["new_message"]}', "unknown_type", {}),
        ('{"type": {"a": 1}, "chat_id": 1}', "unknown_type", {"chat_id": 1}),
        ('{"type": "new_message", "chat_id": NaN}', "invalid_json", {}),
        ('{"type": "x", "client_id": Infinity}', "invalid_json", {}),
        ("[" * 30_000 + "]" * 30_000, "invalid_json", {}),
        ('{"type": "typing", "chat_id": ' + "[" * 20_000 + "]" * 20_000 + "}", "invalid_json", {}),
        # Parses (under the recursion limit), then exhausted it in validation: server_error.
        ('{"type": "typing", "chat_id": ' + "[" * 900 + "]" * 900 + "}", "invalid_json", {}),
        ('{"type": "x\\ud800", "client_id": "\\udc00"}', "unknown_type", {}),
    ],
)
async def test_frames_that_once_crashed_the_consumer_get_an_error(ws, world, frame, code, echo):
    sock = await ws(world[0])
    await _send_frame(sock, frame)
    event = await next_event(sock)
    assert (event["code"], event["request"]) == (code, echo)
    # What goes out must be valid JSON that a strict parser (and UTF-8) accepts.
    json.loads(json.dumps(event), parse_constant=_not_json)
    json.dumps(event, ensure_ascii=False).encode()
    await sock.send_json_to({"type": "typing", "chat_id": MAX_ID})
    assert (await next_event(sock))["code"] == "not_found"


async def test_nesting_is_refused_past_the_depth_limit_only(ws, world) -> None:
    sock = await ws(world[0])
    within = "[" * (MAX_JSON_DEPTH - 1) + "1" + "]" * (MAX_JSON_DEPTH - 1)
    await sock.send_to(text_data=f'{{"type": "typing", "chat_id": {within}}}')
    assert (await next_event(sock))["code"] == "validation_error"
    beyond = "[" * MAX_JSON_DEPTH + "1" + "]" * MAX_JSON_DEPTH
    await sock.send_to(text_data=f'{{"type": "typing", "chat_id": {beyond}}}')
    assert (await next_event(sock))["code"] == "invalid_json"
