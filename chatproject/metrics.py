"""Prometheus metrics of one instance (prometheus_client), served on a port of their own.

Off unless `METRICS_PORT` is set: then nothing is counted (each counting point below is one
attribute check) and nothing is served. With it, the process serves the text exposition format
on `http://METRICS_ADDRESS:METRICS_PORT/metrics` from a thread of its own (prometheus_client's
`start_http_server`): not on the service's port, so nginx, which proxies only that one, never
exposes it; `METRICS_ADDRESS` defaults to 127.0.0.1 (compose sets 0.0.0.0 inside its private
network, where only the Prometheus service scrapes it). docs/deployment.md, "Metrics".

Several processes behind one port (`PROMETHEUS_MULTIPROC_DIR` set, as prometheus_client's
multiprocess mode wants, e.g. uvicorn --workers): each process writes its samples to that
directory and whichever process holds the port serves them all, summed (the open-socket gauge
by `livesum`). One process per instance (daphne, the image's default) needs none of it.

What is counted, and where:
- `chat_sockets_open`, `chat_socket_connects_total`, `chat_socket_closes_total{code}`:
  messaging/consumers.py (a socket refused at its handshake counts as a close with its code).
- `chat_events_delivered_total{type}`: messaging/fanout.py, events handed to local sockets
  (one per socket), by type (new_message, message_updated, chat_updated, typing,
  message_read, ...).
- `chat_send_seconds{stage}`: messaging/writers.py, a WebSocket send from the moment it was
  handed to its writer to its commit (`commit`: the result back on the event loop) and to its
  announcement accepted by Redis (`fanout`).
- `chat_writer_batch_size`: messaging/writers.py, sends committed per transaction.
- `chat_gap_fills_total`: messaging/delivery.py, reads of missed changes from the database.
- `chat_redis_publish_failures_total`, `chat_redis_reconnects_total{server}`:
  messaging/events.py and messaging/channel_layer.py.
- `chat_http_request_seconds{method,route}`: `HTTPMetricsMiddleware` below (the route is the
  URL pattern's name, such as `chat-messages`, not the path: ids do not make series).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

ON = bool(os.environ.get("METRICS_PORT"))
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)

if ON:
    from prometheus_client import Counter, Gauge, Histogram

    SOCKETS_OPEN = Gauge(
        "chat_sockets_open", "WebSockets open on this instance", multiprocess_mode="livesum"
    )
    CONNECTS = Counter("chat_socket_connects", "WebSockets accepted")
    CLOSES = Counter("chat_socket_closes", "WebSockets closed or refused, by close code", ["code"])
    DELIVERED = Counter(
        "chat_events_delivered", "Events handed to local sockets, by event type", ["type"]
    )
    SEND_SECONDS = Histogram(
        "chat_send_seconds",
        "A WebSocket send: from its receipt to its commit, and to its announcement in Redis",
        ["stage"],
        buckets=LATENCY_BUCKETS,
    )
    BATCH_SIZE = Histogram(
        "chat_writer_batch_size", "Sends committed per writer transaction", buckets=BATCH_BUCKETS
    )
    GAP_FILLS = Counter("chat_gap_fills", "Reads of a socket's missed changes from the database")
    PUBLISH_FAILURES = Counter("chat_redis_publish_failures", "Publishes to Redis that failed")
    RECONNECTS = Counter(
        "chat_redis_reconnects", "Subscriber connections to Redis that came back", ["server"]
    )
    HTTP_SECONDS = Histogram(
        "chat_http_request_seconds",
        "HTTP requests, from the middleware's start to its end, by method and URL name",
        ["method", "route"],
        buckets=LATENCY_BUCKETS,
    )
    COMMIT_STAGE = SEND_SECONDS.labels("commit")
    FANOUT_STAGE = SEND_SECONDS.labels("fanout")

_started = False


def serve() -> bool:
    """Serve /metrics on METRICS_PORT (once per process); False when off or the port is
    taken (another process of the same instance serves it, in multiprocess mode)."""
    global _started
    if not ON or _started:
        return False
    from prometheus_client import CollectorRegistry, start_http_server

    registry = None
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    address = os.environ.get("METRICS_ADDRESS", "127.0.0.1")
    port = int(os.environ["METRICS_PORT"])
    try:
        if registry is None:
            start_http_server(port, addr=address)
        else:
            start_http_server(port, addr=address, registry=registry)
    except OSError as exc:
        logger.info("metrics not served by this process (%s:%s: %s)", address, port, exc)
        return False
    _started = True
    logger.info("metrics served on http://%s:%s/metrics", address, port)
    return True


def observe_since(stage: Any, started: float) -> None:
    stage.observe(time.perf_counter() - started)


class HTTPMetricsMiddleware:
    """Times each request through the rest of the chain, by method and URL pattern."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        if not ON:
            return self.get_response(request)
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = (match.view_name or match.route) if match is not None else "unmatched"
        HTTP_SECONDS.labels(request.method, route).observe(time.perf_counter() - started)
        return response
