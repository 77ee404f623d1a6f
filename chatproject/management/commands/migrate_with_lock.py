"""`manage.py migrate_with_lock`: `migrate`, one instance at a time.

Every web instance migrates when it starts. Two plain `migrate` runs on a fresh PostgreSQL
database at the same moment fail (both create the same tables: measured here, one of them dies
with a duplicate key on pg_type). Holding a PostgreSQL advisory lock around `migrate` makes the
instances take turns: the first applies the migrations, the others then find nothing to do.

The lock lives on a connection of its own, held for the whole run and released at the end; if
the process dies, PostgreSQL drops the lock with its connection. Advisory locks are per database,
so instances of other databases on the same server never wait for each other.

`migrate`'s own progress output is replaced by two log records (the plan, then "done"), so all
the entrypoint prints is JSON lines in production.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.executor import MigrationExecutor

logger = logging.getLogger("chatproject.deploy")

# Any fixed 64-bit number that no other code of this database uses as an advisory lock key.
MIGRATION_LOCK_KEY = 0x6368_6174_6D69_6772  # "chatmigr"
POLL_SECONDS = 0.5


class Command(BaseCommand):
    help = "Apply migrations under a database-wide lock (safe when instances start together)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--lock-timeout",
            type=float,
            default=300.0,
            help="seconds to wait for another instance's migrations (default 300)",
        )

    def handle(self, *args: Any, lock_timeout: float, **options: Any) -> None:
        if connections[DEFAULT_DB_ALIAS].vendor != "postgresql":
            # SQLite (development): one process, nothing to coordinate.
            self._migrate()
            return
        lock = connections.create_connection(DEFAULT_DB_ALIAS)
        try:
            self._acquire(lock, lock_timeout)
            try:
                self._migrate()
            finally:
                with lock.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK_KEY])
        finally:
            lock.close()

    def _migrate(self) -> None:
        executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
        names = [f"{migration.app_label}.{migration.name}" for migration, _ in plan]
        logger.info("migrations: %d to apply: %s", len(names), ", ".join(names) or "none")
        # Run even when there is nothing to apply: post_migrate (content types, permissions).
        call_command("migrate", interactive=False, verbosity=0)
        logger.info("migrations: done")

    def _acquire(self, lock: BaseDatabaseWrapper, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting_said = False
        while True:
            with lock.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [MIGRATION_LOCK_KEY])
                if cursor.fetchone()[0]:
                    return
            # Said first: under load the first try may already come after the deadline.
            if not waiting_said:
                logger.info("migrations: another instance holds the lock; waiting for it")
                waiting_said = True
            if time.monotonic() + POLL_SECONDS > deadline:
                raise CommandError(
                    f"Another instance held the migration lock for more than {timeout:g} s."
                )
            time.sleep(POLL_SECONDS)
