"""Fixtures of the browser tests: real daphne instances with their static files collected, a
private Redis, and a headless Chromium driven by Playwright.

Tests marked `browser` skip (with the reason) when Playwright or Chromium is missing, and fail
instead under CI=true, as the `postgres`/`redis` markers do (../../conftest.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection, connections

from conftest import IN_CI
from liveserver.processes import (
    PROJECT_DIR,
    DaphneServer,
    ManagedProcess,
    RedisServer,
    database_url,
    start_all,
    stop_all,
    venv_python,
)

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The instances' WebSocket budget: the tests send bursts (500 messages of history go through
# the services, not the socket, but the page's reads and typing add up).
INSTANCE_ENV = {"WS_RATE_BURST": "10000", "WS_RATE_PER_SECOND": "10000"}


def browser_missing() -> str | None:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "needs the playwright package (pip install -r requirements-dev.txt)"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"needs Chromium at {CHROMIUM} (apt-get install chromium)"
    if shutil.which("redis-server") is None:
        return "needs the redis-server executable"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("browser"):
        missing = browser_missing()
        if missing:
            if IN_CI:
                pytest.fail(f"CI=true but this browser test {missing}")
            pytest.skip(missing)


# --- Static files, as the Dockerfile collects them ----------------------------------------------


@pytest.fixture(scope="session")
def static_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`collectstatic` into a temporary STATIC_ROOT with the production settings (DEBUG=0:
    whitenoise's compressed manifest storage), for the page's own files. The admin's, DRF's and
    Swagger UI's are left out: no page of these tests uses them, and they take seconds."""
    root = tmp_path_factory.mktemp("static")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "chatproject.settings",
        "DEBUG": "0",
        "SECRET_KEY": "collectstatic-for-the-browser-tests-only-0000000000000",
        "STATIC_ROOT": str(root),
        "ENV_FILE": "",
    }
    command = [
        venv_python() if Path(venv_python()).exists() else sys.executable,
        "manage.py",
        "collectstatic",
        "--noinput",
        "--verbosity=0",
        "--ignore=admin",
        "--ignore=rest_framework",
        "--ignore=drf_spectacular_sidecar",
    ]
    done = subprocess.run(command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (root / "staticfiles.json").is_file()
    return root


# --- Server processes ----------------------------------------------------------------------------


@dataclass
class Cluster:
    redis: RedisServer
    one: DaphneServer
    two: DaphneServer


@contextlib.contextmanager
def running_cluster(log_dir: Path, static: Path) -> Iterator[Cluster]:
    """A private Redis, then two daphne instances (DEBUG=0) on the pytest-django test database."""
    redis = RedisServer(log_dir=log_dir)
    started: list[ManagedProcess] = [redis]
    try:
        redis.start(timeout=10)
        instance: dict[str, Any] = {
            "database_url": database_url(connection.settings_dict),
            "redis_url": redis.url(),
            "secret_key": settings.SECRET_KEY,
            "extra_env": {
                **INSTANCE_ENV,
                # Tokens minted by the tests (AccessToken.for_user) must verify there.
                "JWT_SIGNING_KEY": settings.SIMPLE_JWT["SIGNING_KEY"],
                "STATIC_ROOT": str(static),
                # Set in this process only (see `chromium`); never for the servers.
                "DJANGO_ALLOW_ASYNC_UNSAFE": "",
            },
            "log_dir": log_dir,
        }
        one, two = DaphneServer(**instance), DaphneServer(**instance)
        started += [one, two]
        start_all(one, two, timeout=60)
        yield Cluster(redis=redis, one=one, two=two)
    finally:
        stop_all(*reversed(started))


@pytest.fixture(scope="module")
def cluster(
    django_db_setup: None,
    django_db_blocker: Any,
    static_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    if browser_missing():
        pytest.skip(browser_missing())
    if connection.settings_dict["ENGINE"] != "django.db.backends.postgresql":
        if IN_CI:
            pytest.fail("CI=true but the browser tests need PostgreSQL (DATABASE_URL)")
        pytest.skip("needs PostgreSQL (set DATABASE_URL=postgres://...)")
    with django_db_blocker.unblock():
        with running_cluster(tmp_path_factory.mktemp("browser-cluster"), static_root) as started:
            yield started
        # The tests' flushes left this thread's connection open; tests after this module that
        # may not use the database would trip on its health check at the end of a request.
        connections.close_all()


# --- The tests' own database work ------------------------------------------------------------


@pytest.fixture(scope="module")
def orm() -> Iterator[Callable[..., Any]]:
    """`orm(function, *args, **kwargs)` runs it on one worker thread and returns its result.

    Playwright's sync API keeps an event loop running in the test's thread, where Django
    refuses ORM calls (and the services' on_commit publishing, which is async_to_sync); the
    worker thread has none. Its database connection is closed at the end of the module."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="browser-tests-orm") as worker:

        def run(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            return worker.submit(function, *args, **kwargs).result()

        try:
            yield run
        finally:
            run(connections.close_all)


# --- The browser ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    missing = browser_missing()
    if missing:
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread, where Django refuses
    # ORM calls; pytest-django's flush after each test makes them here. Allowed for this
    # process (Playwright's docs advise it for Django); the tests' own queries run on the
    # `orm` thread anyway, and the servers never get the variable.
    saved = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                yield browser
            finally:
                browser.close()
    finally:
        if saved is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = saved
