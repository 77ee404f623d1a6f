"""The production path, run on this machine (it has the Docker client but no engine).

- docker-compose.yml is validated by the compose client when one is installed, the way an
  operator starts it (`cp .env.example .env`, secrets filled in);
- .env.example documents every variable the code reads;
- `check --deploy` is clean with the production defaults, and names exactly the three settings
  the plain-http compose demo turns off; a missing SECRET_KEY stops the start with a clear error;
- deploy/entrypoint.sh runs as in the image: static files collected as the Dockerfile does, two
  instances started at once on a fresh PostgreSQL database (the migration lock) and a private
  Redis, then /healthz, the Docker health probe, /docs and its assets, the admin login page, a
  WebSocket round trip across the two instances, the logs (JSON lines, no token or password),
  an oversized frame (1009 reaches the client), and SIGTERM (sockets closed with 1001, clean
  exit);
- /healthz answers 503, quickly, when Redis is dead or hangs and when PostgreSQL is unreachable.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from chatproject import health
from chatproject.management.commands.migrate_with_lock import MIGRATION_LOCK_KEY
from conftest import IN_CI
from liveserver.processes import ManagedProcess, RedisServer, free_port, port_accepts, start_all

PROJECT_DIR = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
SECRET_KEY = secrets.token_urlsafe(50)
PASSWORD = "Deploy-test-password-4821"
# The only name in ALLOWED_HOSTS: every request must say it, as behind a real domain.
SERVED_HOST = "chat.example.test"
COMMAND_TIMEOUT = 60


# --- The entrypoint as a process (liveserver: a child of this test, stopped by its own pid) -------


class Entrypoint(ManagedProcess):
    """deploy/entrypoint.sh, as the image runs it; ready when /healthz answers 200."""

    name = "entrypoint"

    def __init__(self, *, env: dict[str, str], log_dir: Path) -> None:
        super().__init__(port=None, host="127.0.0.1", log_dir=log_dir)
        self.base_env = env

    def command(self) -> list[str]:
        return [str(PROJECT_DIR / "deploy" / "entrypoint.sh")]

    def environment(self) -> dict[str, str]:
        return {**self.base_env, "PORT": str(self.port), "BIND_HOST": self.host}

    def is_ready(self) -> bool:
        try:
            return fetch(self, "/healthz").status == 200
        except OSError:
            return False


# --- Environment and commands ------------------------------------------------------------------


def documented_variables() -> set[str]:
    text = (PROJECT_DIR / ".env.example").read_text(encoding="utf-8")
    return set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def production_env(**overrides: str) -> dict[str, str]:
    """This environment without any service configuration, then production settings."""
    env = {name: value for name, value in os.environ.items() if name not in documented_variables()}
    env.update(
        ENV_FILE="",  # A developer's .env must not change what is tested here.
        DJANGO_SETTINGS_MODULE="chatproject.settings",
        SECRET_KEY=SECRET_KEY,
        DEBUG="0",
        PATH=f"{Path(PYTHON).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )


def compose_command() -> list[str] | None:
    """`docker compose` (v2), else `docker-compose` (v1), when installed and working."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        probe = subprocess.run([*command, "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return command
    return None


# --- Compose file, .env.example, settings --------------------------------------------------------


def test_compose_file_is_valid_once_the_operator_fills_in_the_secrets(tmp_path: Path) -> None:
    compose = compose_command()
    if compose is None:
        # Absent even under CI: this machine has the Docker CLI without the compose plugin.
        pytest.skip("no compose client here (`docker compose version` and `docker-compose` fail)")
    for name in ("docker-compose.yml", "Dockerfile", ".dockerignore"):
        shutil.copy(PROJECT_DIR / name, tmp_path / name)
    shutil.copytree(PROJECT_DIR / "deploy", tmp_path / "deploy")
    example = (PROJECT_DIR / ".env.example").read_text(encoding="utf-8")
    assert "\nSECRET_KEY=\n" in example and "\nPOSTGRES_PASSWORD=\n" in example
    env = production_env()
    for name in ("SECRET_KEY", "POSTGRES_PASSWORD"):  # Only .env may supply them here.
        env.pop(name, None)

    def config() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*compose, "config", "-q"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )

    (tmp_path / ".env").write_text(
        example.replace("\nSECRET_KEY=\n", f"\nSECRET_KEY={SECRET_KEY}\n").replace(
            "\nPOSTGRES_PASSWORD=\n", "\nPOSTGRES_PASSWORD=compose-test-password\n"
        )
    )
    valid = config()
    assert valid.returncode == 0, valid.stderr

    (tmp_path / ".env").write_text(example)  # Copied, not filled in: refused, saying what.
    refused = config()
    assert refused.returncode != 0
    assert "POSTGRES_PASSWORD" in refused.stderr or "SECRET_KEY" in refused.stderr


def variables_read_by_code() -> set[str]:
    patterns = {
        "*.py": r"env\.\w+\(\s*\"([A-Z][A-Z0-9_]*)\"|os\.environ\.get\(\s*\"([A-Z][A-Z0-9_]*)\"",
        "*.sh": r"\$\{([A-Z][A-Z0-9_]*)",
        "*.yml": r"\$\{([A-Z][A-Z0-9_]*)",
    }
    sources = [
        *PROJECT_DIR.glob("chatproject/*.py"),
        *PROJECT_DIR.glob("serving/*.py"),
        *PROJECT_DIR.glob("accounts/*.py"),
        *PROJECT_DIR.glob("messaging/*.py"),
        *PROJECT_DIR.glob("deploy/*"),
        PROJECT_DIR / "docker-compose.yml",
    ]
    names: set[str] = set()
    for path in sources:
        pattern = next((p for glob, p in patterns.items() if path.match(glob)), None)
        if pattern is not None:
            for match in re.findall(pattern, path.read_text(encoding="utf-8")):
                names.update(m for m in (match if isinstance(match, tuple) else (match,)) if m)
    return names


def test_env_example_documents_every_variable_the_code_reads() -> None:
    read = variables_read_by_code()
    contract = {
        "DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS",
        "WS_ALLOWED_ORIGINS", "ACCESS_TOKEN_MINUTES", "REFRESH_TOKEN_DAYS", "THROTTLE_REGISTER",
        "THROTTLE_LOGIN", "WS_RATE_BURST", "WS_RATE_PER_SECOND",
    }  # fmt: skip
    assert contract <= read, "the scan of the code missed variables it should find"
    assert read - documented_variables() == set()


def test_check_deploy_reports_nothing_with_the_production_defaults() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_names_the_settings_the_plain_http_demo_turns_off() -> None:
    demo = {"SECURE_SSL_REDIRECT": "0", "SESSION_COOKIE_SECURE": "0", "CSRF_COOKIE_SECURE": "0"}
    result = manage("check", "--deploy", env=production_env(**demo))
    found = set(re.findall(r"security\.W\d+", result.stdout + result.stderr))
    assert found == {"security.W008", "security.W012", "security.W016"}


def test_production_refuses_to_serve_without_a_secret_key() -> None:
    env = production_env()
    del env["SECRET_KEY"]
    deploy_check = manage("check", "--deploy", env=env)
    serving = subprocess.run(
        [PYTHON, "-c", "import chatproject.asgi"],
        cwd=PROJECT_DIR,
        env={**env, "DJANGO_SETTINGS_MODULE": "chatproject.settings"},
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    # Commands that sign nothing still run (on a throwaway key), so a checkout without .env can
    # use manage.py makemigrations; nothing serves on that key.
    makemigrations = manage("makemigrations", "--check", "--dry-run", env=env)

    assert deploy_check.returncode != 0
    assert "SECRET_KEY is not set" in deploy_check.stderr
    assert serving.returncode != 0
    assert "SECRET_KEY is not set" in serving.stderr
    assert makemigrations.returncode == 0, makemigrations.stderr


def serving_process_gc_thresholds(**overrides: str) -> subprocess.CompletedProcess[str]:
    """Load the application as a server would, then print the collector's thresholds."""
    return subprocess.run(
        [PYTHON, "-c", "import gc, chatproject.asgi; print(*gc.get_threshold(), sep=',')"],
        cwd=PROJECT_DIR,
        env={**production_env(**overrides), "DJANGO_SETTINGS_MODULE": "chatproject.settings"},
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )


def test_the_serving_process_collects_garbage_less_often_than_python_by_default() -> None:
    default = serving_process_gc_thresholds()
    restored = serving_process_gc_thresholds(GC_THRESHOLDS="700,10,10")

    assert default.stdout.strip() == "20000,10,10", default.stderr
    assert restored.stdout.strip() == "700,10,10", restored.stderr


@pytest.mark.parametrize("value", ["fast", "1,2,3,4", "-1", ""])
def test_gc_thresholds_that_python_would_refuse_stop_the_server_with_their_name(
    value: str,
) -> None:
    result = serving_process_gc_thresholds(GC_THRESHOLDS=value)

    assert result.returncode != 0
    assert "GC_THRESHOLDS must be one to three integers" in result.stderr


# --- /healthz failures, in this process ----------------------------------------------------------


def pubsub_layer_at(port: int) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "messaging.channel_layer.ShardedRedisPubSubLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{port}/0"]},
        }
    }


@pytest.mark.django_db(transaction=True)
async def test_healthz_says_503_naming_the_channel_layer_when_redis_is_dead(
    async_client: Any, settings: Any
) -> None:
    settings.CHANNEL_LAYERS = pubsub_layer_at(free_port())  # Nothing listens there.
    response = await async_client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"database": "ok", "channel_layer": "unavailable"}


@pytest.mark.django_db(transaction=True)
async def test_healthz_gives_up_on_a_redis_that_never_answers(
    async_client: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "CHECK_TIMEOUT_SECONDS", 0.5)
    # The kernel accepts connections to a listening socket; nobody ever reads or answers.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        settings.CHANNEL_LAYERS = pubsub_layer_at(silent.getsockname()[1])
        started = time.monotonic()
        response = await async_client.get("/healthz/")
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.json() == {"database": "ok", "channel_layer": "timeout"}
    assert elapsed < 3


def test_healthz_says_503_naming_the_database_when_postgresql_is_unreachable(
    tmp_path: Path,
) -> None:
    # The answer goes to a file of its own, not to stdout: the log goes there too, and the
    # pool's threads keep logging failed connection attempts from the background, at any moment
    # (a log line between print()'s writes, or after them, made this test fail now and then).
    answer = tmp_path / "answer.json"
    script = (
        "import django, json, sys; django.setup(); from django.test import Client; "
        "r = Client().get('/healthz', HTTP_HOST='localhost'); "
        "open(sys.argv[1], 'w').write(json.dumps([r.status_code, r.content.decode()]))"
    )
    env = production_env(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/nothing", DB_POOL_TIMEOUT="1"
    )
    result = subprocess.run(
        [PYTHON, "-c", script, str(answer)],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    status, body = json.loads(answer.read_text())
    assert status == 503
    assert json.loads(body) == {"database": "unavailable", "channel_layer": "ok"}


# --- The entrypoint, outside Docker --------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers if k.lower() == name.lower()), "")

    def json(self) -> Any:
        return json.loads(self.body)


def fetch(
    instance: ManagedProcess,
    path: str,
    *,
    method: str = "GET",
    body: dict[str, Any] | None = None,
    token: str | None = None,
    https: bool = False,
) -> Response:
    """A request as the proxy would pass it on; `https`: as a TLS-terminating proxy would."""
    headers = {"Host": SERVED_HOST}
    if https:
        headers["X-Forwarded-Proto"] = "https"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body)
    connection = http.client.HTTPConnection(instance.host, instance.port, timeout=10)
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        return Response(response.status, response.getheaders(), response.read())
    finally:
        connection.close()


def open_socket(instance: ManagedProcess, token: str) -> ClientConnection:
    return connect(f"ws://{instance.host}:{instance.port}/chats/ws?token={token}", open_timeout=10)


@dataclass
class Stack:
    env: dict[str, str]
    instances: tuple[Entrypoint, Entrypoint]
    database_url: str


@dataclass
class Account:
    id: int
    username: str
    token: str


@pytest.fixture(scope="module")
def fresh_database() -> Iterator[str]:
    """A new, empty PostgreSQL database next to DATABASE_URL's, dropped afterwards."""
    base = os.environ.get("DATABASE_URL", "")
    parts = urlsplit(base)
    if parts.scheme not in {"postgres", "postgresql"}:
        if IN_CI:
            pytest.fail("CI=true but DATABASE_URL is not a PostgreSQL URL")
        pytest.skip("needs PostgreSQL (set DATABASE_URL=postgres://...)")
    name = f"{parts.path.lstrip('/') or 'chat'}_deploy"
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def stack(fresh_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two entrypoints started together, like compose's web1 and web2, on a fresh database."""
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("CI=true but redis-server is not installed")
        pytest.skip("needs redis-server")
    work = tmp_path_factory.mktemp("deploy")
    static_root = work / "static"
    env = production_env(
        DATABASE_URL=fresh_database,
        STATIC_ROOT=str(static_root),
        ALLOWED_HOSTS=SERVED_HOST,
        TRUST_PROXY_HEADERS="1",
        SHUTDOWN_GRACE_SECONDS="3",
    )
    # What the Dockerfile's build step does.
    collected = manage("collectstatic", "--noinput", "--verbosity", "0", env=env)
    assert collected.returncode == 0, collected.stderr
    # A private Redis: the two instances' channel layer is then theirs alone.
    with RedisServer(log_dir=work) as redis:
        env["REDIS_URL"] = redis.url()
        instances = (Entrypoint(env=env, log_dir=work), Entrypoint(env=env, log_dir=work))
        start_all(*instances, timeout=90)
        try:
            yield Stack(env=env, instances=instances, database_url=fresh_database)
        finally:
            for instance in instances:
                instance.stop()


@pytest.fixture(scope="module")
def accounts(stack: Stack) -> tuple[Account, Account]:
    """Two users, registered and logged in through the HTTP API of the first instance."""
    instance = stack.instances[0]
    made = []
    for name in ("alice", "bob"):
        credentials = {"username": f"deploy-{name}", "password": PASSWORD}
        registered = fetch(instance, "/users/register", method="POST", body=credentials, https=True)
        assert registered.status == 201, registered.body
        login = fetch(instance, "/users/login", method="POST", body=credentials, https=True)
        assert login.status == 200, login.body
        made.append(Account(registered.json()["id"], name, login.json()["access"]))
    return made[0], made[1]


def test_both_instances_started_together_on_one_fresh_database(stack: Stack) -> None:
    """One instance applied every migration, the other found nothing left (plain concurrent
    `migrate` runs fail here: both create the same tables)."""
    applied = sorted(
        int(count)
        for instance in stack.instances
        for count in re.findall(r"migrations: (\d+) to apply", instance.read_log())
    )
    assert len(applied) == 2 and applied[0] == 0 and applied[1] > 0, applied


def test_healthz_answers_200_over_plain_http_with_and_without_slash(stack: Stack) -> None:
    for instance in stack.instances:
        for path in ("/healthz", "/healthz/"):
            response = fetch(instance, path)  # Plain http: exempt from the https redirect.
            assert response.status == 200
            assert response.json() == {"database": "ok", "channel_layer": "ok"}
            assert "no-store" in response.header("Cache-Control")


def test_docker_health_probe_passes_and_fails(stack: Stack) -> None:
    def probe(port: int) -> int:
        env = {**os.environ, "PORT": str(port), "ALLOWED_HOSTS": f"{SERVED_HOST},localhost"}
        command = [PYTHON, str(PROJECT_DIR / "deploy" / "healthcheck.py")]
        return subprocess.run(command, env=env, capture_output=True, timeout=30).returncode

    assert probe(stack.instances[0].port) == 0
    assert probe(free_port()) == 1


def test_docs_and_its_static_assets_load(stack: Stack) -> None:
    instance = stack.instances[1]
    page = fetch(instance, "/docs", https=True)
    assert page.status == 200
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.body.decode())
    assert {Path(asset).suffix for asset in assets} >= {".css", ".js", ".png"}, assets
    for asset in assets:
        loaded = fetch(instance, asset, https=True)
        assert (loaded.status, bool(loaded.body)) == (200, True), asset
    assert fetch(instance, "/api/schema", https=True).status == 200
    # Production redirects plain http to https (the proxy says which one it was).
    redirected = fetch(instance, "/docs")
    assert redirected.status == 301
    assert redirected.header("Location") == f"https://{SERVED_HOST}/docs"


def test_admin_login_page_its_stylesheet_and_secure_cookie(stack: Stack) -> None:
    instance = stack.instances[0]
    page = fetch(instance, "/admin/login/", https=True)
    assert page.status == 200
    assert b'name="username"' in page.body
    stylesheets = re.findall(r'href="(/static/admin/css/[^"]+\.css)"', page.body.decode())
    assert stylesheets
    assert fetch(instance, stylesheets[0], https=True).status == 200
    assert "; Secure" in page.header("Set-Cookie")


def test_websocket_round_trip_across_the_two_instances(
    stack: Stack, accounts: tuple[Account, Account]
) -> None:
    alice, bob = accounts
    created = fetch(
        stack.instances[0],
        "/chats",
        method="POST",
        body={"title": "deploy", "member_ids": [bob.id]},
        token=alice.token,
        https=True,
    )
    assert created.status == 201, created.body
    chat_id = created.json()["id"]
    with open_socket(stack.instances[0], alice.token) as mine:
        with open_socket(stack.instances[1], bob.token) as theirs:
            event = {"type": "new_message", "chat_id": chat_id, "text": "across", "client_id": "d1"}
            mine.send(json.dumps(event))
            sent = json.loads(mine.recv(timeout=10))
            received = json.loads(theirs.recv(timeout=10))
    assert sent["type"] == "new_message"
    assert (sent["message"]["text"], sent["message"]["client_id"]) == ("across", "d1")
    assert received["message"]["id"] == sent["message"]["id"]


def test_logs_are_json_lines_without_tokens_or_passwords(
    stack: Stack, accounts: tuple[Account, Account]
) -> None:
    alice, _ = accounts
    # Traffic that carries the token in the query string, over HTTP and over a WebSocket.
    assert fetch(stack.instances[0], f"/chats/ws?token={alice.token}", https=True).status == 404
    with open_socket(stack.instances[1], alice.token):
        pass
    deadline = time.monotonic() + 5
    while '"action": "disconnected"' not in stack.instances[1].read_log():
        assert time.monotonic() < deadline, "the WebSocket's disconnection was never logged"
        time.sleep(0.05)
    logs = "".join(instance.read_log() for instance in stack.instances)
    for line in filter(None, logs.splitlines()):
        entry = json.loads(line)
        assert {"time", "level", "logger", "message"} <= entry.keys(), line
    assert "token=[redacted]" in logs
    for secret in (alice.token, alice.token.split(".")[2], PASSWORD, SECRET_KEY):
        assert secret not in logs


def test_migrate_with_lock_waits_for_the_instance_holding_the_lock(fresh_database: str) -> None:
    with psycopg.connect(fresh_database, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK_KEY])
        env = production_env(DATABASE_URL=fresh_database)
        result = manage("migrate_with_lock", "--lock-timeout", "1", env=env)
    assert result.returncode != 0
    assert "another instance holds the lock" in result.stdout
    assert "held the migration lock for more than 1 s" in result.stderr


def test_an_oversized_frame_closes_with_1009_not_1011(
    stack: Stack, accounts: tuple[Account, Account]
) -> None:
    """Stock daphne turns the consumer's 1009 into 1011 (autobahn refuses to send 1009)."""
    with open_socket(stack.instances[0], accounts[0].token) as socket_:
        socket_.send("x" * (64 * 1024 + 1))
        with pytest.raises(ConnectionClosed) as closed:
            socket_.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


# Last, as it stops the second instance of the module's stack (booting a third would cost more
# than every other test of the stack together).
def test_sigterm_closes_websockets_with_1001_then_exits(
    stack: Stack, accounts: tuple[Account, Account]
) -> None:
    instance = stack.instances[1]
    with open_socket(instance, accounts[0].token) as socket_:
        os.kill(instance.pid, signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            socket_.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert instance.wait_exit(timeout=10) == 0, instance.log_tail()
    assert not port_accepts(instance.port)
    assert "closing 1 WebSocket(s) with 1001" in instance.read_log()
