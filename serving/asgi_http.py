"""Django's ASGI handler for HTTP, with each request's middleware and view in one thread hop.

Django's own `ASGIHandler` builds the middleware chain in async mode. Every middleware of this
project is a `MiddlewareMixin` (sync and async), except WhiteNoise (sync only), and in async
mode `MiddlewareMixin` runs each `process_request`/`process_response` through `sync_to_async`:
a request crossed between the event loop and a thread about a dozen times before and after its
sync DRF view, and each request started a new thread and joined it at the end. On the history
endpoint that was about a third of the request's time (docs/performance.md, scenario 4).

Here the chain is built in sync mode, as under WSGI, and run by one `sync_to_async` call: the
whole request runs on one thread, then the response is sent from the event loop. The threads
are kept for later requests instead of one per request. Everything else is Django's handler:
reading the body, the request_started/request_finished signals, disconnects, streaming.

Each request still has a thread of its own while it runs (a `ThreadSensitiveContext` with an
idle executor from the pool), so a slow request never holds up another one, and database
connections stay per thread: closed (handed back to the pool) by request_finished at the end of
the request, as with Django's handler. An async view (`/healthz`) runs on the event loop
through `async_to_sync`, as Django runs async views under WSGI.

Django has no public way to build its ASGI handler with a sync chain: this relies on
`BaseHandler.load_middleware(is_async=False)`, `ASGIHandler.handle()` reaching the response
through `get_response_async`, and asgiref's recent `ThreadSensitiveContext(executor=)`. Kept
because the benchmark says it pays (CPU per history request 4.0-4.4 ms -> 2.6-2.7 ms,
docs/performance.md "Scenario 4"); the assumptions and their tests: docs/internals.md, DJ-1
and AS-2.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import django
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.http import HttpRequest, HttpResponseBase

# Idle request threads kept for reuse; more are started under more concurrent requests, and
# those beyond this number are stopped when their request ends.
IDLE_THREADS_KEPT = 16


class RequestThreads:
    """Single-thread executors, one lent to each running request and reused afterwards.

    Used from the event loop's thread only, so a plain list needs no lock."""

    def __init__(self, keep: int = IDLE_THREADS_KEPT) -> None:
        self.keep = keep
        self.idle: list[ThreadPoolExecutor] = []

    def borrow(self) -> ThreadPoolExecutor:
        if self.idle:
            return self.idle.pop()
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="http-request")

    def give_back(self, executor: ThreadPoolExecutor) -> None:
        if len(self.idle) < self.keep:
            self.idle.append(executor)
        else:
            executor.shutdown(wait=False)


class OneHopASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        # Not ASGIHandler.__init__, which builds the chain in async mode.
        BaseHandler.__init__(self)
        self.load_middleware(is_async=False)
        self.threads = RequestThreads()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = self.threads.borrow()
        try:
            # Every thread-sensitive call of this request (the signals, the request itself,
            # response.close()) runs on this executor's one thread. handle() waits for the
            # tasks it starts, so the thread is idle again when the block exits.
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            self.threads.give_back(executor)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        # The sync chain (middleware, view, logging of 4xx/5xx) in one hop to the request's thread.
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)


def get_http_application() -> OneHopASGIHandler:
    """What `django.core.asgi.get_asgi_application()` is, with the handler above."""
    django.setup(set_prefix=False)
    return OneHopASGIHandler()
