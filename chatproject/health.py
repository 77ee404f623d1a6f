"""`GET /healthz`: does this instance reach its database and its channel layer?

200 `{"database": "ok", "channel_layer": "ok"}`, or 503 with the failing one(s) marked
"unavailable" (an error) or "timeout". Used by the Docker HEALTHCHECK and by operators' load
balancers; no authentication, and not part of the API schema (a plain Django view).

Both checks run concurrently, each bounded by CHECK_TIMEOUT_SECONDS, so a dead or hanging
PostgreSQL or Redis gives a 503 in about that time instead of a hung probe. Why something failed
goes to the log, not to the (public) response.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 2.0
# Nobody listens to this group: a send to it is one round trip to Redis and delivers nothing.
PROBE_GROUP = "healthz.probe"


def _query_database() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connection.close()  # Hands the connection back to the pool (or closes it).


async def database_answers() -> None:
    # Not thread_sensitive: a hanging database must not hold the one thread that every other
    # sync view shares, and the connection used here is this worker thread's own.
    await sync_to_async(_query_database, thread_sensitive=False)()


async def channel_layer_answers() -> None:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer is configured")
    if hasattr(layer, "ping_all"):  # Every Redis server of the layer (messaging/channel_layer.py).
        await layer.ping_all()
    else:
        await layer.group_send(PROBE_GROUP, {"type": "healthz.probe"})


async def _status(name: str, check: Awaitable[None]) -> str:
    try:
        await asyncio.wait_for(check, timeout=CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        logger.warning("health check: %s did not answer within %ss", name, CHECK_TIMEOUT_SECONDS)
        return "timeout"
    except Exception as error:
        logger.warning("health check: %s failed: %r", name, error)
        return "unavailable"
    return "ok"


@never_cache
@require_safe
async def healthz(request: HttpRequest) -> JsonResponse:
    database, channel_layer = await asyncio.gather(
        _status("database", database_answers()),
        _status("channel_layer", channel_layer_answers()),
    )
    body = {"database": database, "channel_layer": channel_layer}
    healthy = all(status == "ok" for status in body.values())
    return JsonResponse(body, status=200 if healthy else 503)
