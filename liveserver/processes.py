"""Start and stop real server processes on free loopback ports: a private Redis, and daphne.

For tests and benchmarks that need the service as it runs in production (several daphne
instances sharing PostgreSQL and Redis) instead of an in-process ASGI application. Every process
is a child of the caller and is stopped by its own pid, never by name. Nothing here touches the
shared PostgreSQL/Redis services on 5432/6379: Redis is always a private one on a free port.

Typical use::

    with RedisServer(log_dir=tmp_path) as redis:
        common = dict(database_url=url, redis_url=redis.url(), secret_key=key, log_dir=tmp_path)
        with serving(DaphneServer(**common), DaphneServer(**common)) as (one, two):
            ...  # one.ws_url(token=...), two.http_url("/chats"), redis.kill(), redis.restart()

Ports and waiting
-----------------
``free_port(host="127.0.0.1") -> int``
    A port nobody listens on now. Another process may take it before the server binds it, so
    ``start()`` moves to a new port when that happens (only for ports it chose itself).
``port_accepts(port, host="127.0.0.1") -> bool``
``wait_for_port(port, *, host="127.0.0.1", timeout=10.0, process=None) -> None``
``http_status(url, timeout=2.0) -> int | None``
    The status of one GET (any status; redirects not followed, no proxy), None when nothing
    answers.
``wait_for_http(url, *, timeout=10.0, process=None) -> int``
    Poll until the URL answers a GET with a status below 500; return that status.
    The two ``wait_for_*`` raise ``TimeoutError`` after ``timeout`` seconds and, when given the
    ``process`` (a ``ManagedProcess``) that should answer, ``ProcessExitedError`` as soon as it
    dies.
``database_url(settings_dict) -> str``
    A PostgreSQL ``DATABASE_URL`` for a Django ``connection.settings_dict`` (pytest-django's test
    database, say), so that child processes use the very database the caller writes to.

Processes
---------
``ManagedProcess`` is the base of the two servers; each is a context manager (``with`` starts it
unless it already runs, and stops it on exit).

- ``.start(timeout) -> self``: spawn and wait until ready (``.spawn()`` and ``.wait_ready(timeout)``
  are its two halves, to start several processes at once).
- ``.stop(timeout=5.0) -> int | None``: SIGTERM, SIGKILL if still alive after ``timeout`` s;
  returns the exit code (None if never started). Does nothing to a process that already exited.
- ``.terminate()`` and ``.wait_exit(timeout=5.0) -> int | None``: the two halves of ``stop()``.
- ``.kill() -> int | None``: SIGKILL at once, as in a crash.
- ``.restart(timeout) -> self``: stop if running, start again **on the same port**.
- ``.pid``, ``.host``, ``.port``, ``.running``, ``.returncode``, ``.log_path``,
  ``.read_log() -> str``, ``.log_tail(lines=40) -> str``: stdout and stderr go to the log file.

``RedisServer(port=None, *, host="127.0.0.1", log_dir=None, executable="redis-server")``
    ``redis-server --save "" --appendonly no`` (no persistence; its ``--dir`` is the log
    directory, so nothing is written in the project). Ready when it answers PING.
    ``.url(db=0) -> "redis://127.0.0.1:<port>/<db>"``.
``DaphneServer(*, database_url, redis_url, secret_key, port=None, host="127.0.0.1",
extra_env=None, log_dir=None, application="chatproject.asgi:application",
settings_module="chatproject.settings", python=None, server_module="serving.server")``
    ``<python> -m <server_module> -b <host> -p <port> <application>`` in the project directory;
    ``python`` defaults to the project's ``.venv/bin/python`` (else the running interpreter), and
    ``server_module`` may name any wrapper of daphne that takes daphne's command line.
    Environment: the caller's, with ``DJANGO_SETTINGS_MODULE=settings_module``, ``DEBUG=0``,
    ``SECRET_KEY``, ``ALLOWED_HOSTS=<host>,127.0.0.1,localhost``, ``DATABASE_URL`` and
    ``REDIS_URL`` (None removes the variable: SQLite file / in-memory layer of one process),
    ``SECURE_SSL_REDIRECT=0`` (plain http, no TLS proxy in front), ``ENV_FILE=`` (the project's
    ``.env`` is not read), ``PYTHONUNBUFFERED=1``; then ``extra_env`` (e.g.
    ``{"WS_RATE_BURST": "10000"}``), which wins.
    Ready when ``GET /users/me`` answers (401 without a token). Under ``DEBUG=0`` static files
    use whitenoise's manifest storage: the JSON API and the WebSocket work without
    ``collectstatic``, but pages that render ``{% static %}`` (``/docs``, ``/admin/``) answer 500.
    ``.http_url(path="/") -> str``, ``.ws_url(path="/chats/ws", token=None) -> str``.

``start_all(*processes, timeout=30.0) -> None``
    Spawn all, then wait for each: N daphnes start in about the time of one. On failure every
    one of them is stopped.
``stop_all(*processes, timeout=5.0) -> None``
    SIGTERM to all at once, then wait for each (SIGKILL after ``timeout``): stops in parallel.
``serving(*processes, timeout=30.0)``
    Context manager: ``start_all`` on entry (yields the processes), ``stop_all`` on exit.

Errors: ``ProcessExitedError`` (died before it was ready) and ``TimeoutError`` (not ready in time;
the process is then stopped); both messages end with the tail of the process's log.

Safety and limits
-----------------
- Children get ``PR_SET_PDEATHSIG`` (Linux): if the process that started them dies, even by
  SIGKILL, they receive SIGTERM; and children still running at interpreter exit are stopped.
  The kernel ties that signal to the *thread* that spawned the child: call ``start()``/``spawn()``
  from a thread that outlives the servers (the main thread), never from a short-lived worker.
- Logs are ``<log_dir>/<name>-<port>.log``, appended to, so a Redis restarted on the same port
  keeps one log. Without ``log_dir`` a new directory under the system temp dir is created and
  kept, to be read after a failure. Daphne's access log goes there too.
- Settings still honour any other variable of the caller's environment (``LOG_FORMAT``,
  ``WS_*``...): pass ``extra_env`` to pin one.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote, urlsplit

PROJECT_DIR = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
POLL_SECONDS = 0.05
# How often start() moves to a new free port when another process took the one it chose.
PORT_ATTEMPTS = 3
DAPHNE_READY_PATH = "/users/me"
_PR_SET_PDEATHSIG = 1  # From <linux/prctl.h>.


class ProcessExitedError(RuntimeError):
    """A managed process exited while we waited for it to become ready."""

    def __init__(self, process: ManagedProcess) -> None:
        super().__init__(
            f"{process!r} exited with code {process.returncode} before it was ready.\n"
            f"{process.log_tail()}"
        )
        self.process = process


# --- Ports and waiting ---------------------------------------------------------------------------


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_accepts(port: int, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The status of one GET of an http:// URL (redirects not followed, no proxy), or None."""
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    client = http.client.HTTPConnection(parts.hostname or LOOPBACK, parts.port, timeout=timeout)
    try:
        client.request("GET", path)
        return client.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        client.close()


def _wait_until(
    ready: Callable[[], bool], *, timeout: float, what: str, process: ManagedProcess | None
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and not process.running:
            raise ProcessExitedError(process)
        if ready():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.1f} s")
        time.sleep(POLL_SECONDS)


def wait_for_port(
    port: int,
    *,
    host: str = LOOPBACK,
    timeout: float = 10.0,
    process: ManagedProcess | None = None,
) -> None:
    _wait_until(
        lambda: port_accepts(port, host),
        timeout=timeout,
        what=f"{host}:{port}",
        process=process,
    )


def wait_for_http(url: str, *, timeout: float = 10.0, process: ManagedProcess | None = None) -> int:
    answered: list[int] = []

    def answers() -> bool:
        status = http_status(url)
        if status is not None and status < 500:
            answered.append(status)
            return True
        return False

    _wait_until(answers, timeout=timeout, what=url, process=process)
    return answered[-1]


def database_url(settings_dict: Mapping[str, Any]) -> str:
    """`postgres://user:password@host:port/name` for a Django database's settings."""
    if settings_dict["ENGINE"] != "django.db.backends.postgresql":
        raise ValueError(
            f"Only PostgreSQL can be shared with other processes, not {settings_dict['ENGINE']}"
        )
    user = quote(settings_dict.get("USER") or "", safe="")
    password = quote(settings_dict.get("PASSWORD") or "", safe="")
    credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = quote(settings_dict.get("HOST") or "", safe="")
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return f"postgres://{credentials}{host}{port}/{quote(settings_dict['NAME'], safe='')}"


# --- Process lifecycle ---------------------------------------------------------------------------


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to SIGTERM the child when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # Looked up here, not in the child.
    except (OSError, AttributeError):
        return None

    def set_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return set_signal


_DIE_WITH_PARENT = _parent_death_signal()
_running: set[ManagedProcess] = set()


@atexit.register
def _stop_leftovers() -> None:
    for process in list(_running):
        process.stop(timeout=2.0)


class ManagedProcess:
    """One child server process: its command line, port, log file and pid."""

    name = "process"

    def __init__(self, *, port: int | None, host: str, log_dir: Path | str | None) -> None:
        self.host = host
        self._port_chosen_by_caller = port is not None
        self.port = port if port is not None else free_port(host)
        self.log_dir = (
            Path(log_dir)
            if log_dir is not None
            else Path(tempfile.mkdtemp(prefix=f"liveserver-{self.name}-"))
        )
        self._popen: subprocess.Popen[bytes] | None = None

    # --- What subclasses define -------------------------------------------------------------

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def is_ready(self) -> bool:
        return port_accepts(self.port, self.host)

    # --- State ------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen is not None else None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}-{self.port}.log"

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        tail = "\n".join(self.read_log().splitlines()[-lines:])
        return f"--- last lines of {self.log_path} ---\n{tail}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(pid={self.pid}, port={self.port})"

    # --- Starting ---------------------------------------------------------------------------

    def spawn(self) -> Self:
        """Start the process without waiting for it to be ready."""
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:  # The child keeps its own copy of the handle.
            self._popen = subprocess.Popen(
                self.command(),
                cwd=PROJECT_DIR,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_DIE_WITH_PARENT,
            )
        _running.add(self)
        return self

    def wait_ready(self, timeout: float) -> Self:
        try:
            _wait_until(self.is_ready, timeout=timeout, what=repr(self), process=self)
        except TimeoutError as error:
            self.stop()
            raise TimeoutError(f"{error}\n{self.log_tail()}") from None
        return self

    def start(self, timeout: float = 30.0) -> Self:
        self.spawn()
        return self._wait_ready_or_move(timeout)

    def _wait_ready_or_move(self, timeout: float) -> Self:
        """Wait; if the process died because someone else took the port we chose, retry on
        another one (a port the caller asked for is never changed)."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                return self.wait_ready(timeout)
            except ProcessExitedError:
                port_stolen = port_accepts(self.port, self.host)
                if self._port_chosen_by_caller or not port_stolen or attempt == PORT_ATTEMPTS:
                    raise
            self.port = free_port(self.host)
            self.spawn()
        raise AssertionError("unreachable")

    def restart(self, timeout: float = 30.0) -> Self:
        """Stop (if running) and start again on the same port."""
        self.stop()
        self.spawn()
        return self.wait_ready(timeout)

    # --- Stopping ---------------------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` seconds; the exit code."""
        self.terminate()
        return self.wait_exit(timeout)

    def terminate(self) -> None:
        """Send SIGTERM (if running) without waiting; `wait_exit` finishes the job."""
        if self.running:
            assert self._popen is not None
            self._popen.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float = 5.0) -> int | None:
        """Wait up to `timeout` seconds for the process to exit, then SIGKILL it."""
        popen = self._popen
        if popen is None:
            return None
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
        _running.discard(self)
        return popen.returncode

    def kill(self) -> int | None:
        """SIGKILL at once, like a crash; the exit code."""
        popen = self._popen
        if popen is None:
            return None
        if popen.poll() is None:
            popen.kill()
            popen.wait()
        _running.discard(self)
        return popen.returncode

    def __enter__(self) -> Self:
        return self if self.running else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_all(*processes: ManagedProcess, timeout: float = 30.0) -> None:
    """Spawn every process, then wait for each; on any failure, stop them all."""
    try:
        for process in processes:
            process.spawn()
        for process in processes:
            process._wait_ready_or_move(timeout)
    except BaseException:
        stop_all(*processes)
        raise


def stop_all(*processes: ManagedProcess, timeout: float = 5.0) -> None:
    """SIGTERM to all at once, then wait for each (SIGKILL after `timeout` seconds)."""
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait_exit(timeout)


Process = TypeVar("Process", bound=ManagedProcess)


@contextlib.contextmanager
def serving(*processes: Process, timeout: float = 30.0) -> Iterator[tuple[Process, ...]]:
    start_all(*processes, timeout=timeout)
    try:
        yield processes
    finally:
        stop_all(*processes)


# --- The servers ---------------------------------------------------------------------------------


def redis_answers_ping(port: int, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer(ManagedProcess):
    """A private, memory-only redis-server."""

    name = "redis"

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = LOOPBACK,
        log_dir: Path | str | None = None,
        executable: str = "redis-server",
    ) -> None:
        super().__init__(port=port, host=host, log_dir=log_dir)
        self.executable = executable

    def command(self) -> list[str]:
        return [
            self.executable,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self.log_dir),
        ]  # fmt: skip

    def is_ready(self) -> bool:
        return redis_answers_ping(self.port, self.host)

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"


def venv_python() -> str:
    candidate = PROJECT_DIR / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


class DaphneServer(ManagedProcess):
    """One instance of the chat service under daphne, configured like production."""

    name = "daphne"

    def __init__(
        self,
        *,
        database_url: str | None,
        redis_url: str | None,
        secret_key: str,
        port: int | None = None,
        host: str = LOOPBACK,
        extra_env: Mapping[str, str] | None = None,
        log_dir: Path | str | None = None,
        application: str = "chatproject.asgi:application",
        settings_module: str = "chatproject.settings",
        python: str | None = None,
        server_module: str = "serving.server",
    ) -> None:
        super().__init__(port=port, host=host, log_dir=log_dir)
        self.database_url = database_url
        self.redis_url = redis_url
        self.secret_key = secret_key
        self.extra_env = dict(extra_env or {})
        self.application = application
        self.settings_module = settings_module
        self.python = python or venv_python()
        self.server_module = server_module

    def command(self) -> list[str]:
        return [
            self.python, "-m", self.server_module,
            "-b", self.host, "-p", str(self.port), self.application,
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
        env.update(
            DJANGO_SETTINGS_MODULE=self.settings_module,
            DEBUG="0",
            SECRET_KEY=self.secret_key,
            ALLOWED_HOSTS=",".join(dict.fromkeys([self.host, "127.0.0.1", "localhost"])),
            # Plain http on loopback, no TLS proxy in front: no redirect to https.
            SECURE_SSL_REDIRECT="0",
            # The configuration is this one, not whatever a developer's .env says.
            ENV_FILE="",
            PYTHONUNBUFFERED="1",
        )
        if self.database_url is not None:
            env["DATABASE_URL"] = self.database_url
        if self.redis_url is not None:
            env["REDIS_URL"] = self.redis_url
        env.update(self.extra_env)
        return env

    def is_ready(self) -> bool:
        status = http_status(self.http_url(DAPHNE_READY_PATH), timeout=1.0)
        return status is not None and status < 500

    def http_url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def ws_url(self, path: str = "/chats/ws", token: str | None = None) -> str:
        query = f"?token={quote(token, safe='')}" if token is not None else ""
        return f"ws://{self.host}:{self.port}{path}{query}"
