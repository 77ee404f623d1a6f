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
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import close_old_connections, transaction

from chatproject import metrics
from messaging import events

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
    result: asyncio.Future[Any]
    submitted_at: float = 0.0  # perf_counter() when handed to the writer (metrics).


# What a batch hands back to its event loop: each job with its result or its exception.
_Outcome = tuple[_Job, Any, BaseException | None]


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
            batch = [job for job in batch if not job.result.cancelled()]
            # One event loop per batch: the announcements go to the loop the sends came from.
            for loop in {job.loop: None for job in batch}:
                self._run_batch([job for job in batch if job.loop is loop], loop)

    def _run_batch(self, batch: list[_Job], loop: asyncio.AbstractEventLoop) -> None:
        """Run the jobs, then hand their announcements and results to the event loop in one
        call: one wake-up of the loop per batch, not two per send (each wake-up is a write to
        the loop's socket, and each gives the GIL away, which under load costs the writer up to
        5 ms to get back)."""
        outcomes: list[_Outcome] = []
        with events.publishes_collected() as publishes:
            try:
                close_old_connections()
                together = [job for job in batch if job.batch is not None]
                if metrics.ON and together:
                    metrics.BATCH_SIZE.observe(len(together))
                if len(together) > 1 and len({job.batch for job in together}) == 1:
                    outcomes += self._run_together(sorted(together, key=_by_chat))
                    batch = [job for job in batch if job.batch is None]
                outcomes += [self._run_alone(job) for job in batch]
                close_old_connections()
            except Exception as exc:  # Never let the thread die: its chats would hang.
                logger.exception("writer %s failed a batch", self.name)
                answered = {id(job) for job, _, _ in outcomes}
                outcomes += [(job, None, exc) for job in batch if id(job) not in answered]
        try:
            loop.call_soon_threadsafe(_hand_back, publishes, outcomes)
        except RuntimeError:  # The loop is closed (its process is stopping): nobody waits.
            logger.debug("event loop closed; %s results dropped", len(outcomes))

    def _run_together(self, batch: list[_Job]) -> list[_Outcome]:
        run_batch = batch[0].batch
        assert run_batch is not None
        try:
            with transaction.atomic():
                results = run_batch([job.kwargs for job in batch])
        except Exception:
            logger.info("a batch of %s sends failed; retrying each alone", len(batch))
            return [self._run_alone(job) for job in batch]
        return [
            (job, None, result) if isinstance(result, BaseException) else (job, result, None)
            for job, result in zip(batch, results, strict=True)
        ]

    def _run_alone(self, job: _Job) -> _Outcome:
        try:
            return (job, job.func(**job.kwargs), None)
        except Exception as exc:
            return (job, None, exc)


def _by_chat(job: _Job) -> int:
    return job.chat_id


def _hand_back(publishes: list[tuple[str, dict[str, Any]]], outcomes: list[_Outcome]) -> None:
    """On the event loop: announce what was committed, in order, then answer the senders."""
    announced = events.publish_all(publishes)
    if metrics.ON:
        _observe_sends(outcomes, announced)
    for job, value, exc in outcomes:
        if job.result.done():
            continue  # The sender stopped waiting (its socket closed).
        if exc is not None:
            job.result.set_exception(exc)
        else:
            job.result.set_result(value)


def _observe_sends(outcomes: list[_Outcome], announced: list[asyncio.Future[Any]]) -> None:
    """Metrics: each committed send's time to its commit now, and to its announcement in
    Redis once the batch's publishes are done."""
    sent = [job.submitted_at for job, _, exc in outcomes if job.batch is not None and exc is None]
    if not sent:
        return
    now = time.perf_counter()
    for started in sent:
        metrics.COMMIT_STAGE.observe(now - started)

    def fanned_out(_: Any) -> None:
        done = time.perf_counter()
        for started in sent:
            metrics.FANOUT_STAGE.observe(done - started)

    if announced:
        asyncio.gather(*announced, return_exceptions=True).add_done_callback(fanned_out)


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
    loop = asyncio.get_running_loop()
    job = _Job(
        chat_id=chat_id,
        func=func,
        kwargs=kwargs,
        loop=loop,
        batch=batch,
        result=loop.create_future(),
        submitted_at=time.perf_counter() if metrics.ON else 0.0,
    )
    _writers[chat_id % len(_writers)].submit(job)
    return await job.result
