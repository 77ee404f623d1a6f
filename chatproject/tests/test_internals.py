"""One test per framework internal this code relies on (docs/internals.md, by entry id).

Each checks the assumption itself: the attribute, the signature or the behaviour as the code
relies on it, so that an upgrade that changes it fails here, naming the ledger entry, instead of
somewhere far from the cause. Run them first after bumping a pin in requirements.txt.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import pprint
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import SyncToAsync, ThreadSensitiveContext, iscoroutinefunction, sync_to_async
from channels.consumer import AsyncConsumer, get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import InMemoryChannelLayer
from django.core.handlers.asgi import ASGIHandler
from django.db import connection, transaction
from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers

# --- Channels ------------------------------------------------------------------------------------


class Recorder:
    """An ASGI `send` that keeps what it is given."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)


def bare_websocket_consumer(send: Recorder) -> AsyncJsonWebsocketConsumer:
    """A generic JSON consumer set up as ChatConsumer.__call__ sets one up: no channel name."""
    consumer = AsyncJsonWebsocketConsumer()
    consumer.scope = {"type": "websocket", "path": "/", "headers": []}
    consumer.channel_layer = InMemoryChannelLayer()
    consumer.base_send = send
    return consumer


async def test_ch1_as_asgi_awaits_the_consumer_instance() -> None:
    calls = []

    class Probe(AsyncJsonWebsocketConsumer):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            calls.append((self, scope, receive, send))

    scope, receive, send = {"type": "websocket"}, object(), object()
    await Probe.as_asgi()(scope, receive, send)
    assert len(calls) == 1
    assert isinstance(calls[0][0], Probe)
    assert calls[0][1:] == (scope, receive, send)


async def test_ch1_websocket_consumer_needs_no_channel_name_without_groups() -> None:
    send = Recorder()
    consumer = bare_websocket_consumer(send)
    assert consumer.groups == []
    await consumer.websocket_connect({"type": "websocket.connect"})  # The default connect accepts.
    with pytest.raises(StopConsumer):
        await consumer.websocket_disconnect({"type": "websocket.disconnect", "code": 1000})
    assert not hasattr(consumer, "channel_name")
    assert [message["type"] for message in send.messages] == ["websocket.accept"]


def record_old_connection_closes(monkeypatch: pytest.MonkeyPatch, module: str) -> list[str]:
    """Replace `module.aclose_old_connections` by a stand-in that notes each call in the
    list returned (the tests below add their own steps to it, in order)."""
    order: list[str] = []

    async def closing() -> None:
        order.append("aclose_old_connections")

    monkeypatch.setattr(f"{module}.aclose_old_connections", closing)
    return order


async def test_ch2_stock_dispatch_closes_old_connections_before_each_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    order = record_old_connection_closes(monkeypatch, "channels.consumer")

    class Probe(AsyncConsumer):
        async def probe_event(self, message: dict[str, Any]) -> None:
            order.append("handler")

    await AsyncConsumer.dispatch(Probe(), {"type": "probe.event"})
    assert order == ["aclose_old_connections", "handler"]


async def test_ch2_stock_websocket_disconnect_closes_old_connections_after_disconnect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    order = record_old_connection_closes(monkeypatch, "channels.generic.websocket")

    class Probe(AsyncJsonWebsocketConsumer):
        async def disconnect(self, code: int) -> None:
            order.append(f"disconnect {code}")

    with pytest.raises(StopConsumer):
        await AsyncJsonWebsocketConsumer.websocket_disconnect(
            Probe(), {"type": "websocket.disconnect", "code": 1001}
        )
    assert order == ["disconnect 1001", "aclose_old_connections"]


async def test_ch3_accept_send_and_close_go_through_base_send() -> None:
    send = Recorder()
    consumer = bare_websocket_consumer(send)
    await consumer.accept()
    await consumer.send_json({"type": "hello"})
    await consumer.send(text_data="plain")
    await consumer.close(code=4000)
    assert send.messages == [
        {"type": "websocket.accept", "subprotocol": None},
        {"type": "websocket.send", "text": '{"type": "hello"}'},
        {"type": "websocket.send", "text": "plain"},
        {"type": "websocket.close", "code": 4000},
    ]


def test_ch4_get_handler_name_maps_types_to_method_names() -> None:
    assert get_handler_name({"type": "websocket.receive"}) == "websocket_receive"
    assert get_handler_name({"type": "chat.message"}) == "chat_message"
    with pytest.raises(ValueError):
        get_handler_name({"type": "_private.thing"})
    with pytest.raises(ValueError):
        get_handler_name({})


async def cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_ch5_cancelling_receive_drops_the_channel_in_memory() -> None:
    layer = InMemoryChannelLayer()
    channel = await layer.new_channel()
    reader = asyncio.create_task(layer.receive(channel))
    await asyncio.sleep(0)
    assert channel in layer.channels
    await cancel(reader)
    assert channel not in layer.channels


# --- asgiref -------------------------------------------------------------------------------------


async def test_as1_sync_to_async_threads_know_their_event_loop() -> None:
    def loop_seen_by_thread() -> Any:
        return getattr(SyncToAsync.threadlocal, "main_event_loop", None)

    running = asyncio.get_running_loop()
    assert await sync_to_async(loop_seen_by_thread)() is running
    assert await sync_to_async(loop_seen_by_thread, thread_sensitive=False)() is running


async def test_as2_thread_sensitive_calls_run_on_the_given_executor() -> None:
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="internals-as2")
    try:
        thread_of_executor = executor.submit(threading.get_ident).result()
        context = ThreadSensitiveContext(executor=executor)
        async with context:
            # Even nested in another context, the given executor wins.
            async with ThreadSensitiveContext():
                seen = await sync_to_async(threading.get_ident, thread_sensitive=True)()
        assert seen == thread_of_executor
        # Not shut down at exit: the caller reuses it.
        assert executor.submit(threading.get_ident).result() == thread_of_executor
        with pytest.raises(RuntimeError):
            async with context:
                pass
    finally:
        executor.shutdown()


# --- Django --------------------------------------------------------------------------------------


def test_dj1_asgi_handler_init_only_builds_the_async_chain() -> None:
    """OneHopASGIHandler skips ASGIHandler.__init__: it must hold nothing more than that."""
    from serving.asgi_http import OneHopASGIHandler

    stock = ASGIHandler()
    ours = OneHopASGIHandler()
    assert set(vars(stock)) == set(vars(ours)) - {"threads"}
    assert iscoroutinefunction(stock._middleware_chain)  # is_async=True there,
    assert not iscoroutinefunction(ours._middleware_chain)  # sync here.
    assert "is_async" in inspect.signature(ASGIHandler.load_middleware).parameters


def test_dj1_asgi_handler_handle_gets_the_response_from_get_response_async() -> None:
    from serving.asgi_http import OneHopASGIHandler

    assert inspect.iscoroutinefunction(ASGIHandler.handle)
    assert list(inspect.signature(ASGIHandler.handle).parameters) == [
        "self",
        "scope",
        "receive",
        "send",
    ]
    # handle() -> run_get_response() -> get_response_async(request): the override is reached.
    assert "get_response_async" in inspect.getsource(ASGIHandler.run_get_response)
    assert "run_get_response" in inspect.getsource(ASGIHandler.handle)
    assert OneHopASGIHandler.get_response_async is not ASGIHandler.get_response_async


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_dj3_raw_psycopg_connection_pipelines_inside_django_atomic(make_user, make_chat) -> None:
    import psycopg

    from messaging.models import Chat

    chat = make_chat(make_user(), [], title="before")
    with pytest.raises(RuntimeError, match="roll back"), transaction.atomic():
        connection.ensure_connection()
        raw = connection.connection
        assert isinstance(raw, psycopg.Connection)
        with raw.pipeline():
            cursor = raw.cursor()
            cursor.execute("UPDATE messaging_chat SET title = 'piped' WHERE id = %s", [chat.pk])
        assert Chat.objects.get(pk=chat.pk).title == "piped"  # The same transaction as the ORM.
        raise RuntimeError("roll back")
    assert Chat.objects.get(pk=chat.pk).title == "before"


# --- Django REST framework -----------------------------------------------------------------------


class _Event(serializers.Serializer):
    chat_id = serializers.IntegerField(min_value=1)
    text = serializers.CharField(max_length=10)


def outcome(validator: Any, data: dict[str, Any]) -> Any:
    try:
        return ("ok", dict(validator.run_validation(data)))
    except serializers.ValidationError as exc:
        return ("error", exc.detail)


def test_drf1_a_shared_serializer_validates_concurrently_like_fresh_ones() -> None:
    from messaging.serializers import HistoryQuerySerializer, NewMessageEventSerializer

    for serializer_class, inputs in [
        (
            _Event,
            [{"chat_id": n, "text": "x" * (n % 15)} for n in range(-3, 60)],
        ),
        (
            NewMessageEventSerializer,
            [{"chat_id": n, "text": "y" * (n % 5), "client_id": str(n)} for n in range(-3, 60)],
        ),
        (
            HistoryQuerySerializer,
            [{"limit": str(n)} for n in range(-3, 60)] + [{"after": str(n)} for n in range(9)],
        ),
    ]:
        shared = serializer_class()
        for data in inputs:  # Builds the fields and the validators once (cached, then read).
            outcome(shared, data)
        state = dict(vars(shared))

        expected = [outcome(serializer_class(), data) for data in inputs]
        with ThreadPoolExecutor(max_workers=8) as pool:
            for _ in range(5):
                got = list(pool.map(partial(outcome, shared), inputs))
                assert got == expected, serializer_class
        assert vars(shared) == state, f"{serializer_class} keeps per-call state"


def test_drf2_decode_cursor_returns_a_cursor_or_raises_not_found() -> None:
    from rest_framework.exceptions import NotFound
    from rest_framework.pagination import Cursor, CursorPagination
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    assert Cursor._fields == ("offset", "reverse", "position")
    paginator = CursorPagination()
    factory = APIRequestFactory()
    encoded = paginator.encode_cursor  # needs base_url: decode a cursor DRF itself would write
    paginator.base_url = "http://testserver/chats"
    url = encoded(Cursor(offset=0, reverse=False, position="2026-01-01"))
    query = url.split("?", 1)[1]
    decoded = paginator.decode_cursor(Request(factory.get(f"/chats?{query}")))
    assert decoded == Cursor(offset=0, reverse=False, position="2026-01-01")
    assert paginator.decode_cursor(Request(factory.get("/chats"))) is None
    with pytest.raises(NotFound):
        paginator.decode_cursor(Request(factory.get("/chats?cursor=not-base64!")))


def test_drf3_query_param_helpers_set_and_drop_one_parameter() -> None:
    from urllib.parse import parse_qs, urlsplit

    from rest_framework.utils.urls import remove_query_param, replace_query_param

    url = "http://testserver/chats/3/messages?limit=20&after=5"
    replaced = replace_query_param(url, "after", 9)
    assert parse_qs(urlsplit(replaced).query) == {"limit": ["20"], "after": ["9"]}
    removed = remove_query_param(replaced, "after")
    assert parse_qs(urlsplit(removed).query) == {"limit": ["20"]}
    assert urlsplit(removed).path == "/chats/3/messages"


# --- simplejwt -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_jwt1_stock_for_user_records_the_outstanding_token_as_ours_does(make_user) -> None:
    from rest_framework_simplejwt.token_blacklist.models import OutstandingToken
    from rest_framework_simplejwt.tokens import RefreshToken as StockRefreshToken
    from rest_framework_simplejwt.utils import datetime_from_epoch

    from accounts.tokens import RefreshToken

    user = make_user()
    stock = StockRefreshToken.for_user(user)
    row = OutstandingToken.objects.get(jti=stock["jti"])
    # The fields simplejwt fills, and how: exactly what accounts/tokens.py writes.
    filled = {field.name for field in OutstandingToken._meta.concrete_fields} - {"id"}
    assert filled == {"user", "jti", "token", "created_at", "expires_at"}
    assert (row.user, row.token) == (user, str(stock))
    assert row.expires_at == datetime_from_epoch(stock["exp"])
    assert row.created_at == stock.current_time
    ours = RefreshToken.for_user(user)
    mine = OutstandingToken.objects.get(jti=ours["jti"])
    assert (mine.user, mine.token, mine.expires_at) == (
        user,
        str(ours),
        datetime_from_epoch(ours["exp"]),
    )


def test_dj4_asgi_request_keeps_its_scope_with_raw_path() -> None:
    from django.core.handlers.asgi import ASGIRequest

    scope = {
        "type": "http",
        "method": "PUT",
        "path": "/chats/1/messages/2/reactions//",
        "raw_path": b"/chats/1/messages/2/reactions/%2F",
        "query_string": b"",
        "headers": [],
    }
    request = ASGIRequest(scope, io.BytesIO(b""))

    assert request.scope is scope and request.scope["raw_path"].endswith(b"%2F")


# --- drf-spectacular -----------------------------------------------------------------------------


def test_sp1_map_serializer_field_gives_the_default_schema_of_a_field() -> None:
    import chatproject.openapi  # noqa: F401  (registers the extension)
    from chatproject.fields import StrictCharField

    parameters = inspect.signature(AutoSchema._map_serializer_field).parameters
    assert list(parameters)[:3] == ["self", "field", "direction"]
    assert "bypass_extensions" in parameters
    field = StrictCharField(trim_whitespace=False)
    auto_schema = AutoSchema()
    default = auto_schema._map_serializer_field(field, "request", bypass_extensions=True)
    assert default["type"] == "string" and "pattern" not in default  # drf-spectacular's own.
    extended = auto_schema._map_serializer_field(field, "request")  # Through our extension.
    assert extended == {**default, "pattern": "^[^\\u0000]+$"}


# --- daphne, Twisted, autobahn (serving/) --------------------------------------------------------


class FakeReactor:
    """What daphne's Server.run() asks of the reactor, recorded; run() returns at once."""

    def __init__(self) -> None:
        self.triggers: list[tuple[str, str, Any]] = []
        self._asyncioEventloop = asyncio.new_event_loop()

    def callLater(self, delay: float, call: Any, *args: Any) -> None:  # noqa: N802
        pass

    def addSystemEventTrigger(self, phase: str, event: str, call: Any) -> None:  # noqa: N802
        self.triggers.append((phase, event, call))

    def run(self, installSignalHandlers: bool = True) -> None:  # noqa: N803
        pass


@pytest.fixture
def server_run_recorded(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A GracefulServer whose run() went through daphne's code against a fake reactor."""
    import daphne.server
    from twisted.internet import defer

    from serving.server import GracefulServer

    fake_reactor = FakeReactor()
    seen_at_listen: list[Any] = []

    class Endpoint:
        def listen(self, factory: Any) -> defer.Deferred:
            return defer.succeed(object())

    class Recording(GracefulServer):
        def listen_success(self, port: Any) -> None:
            seen_at_listen.append(getattr(self, "ws_factory", None))
            super().listen_success(port)

    monkeypatch.setattr(daphne.server, "reactor", fake_reactor)
    monkeypatch.setattr(daphne.server, "serverFromString", lambda reactor, text: Endpoint())
    monkeypatch.setattr(daphne.server.globalLogBeginner, "beginLoggingTo", lambda *a, **k: None)
    monkeypatch.setattr(daphne.server.asyncio, "set_event_loop", lambda loop: None)
    server = Recording(application=None, endpoints=["tcp:port=0"], signal_handlers=False)
    server.run()
    yield server, fake_reactor, seen_at_listen
    fake_reactor._asyncioEventloop.close()


def test_da1_run_creates_ws_factory_before_listen_success(server_run_recorded: Any) -> None:
    from serving.server import ServerWebSocketProtocol

    server, _, seen_at_listen = server_run_recorded
    assert len(seen_at_listen) == 1 and seen_at_listen[0] is server.ws_factory
    assert server.ws_factory.protocol is ServerWebSocketProtocol


def test_da2_kill_all_applications_is_the_before_shutdown_trigger(server_run_recorded: Any) -> None:
    server, fake_reactor, _ = server_run_recorded
    assert ("before", "shutdown", server.kill_all_applications) in fake_reactor.triggers


def test_da3_connections_mark_disconnected_protocols(server_run_recorded: Any) -> None:
    server, _, _ = server_run_recorded
    assert server.connections == {}
    protocol = object()
    server.protocol_connected(protocol)
    assert "disconnected" not in server.connections[protocol]
    assert server._open_connections() == 1
    server.protocol_disconnected(protocol)
    assert "disconnected" in server.connections[protocol]
    assert server._open_connections() == 0


def test_da4_cli_builds_server_class_with_an_action_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    from daphne.cli import CommandLineInterface
    from daphne.server import Server

    from serving.server import AccessLogger, GracefulCommandLineInterface, GracefulServer

    assert CommandLineInterface.server_class is Server
    assert GracefulCommandLineInterface.server_class is GracefulServer
    built: list[dict[str, Any]] = []

    class Capture(GracefulServer):
        def __init__(self, **kwargs: Any) -> None:
            built.append(kwargs)
            super().__init__(**kwargs)

        def run(self) -> None:
            built.append({"action_logger after init": self.action_logger})

    monkeypatch.setattr(GracefulCommandLineInterface, "server_class", Capture)
    GracefulCommandLineInterface().run(
        ["-b", "127.0.0.1", "-p", "0", "chatproject.asgi:application"]
    )
    assert callable(built[0]["action_logger"])  # daphne's writer, at the default verbosity
    assert isinstance(built[1]["action_logger after init"], AccessLogger)
    assert "action_logger" in inspect.signature(Server.__init__).parameters


def open_protocol() -> Any:
    """An autobahn WebSocket protocol in the OPEN state whose frames are recorded."""
    from serving.server import ServerWebSocketProtocol

    protocol = ServerWebSocketProtocol()
    protocol.state = protocol.STATE_OPEN
    protocol.closeHandshakeTimeout = 0
    protocol.frames = []
    protocol.sendFrame = lambda opcode, payload=b"", **kw: protocol.frames.append((opcode, payload))
    return protocol


def test_da5_send_close_still_refuses_protocol_codes() -> None:
    from autobahn.twisted.websocket import WebSocketServerProtocol

    for code in (1001, 1009, 1013):
        with pytest.raises(Exception, match="invalid close code"):
            WebSocketServerProtocol().sendClose(code=code)


def test_da5_send_close_frame_sends_any_code() -> None:
    parameters = inspect.signature(open_protocol().sendCloseFrame).parameters
    assert list(parameters) == ["code", "reasonUtf8", "isReply"]
    protocol = open_protocol()
    protocol.sendClose(code=1009)  # Ours: through sendCloseFrame.
    assert protocol.frames == [(8, (1009).to_bytes(2, "big"))]
    assert protocol.state == protocol.STATE_CLOSING
    assert protocol.localCloseCode == 1009


def test_da6_file_descriptor_keeps_its_producer_and_pauses_it_past_the_buffer_size() -> None:
    from twisted.internet import abstract

    from serving.backpressure import SendBufferGuard, guard_transport

    class Transport(abstract.FileDescriptor):
        connected = 1

        def startWriting(self) -> None:  # noqa: N802 - nothing is really written here.
            pass

    class Upgraded:  # Stands in for daphne's HTTP channel, the producer before the upgrade.
        def __init__(self) -> None:
            self.calls: list[str] = []

        def pauseProducing(self) -> None:  # noqa: N802
            self.calls.append("pause")

        def resumeProducing(self) -> None:  # noqa: N802
            self.calls.append("resume")

        def stopProducing(self) -> None:  # noqa: N802
            self.calls.append("stop")

    transport = Transport(reactor=object())
    upgraded = Upgraded()
    transport.registerProducer(upgraded, True)
    assert (transport.producer, transport.streamingProducer) == (upgraded, True)
    guard = guard_transport(transport, limit=1000)
    assert isinstance(guard, SendBufferGuard)
    assert transport.producer is guard and guard.wrapped is upgraded
    assert transport.bufferSize == 64 * 1024
    transport.write(b"x" * transport.bufferSize)
    assert not guard.paused
    transport.write(b"x")
    assert guard.paused and upgraded.calls == ["pause"]


# --- The ledger itself ---------------------------------------------------------------------------

PROJECT_DIR = Path(__file__).resolve().parents[2]
TEST_MODULES = [
    PROJECT_DIR / "chatproject" / "tests" / "test_internals.py",
    PROJECT_DIR / "serving" / "tests" / "test_server.py",
    PROJECT_DIR / "serving" / "tests" / "test_asgi_http.py",
    PROJECT_DIR / "messaging" / "tests" / "test_channel_layer.py",
    PROJECT_DIR / "messaging" / "tests" / "test_api_v2.py",
]


def test_every_ledger_entry_has_a_test_and_every_test_named_there_exists() -> None:
    ledger = (PROJECT_DIR / "docs" / "internals.md").read_text(encoding="utf-8")
    summary = ledger.split("## Summary", 1)[1].split("\n\n", 2)[1]
    entries = re.findall(r"^\| ([A-Z]+-\d+) \|", summary, flags=re.MULTILINE)
    assert len(entries) == len(set(entries)) > 10  # Parsed, and no id twice.
    defined = {
        name
        for module in TEST_MODULES
        for name in re.findall(r"^(?:async )?def (test_\w+)", module.read_text(), re.MULTILINE)
    }
    for entry in entries:
        prefix = "test_" + entry.lower().replace("-", "")
        assert any(name.startswith(prefix + "_") for name in defined), f"{entry} has no test"
    named = set(re.findall(r"`(?:[\w/.]+::)?(test_\w+)`", ledger))
    assert named - defined == set()


def test_da7_autobahn_formats_each_connections_options_with_its_module_pformat() -> None:
    from autobahn.websocket import protocol

    source = inspect.getsource(protocol.WebSocketProtocol._connectionMade)
    assert "attrs=pformat(configAttrLog)" in source
    assert protocol.pformat is pprint.pformat or protocol.pformat.__module__ == "serving.server"


def test_da7_the_options_are_formatted_only_when_the_line_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from autobahn.websocket import protocol

    from serving.server import FormattedWhenLogged, format_connection_options_lazily

    monkeypatch.setattr(protocol, "pformat", protocol.pformat)  # Put back after the test.
    format_connection_options_lazily()
    assert protocol.pformat is FormattedWhenLogged
    options = [("openHandshakeTimeout", 5, "WebSocketServerFactory"), ("maxFramePayloadSize", 0)]
    # What autobahn's debug line holds, formatted by the logger, is what it held before.
    line = "\n{attrs}"
    assert line.format(attrs=protocol.pformat(options)) == "\n" + pprint.pformat(options)
