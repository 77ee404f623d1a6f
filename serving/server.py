"""Our daphne: the stock server, plus a graceful SIGTERM and an access log without secrets.

Run it with daphne's arguments: `python -m serving.server chatproject.asgi:application`.

What stock daphne 4.2 does on SIGTERM (daphne/server.py): Twisted stops the reactor, and the
"before shutdown" trigger `kill_all_applications` cancels every application coroutine at once,
then the reactor drops every connection without a WebSocket closing handshake: clients see an
abnormal closure (1006), and consumers never run `disconnect`. What this server adds, before
that trigger:
1. stop listening, so new connections go to another instance;
2. send a close frame with 1001 ("going away") to every open WebSocket (clients reconnect to
   another instance and catch up with `?after=`), and let in-flight HTTP requests finish;
3. wait until those connections are gone, at most SHUTDOWN_GRACE_SECONDS,
then hand over to daphne's own shutdown.

Stock daphne also turns an application's close with a protocol code such as 1009 (frame too
big) or 1013 (try again later) into 1011: autobahn's `sendClose()` accepts only 1000 and
3000-4999 and raises otherwise. Here those codes reach the client as the consumer sent them.

Every WebSocket also gets a bound on what waits in its send buffer (serving/backpressure.py).

And autobahn's debug line of each new connection's options is formatted only when it is
logged, not at every connection (a quarter more sockets accepted per second).

Daphne has no documented extension points for any of this: what this module relies on, and
the tests that fail if an upgrade changes it, are in docs/internals.md (DA-1 to DA-5, DA-7).

Stock daphne's access log writes the raw request line to stdout, query string included, and
the WebSocket token travels in `?token=`. Here access entries go through `logging` (so they come
out as JSON lines like everything else) with every query value except a few harmless ones
replaced by "[redacted]".
"""

from __future__ import annotations

import logging
import os
import pprint
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

# daphne.server installs Twisted's asyncio reactor, so it must be imported before anything
# imports twisted.internet.reactor (isort keeps daphne first here).
from daphne.cli import CommandLineInterface
from daphne.server import Server
from daphne.ws_protocol import WebSocketProtocol
from twisted.internet import defer, reactor, task

from serving.backpressure import BoundedWebSocketProtocol

logger = logging.getLogger("serving.server")
access_logger = logging.getLogger("chatproject.access")

CLOSE_GOING_AWAY = 1001
# Close codes an endpoint may send (RFC 6455 7.4.1 and IANA's registry) that autobahn's
# sendClose() refuses; 1004-1006 and 1015 are reserved and never sent.
PROTOCOL_CLOSE_CODES = frozenset({1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
SHUTDOWN_POLL_SECONDS = 0.05
# Query parameters whose values are logged as they are; every other value is redacted.
LOGGED_QUERY_PARAMETERS = frozenset({"after", "before", "limit", "cursor"})


def shutdown_grace_seconds() -> float:
    return float(os.environ.get("SHUTDOWN_GRACE_SECONDS", "5"))


def redact_query(target: str) -> str:
    """`/chats/ws?token=abc&after=5` -> `/chats/ws?token=[redacted]&after=5`."""
    parts = urlsplit(target)
    if not parts.query:
        return parts.path
    pairs = [
        (name, value if name in LOGGED_QUERY_PARAMETERS else "[redacted]")
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return f"{parts.path}?{urlencode(pairs, safe='[]')}"


class AccessLogger:
    """Daphne's action-logger interface, writing one structured `logging` record per action."""

    def __call__(self, protocol: str, action: str, details: dict[str, Any]) -> None:
        if protocol == "http" and action != "complete":
            return
        fields: dict[str, Any] = {
            "protocol": protocol,
            "action": action,
            "client": details.get("client"),
            "path": redact_query(str(details.get("path", ""))),
        }
        if protocol == "http":
            fields.update(
                method=details.get("method"),
                status_code=details.get("status"),
                size=details.get("size"),
                duration_ms=round(details.get("time_taken", 0.0) * 1000, 1),
            )
            message = f"{fields['method']} {fields['path']} {fields['status_code']}"
        else:
            message = f"websocket {action} {fields['path']}"
        access_logger.info(message, extra=fields)


class ServerWebSocketProtocol(BoundedWebSocketProtocol):
    """Daphne's WebSocket protocol, with a bounded send buffer and every close code."""

    def sendClose(self, code: int | None = None, reason: str | None = None) -> None:  # noqa: N802
        """autobahn's public `sendClose`, which daphne closes with, refuses the protocol codes;
        they go out through the lower-level call daphne itself uses for its own 1011."""
        if code in PROTOCOL_CLOSE_CODES:
            reason_utf8 = reason.encode() if reason is not None else None
            self.sendCloseFrame(code=code, reasonUtf8=reason_utf8, isReply=False)
        else:
            super().sendClose(code=code, reason=reason)


class GracefulServer(Server):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # daphne passes its own stdout writer when the access log is on (verbosity >= 1).
        if self.action_logger is not None:
            self.action_logger = AccessLogger()
        self.listening_ports: list[Any] = []

    def listen_success(self, port: Any) -> None:
        """Called by daphne's run() for each endpoint, once it listens, before any connection
        is accepted: every socket the WebSocket factory (made by run()) builds is ours."""
        self.ws_factory.protocol = ServerWebSocketProtocol
        self.listening_ports.append(port)
        super().listen_success(port)

    def kill_all_applications(self) -> defer.Deferred:
        """Called by daphne's "before shutdown" trigger; drain first, then daphne's own."""
        drained = defer.ensureDeferred(self._drain())
        drained.addErrback(lambda failure: logger.error("shutdown drain failed: %s", failure))
        drained.addBoth(lambda _: super(GracefulServer, self).kill_all_applications())
        return drained

    async def _drain(self) -> None:
        for port in self.listening_ports:
            port.stopListening()
        deadline = time.monotonic() + shutdown_grace_seconds()
        closed = self._close_open_websockets()
        logger.info("shutting down: closing %d WebSocket(s) with %d", closed, CLOSE_GOING_AWAY)
        while self._open_connections() and time.monotonic() < deadline:
            # Sockets accepted while draining are told to go away too.
            self._close_open_websockets()
            await task.deferLater(reactor, SHUTDOWN_POLL_SECONDS, lambda: None)
        left = self._open_connections()
        if left:
            logger.warning("shutdown grace period over with %d connection(s) still open", left)

    def _websockets(self) -> Iterable[WebSocketProtocol]:
        return (p for p in list(self.connections) if isinstance(p, WebSocketProtocol))

    def _close_open_websockets(self) -> int:
        closing = [p for p in self._websockets() if p.state == WebSocketProtocol.STATE_OPEN]
        for protocol in closing:
            protocol.sendCloseFrame(code=CLOSE_GOING_AWAY, reasonUtf8=b"server shutting down")
        return len(closing)

    def _open_connections(self) -> int:
        """HTTP requests in flight and WebSockets whose closing handshake has not ended."""
        return sum(1 for details in self.connections.values() if "disconnected" not in details)


class GracefulCommandLineInterface(CommandLineInterface):
    server_class = GracefulServer


class FormattedWhenLogged:
    """`pprint.pformat(value)`, computed only if a log line that holds it is written."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return pprint.pformat(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def format_connection_options_lazily() -> None:
    """autobahn pretty-prints each new WebSocket's ~40 options for a debug line, whether that
    line is logged or not (`WebSocketProtocol._connectionMade`). Formatted only when logged,
    daphne accepted 862 sockets/s instead of 668 (medians of six interleaved runs of scenario
    3): docs/internals.md, DA-7."""
    from autobahn.websocket import protocol  # After daphne, which installs the reactor.

    protocol.pformat = FormattedWhenLogged


def main() -> None:
    format_connection_options_lazily()
    GracefulCommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
