"""DRF's scoped throttle, failing open when the shared cache is down.

Throttles count in the cache, which is Redis when REDIS_URL is set (so that every instance
counts together). A throttle guards against abuse; a Redis outage must not turn every
throttled request (sending a message over HTTP, creating a chat, logging in) into a 500. While
Redis is away, requests pass unthrottled and each failure is logged; the counts resume with
Redis.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError
from rest_framework import throttling
from rest_framework.request import Request

logger = logging.getLogger(__name__)


class ScopedRateThrottle(throttling.ScopedRateThrottle):
    def allow_request(self, request: Request, view: Any) -> bool:
        try:
            return super().allow_request(request, view)
        except (RedisError, OSError) as error:
            logger.warning("throttle %s not applied, the cache failed: %r", self.scope, error)
            return True
