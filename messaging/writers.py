"""Writer threads: the WebSocket's sends, committed in batches (group commit).

Channels runs every `database_sync_to_async` call on one shared thread, so every socket's send
would queue behind every other socket's queries. Sends run here instead, on a few threads of
their own, a chat always on the same one: sends to different chats commit in parallel, and one
chat's sends are committed, then announced, one batch at a time in id order on this instance
(announcing them out of order would make every socket wait for the gap).

A writer takes every send waiting for it (up to MAX_BATCH) and stores them in one transaction:
one commit, so one WAL flush, for the lot, where PostgreSQL spent most of its time with one
commit per message (docs/performance.md). A send refused by a business rule (not a member)
fails alone; a database error rolls the batch back and each send is retried alone, so one bad
send never fails the others. Batches lock chat rows in chat id order, so two instances'
batches cannot deadlock each other.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import SyncToAsync
from django.db import close_old_connections, transaction

logger = logging.getLogger(__name__)

WRITER_THREADS = 4
MAX_BATCH = 64


@dataclass(eq=False)
class _Job:
    chat_id: int
    func: Callable[..., Any]
    kwargs: dict[str, Any]
    loop: asyncio.AbstractEventLoop
    # Runs several jobs' kwargs in the current transaction: a list of results or refusals.
    # Sends only: they lock their chat's row first, so batches sorted by chat cannot deadlock.
    batch: Callable[[list[dict[str, Any]]], list[Any]] | None
    result: Future[Any] = field(default_factory=Future)


class ChatWriter:
    def __init__(self, name: str) -> None:
        self.name = name
        self.jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.starting = threading.Lock()

    def submit(self, job: _Job) -> None:
        self.jobs.put(job)
        if self.thread is None:
            with self.starting:
                if self.thread is None:
                    self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                    self.thread.start()

    def _run(self) -> None:
        while True:
            batch = [self.jobs.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            # A socket that went away before its send started: the client never had an answer,
            # and sends it again (with its client_id) when it comes back.
            batch = [job for job in batch if job.result.set_running_or_notify_cancel()]
            # One event loop per batch: the announcements go to the loop the sends came from.
            for loop in {job.loop: None for job in batch}:
                same_loop = [job for job in batch if job.loop is loop]
                try:
                    self._run_batch(same_loop, loop)
                except Exception as exc:  # Never let the thread die: its chats would hang.
                    logger.exception("writer %s failed a batch", self.name)
                    for job in same_loop:
                        if not job.result.done():
                            _settle(job, None, exc)

    def _run_batch(self, batch: list[_Job], loop: asyncio.AbstractEventLoop) -> None:
        SyncToAsync.threadlocal.main_event_loop = loop  # Where `events` publishes from.
        try:
            close_old_connections()
            together = [job for job in batch if job.batch is not None]
            if len(together) > 1 and len({job.batch for job in together}) == 1:
                self._run_together(sorted(together, key=_by_chat))
                batch = [job for job in batch if job.batch is None]
            for job in batch:
                self._run_alone(job)
        finally:
            close_old_connections()

    def _run_together(self, batch: list[_Job]) -> None:
        run_batch = batch[0].batch
        assert run_batch is not None
        try:
            with transaction.atomic():
                outcomes = run_batch([job.kwargs for job in batch])
        except Exception:
            logger.info("a batch of %s sends failed; retrying each alone", len(batch))
            for job in batch:
                self._run_alone(job)
            return
        for job, outcome in zip(batch, outcomes, strict=True):  # Committed: announced.
            if isinstance(outcome, BaseException):
                _settle(job, None, outcome)
            else:
                _settle(job, outcome, None)

    def _run_alone(self, job: _Job) -> None:
        try:
            value = job.func(**job.kwargs)
        except Exception as exc:
            _settle(job, None, exc)
        else:
            _settle(job, value, None)


def _by_chat(job: _Job) -> int:
    return job.chat_id


def _settle(job: _Job, value: Any, exc: BaseException | None) -> None:
    if exc is not None:
        job.result.set_exception(exc)
    else:
        job.result.set_result(value)


_writers = [ChatWriter(f"chat-writer-{i}") for i in range(WRITER_THREADS)]


async def run_on_writer(
    chat_id: int,
    func: Callable[..., Any],
    /,
    *,
    batch: Callable[[list[dict[str, Any]]], list[Any]] | None = None,
    **kwargs: Any,
) -> Any:
    """Run `func(**kwargs)` on the chat's writer thread. With `batch` (the many-at-once
    version of `func`), together with the other such calls waiting there, in one transaction."""
    job = _Job(
        chat_id=chat_id,
        func=func,
        kwargs=kwargs,
        loop=asyncio.get_running_loop(),
        batch=batch,
    )
    _writers[chat_id % len(_writers)].submit(job)
    return await asyncio.wrap_future(job.result)
