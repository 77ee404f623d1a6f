"""What a history page costs in the process itself, without a server, a network or PostgreSQL:
the code's share of scenario 4, comparable across commits on a machine whose speed varies.

    .venv/bin/python -m bench.microbench_pages [--project DIR] [--requests N]

DIR is a project tree (default: this one), such as another commit exported with
`git archive <commit> | tar -x -C DIR`; it runs with this checkout's .venv. The data: a
temporary SQLite database, two users, one chat of 300 messages. Each page is requested N times
(default 300) through DRF's APIClient after 30 unmeasured requests; printed: p50 and mean in
milliseconds per page. The pages are those every commit since the first has: the newest page
of a chat's messages, `?after=0` (oldest first), and the list of chats.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

PAGES = {
    "newest": "/chats/{chat}/messages",
    "after=0": "/chats/{chat}/messages?after=0",
    "chats": "/chats",
}
MESSAGES = 300
WARM_UP = 30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="No directory at")  # No collectstatic here.
    with tempfile.TemporaryDirectory() as scratch:
        client, chat_id = _set_up(args.project.resolve(), Path(scratch) / "pages.sqlite3")
        print(f"{args.project.resolve()}: {args.requests} requests a page, {MESSAGES} messages")
        for name, path in PAGES.items():
            p50, mean = _time(client, path.format(chat=chat_id), args.requests)
            print(f"  {name:8} p50 {p50:.2f} ms  mean {mean:.2f} ms")


def _set_up(project: Path, database: Path):  # noqa: ANN202 - Django is imported late
    """Django from `project`, on a new SQLite file; an authenticated client and a chat."""
    sys.path.insert(0, str(project))
    os.chdir(project)
    os.environ["DJANGO_SETTINGS_MODULE"] = "chatproject.settings_test"
    os.environ["DATABASE_URL"] = f"sqlite:///{database}"
    os.environ.pop("REDIS_URL", None)
    import django
    from django.conf import settings

    django.setup()
    settings.ALLOWED_HOSTS = ["testserver"]
    settings.LOGGING_CONFIG = None
    import logging

    logging.disable(logging.CRITICAL)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model
    from rest_framework.test import APIClient

    from messaging import services

    users = get_user_model().objects
    reader = users.create_user(username="reader", password="pw-for-the-bench-only")
    writer = users.create_user(username="writer", password="pw-for-the-bench-only")
    chat = services.chat_create(creator=reader, title="pages", member_ids=[writer.pk])
    for n in range(MESSAGES):
        services.message_send(author=writer if n % 2 else reader, chat_id=chat.pk, text=f"m{n}")
    client = APIClient()
    client.force_authenticate(reader)
    return client, chat.pk


def _time(client, path: str, requests: int) -> tuple[float, float]:  # noqa: ANN001
    for _ in range(WARM_UP):
        _get(client, path)
    took = []
    for _ in range(requests):
        start = time.perf_counter()
        _get(client, path)
        took.append((time.perf_counter() - start) * 1000)
    return statistics.median(took), statistics.fmean(took)


def _get(client, path: str) -> None:  # noqa: ANN001
    response = client.get(path)
    if response.status_code != 200:
        raise SystemExit(f"GET {path}: {response.status_code} {response.content[:200]!r}")


if __name__ == "__main__":
    main()
