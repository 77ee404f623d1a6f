"""`manage.py wait_for_database`: block until the database accepts connections, or give up.

The container entrypoint runs it first: in compose, PostgreSQL may still be starting (or
restarting) when the web instances start, and migrating against it would just crash them.
Progress goes to the log (JSON lines in production), like everything the service prints.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, OperationalError, connections

logger = logging.getLogger("chatproject.deploy")

RETRY_SECONDS = 1.0


class Command(BaseCommand):
    help = "Wait until the default database accepts connections (exit 1 after --timeout)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")

    def handle(self, *args: Any, timeout: float, **options: Any) -> None:
        connection = connections[DEFAULT_DB_ALIAS]
        deadline = time.monotonic() + timeout
        while True:
            try:
                connection.ensure_connection()
            except OperationalError as error:
                connection.close()
                if time.monotonic() + RETRY_SECONDS > deadline:
                    raise CommandError(
                        f"The database did not accept connections within {timeout:g} s: {error}"
                    ) from error
                logger.warning("waiting for the database: %s", str(error).strip())
                time.sleep(RETRY_SECONDS)
            else:
                connection.close()
                logger.info("the database accepts connections")
                return
