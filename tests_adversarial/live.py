"""Real processes for the adversarial tests: a private Redis and daphne instances on free ports.

They use the very PostgreSQL test database that pytest-django created (so what a test commits
with `transactional_db` is theirs too) and a Redis of their own, which a test may kill. Every
process is started and stopped by `liveserver.processes`, by its pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from django.conf import settings
from django.db import connection

from liveserver.processes import DaphneServer, ManagedProcess, RedisServer, database_url, stop_all

# Budgets large enough that the rate limit never answers the traffic of these tests.
INSTANCE_ENV = {"WS_RATE_BURST": "100000", "WS_RATE_PER_SECOND": "100000"}


@dataclass
class Cluster:
    redis: RedisServer
    instances: list[DaphneServer]
    log_dir: Path
    started: list[ManagedProcess] = field(default_factory=list)

    def logs(self) -> str:
        """Everything every process of this cluster wrote, restarts included."""
        return "\n".join(path.read_text(errors="replace") for path in self.log_dir.glob("*.log"))

    def rss(self, instance: DaphneServer) -> int:
        return psutil.Process(instance.pid).memory_info().rss


@contextlib.contextmanager
def running_cluster(
    log_dir: Path,
    *,
    instances: int = 2,
    extra_env: dict[str, str] | None = None,
    application_name: str = "adversarial-daphne",
) -> Iterator[Cluster]:
    """A private Redis and `instances` daphnes; their database connections carry
    `application_name`, so a test can find them in pg_stat_activity (and only them)."""
    redis = RedisServer(log_dir=log_dir)
    cluster = Cluster(redis=redis, instances=[], log_dir=log_dir, started=[redis])
    try:
        redis.start(timeout=10)
        for _ in range(instances):
            daphne = DaphneServer(
                database_url=f"{database_url(connection.settings_dict)}"
                f"?application_name={application_name}",
                redis_url=redis.url(),
                # Tokens minted in the test process must verify in the instances.
                secret_key=settings.SECRET_KEY,
                extra_env={
                    **INSTANCE_ENV,
                    "JWT_SIGNING_KEY": settings.SIMPLE_JWT["SIGNING_KEY"],
                    "LOG_LEVEL": "DEBUG",  # The most the logs could ever reveal.
                    **(extra_env or {}),
                },
                log_dir=log_dir,
            )
            cluster.instances.append(daphne)
            cluster.started.append(daphne)
            daphne.spawn()
        for daphne in cluster.instances:
            daphne.wait_ready(timeout=60)
        yield cluster
    finally:
        stop_all(*reversed(cluster.started))


def http_json(
    url: str,
    *,
    token: str | None = None,
    body: dict[str, Any] | None = None,
    method: str | None = None,
    timeout: float = 10,
) -> tuple[int, Any]:
    """(status, JSON body or None) of one request; error statuses are answers too. A failure
    to connect or to get an answer raises the OSError itself (ConnectionRefusedError: nothing
    was sent; TimeoutError; ConnectionResetError...), not urllib's wrapper."""
    data = json.dumps(body).encode() if body is not None else None
    method = method or ("POST" if data else "GET")
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        payload = error.read()
        try:
            return error.code, json.loads(payload)
        except ValueError:
            return error.code, payload.decode(errors="replace")
    except urllib.error.URLError as error:
        if isinstance(error.reason, OSError):
            raise error.reason from error
        raise


async def ahttp_json(url: str, **kwargs: Any) -> tuple[int, Any]:
    return await asyncio.to_thread(http_json, url, **kwargs)


async def catch_up(base_url: str, chat_id: int, since_seq: int, token: str) -> list[dict[str, Any]]:
    """Every message of the chat changed after `since_seq`, as it is now, by increasing seq,
    following `next` (docs/websocket.md, "Staying in sync after a reconnect")."""
    messages: list[dict[str, Any]] = []
    url: str | None = f"{base_url}/chats/{chat_id}/messages?since_seq={since_seq}&limit=200"
    while url:
        status, page = await ahttp_json(url, token=token)
        if status != 200:
            raise RuntimeError(f"catch-up answered {status}: {page}")
        messages += page["results"]
        url = page["next"]
    return messages
