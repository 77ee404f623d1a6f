"""Prometheus metrics (chatproject/metrics.py) of real daphne instances: what an operator's
Prometheus scrapes from METRICS_PORT after some traffic, that the service's own port does not
serve them, and that processes sharing PROMETHEUS_MULTIPROC_DIR are summed on one port."""

from __future__ import annotations

import asyncio
import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from websockets.asyncio.client import connect

from conftest import IN_CI, access_token
from liveserver.processes import DaphneServer, RedisServer, database_url, free_port, serving

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.multiprocess,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("CI=true but the redis-server executable is not installed")
        pytest.skip("needs the redis-server executable")
    with RedisServer(log_dir=tmp_path) as server:
        yield server


def instance(redis: RedisServer, tmp_path: Path, **env: str) -> DaphneServer:
    return DaphneServer(
        database_url=database_url(connection.settings_dict),
        redis_url=redis.url(),
        secret_key=settings.SECRET_KEY,
        extra_env={"JWT_SIGNING_KEY": settings.SIMPLE_JWT["SIGNING_KEY"], **env},
        log_dir=tmp_path,
    )


def scrape(port: int) -> dict[str, float]:
    """The samples of /metrics: `name{labels}` -> value (no comments)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def get(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


async def test_an_instance_counts_what_an_operator_watches(
    redis_server: RedisServer, tmp_path: Path, make_user, make_chat
) -> None:
    alice, bob = await asyncio.to_thread(lambda: (make_user(), make_user()))
    chat = await asyncio.to_thread(make_chat, alice, [bob])
    port = free_port()
    server = instance(redis_server, tmp_path, METRICS_PORT=str(port))
    with serving(server):
        assert get(server.http_url("/metrics")) == 404  # Not on the service's own port.
        token_a, token_b = access_token(alice), access_token(bob)
        async with (
            connect(server.ws_url(token=token_a), proxy=None) as a,
            connect(server.ws_url(token=token_b), proxy=None) as b,
        ):
            await a.send(json.dumps({"type": "new_message", "chat_id": chat.pk, "text": "hi"}))
            for ws in (a, b):  # Both get it: the sender's own copy, bob's through Redis.
                assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "new_message"
            assert get(server.http_url(f"/chats/{chat.pk}/messages"), token_a) == 200
            await asyncio.sleep(0.2)  # The publish's completion is observed after the reply.
            open_now = scrape(port)
        await asyncio.sleep(0.5)
        after = scrape(port)

    assert open_now["chat_sockets_open"] == 2
    assert open_now["chat_socket_connects_total"] == 2
    assert open_now['chat_events_delivered_total{type="new_message"}'] >= 1
    assert open_now['chat_send_seconds_count{stage="commit"}'] == 1
    assert open_now['chat_send_seconds_count{stage="fanout"}'] == 1
    assert open_now["chat_writer_batch_size_count"] >= 1
    assert open_now['chat_http_request_seconds_count{method="GET",route="chat-messages"}'] == 1
    assert "chat_redis_publish_failures_total" in open_now
    assert after["chat_sockets_open"] == 0
    assert after['chat_socket_closes_total{code="1000"}'] == 2


async def test_processes_sharing_a_multiprocess_directory_are_summed_on_one_port(
    redis_server: RedisServer, tmp_path: Path, make_user
) -> None:
    users = await asyncio.to_thread(lambda: [make_user() for _ in range(3)])
    shared = tmp_path / "metrics"
    shared.mkdir()
    port = free_port()
    env = {"METRICS_PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    one, two = instance(redis_server, tmp_path, **env), instance(redis_server, tmp_path, **env)
    with serving(one, two):
        async with (
            connect(one.ws_url(token=access_token(users[0])), proxy=None),
            connect(two.ws_url(token=access_token(users[1])), proxy=None),
            connect(two.ws_url(token=access_token(users[2])), proxy=None),
        ):
            await asyncio.sleep(0.2)
            samples = scrape(port)
    assert samples["chat_sockets_open"] == 3
    assert samples["chat_socket_connects_total"] == 3


def test_without_metrics_port_nothing_is_counted() -> None:
    from chatproject import metrics

    assert not metrics.ON  # The test settings do not set it.
    assert not hasattr(metrics, "CONNECTS")
    assert metrics.serve() is False


@pytest.mark.django_db(transaction=False)
def test_compose_scrapes_the_metrics_port_and_publishes_it_nowhere() -> None:
    import yaml

    root = Path(__file__).resolve().parents[2]
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())
    services = compose["services"]
    web = compose["x-web"]
    assert web["environment"]["METRICS_PORT"] == "9100"
    assert "ports" not in web  # Reached on compose's network only (nginx proxies 8000).
    for name in ("prometheus", "grafana"):
        assert all(port.startswith("127.0.0.1:") for port in services[name]["ports"]), name
    scrape = yaml.safe_load((root / "deploy" / "prometheus.yml").read_text())
    targets = scrape["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["web1:9100", "web2:9100"]
    dashboard = json.loads((root / "deploy" / "grafana" / "dashboards" / "chat.json").read_text())
    queried = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
    for metric in (
        "chat_sockets_open", "chat_socket_connects_total", "chat_socket_closes_total",
        "chat_events_delivered_total", "chat_send_seconds_bucket", "chat_writer_batch_size",
        "chat_gap_fills_total", "chat_redis_publish_failures_total",
        "chat_redis_reconnects_total", "chat_http_request_seconds_bucket",
    ):  # fmt: skip
        assert metric in queried, metric
