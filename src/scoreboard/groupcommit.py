"""Group commit: one writer, one transaction and one fsync for every job that queued.

Callers ``submit`` a job and wait. The writer takes every job that queued while the
previous commit ran (up to ``max_batch``), runs them all in one store transaction,
commits, then answers them all. Throughput grows with load instead of being capped
by fsyncs per second, and no caller is answered before its job is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import structlog

from scoreboard.errors import (
    ScoreboardError,
    StatementFailed,
    StoreUnavailable,
    TransactionConflict,
)
from scoreboard.store.base import Store, Transaction

J = TypeVar("J")
R = TypeVar("R")
Work = Callable[[Transaction, Sequence[J]], Awaitable[list[R | ScoreboardError]]]
AfterCommit = Callable[[Sequence[R | ScoreboardError]], Awaitable[None]]

log = structlog.get_logger("scoreboard.groupcommit")
CONFLICT_ATTEMPTS = 3  # a batch the database gave up (a deadlock) runs at most this often


class GroupCommitter(Generic[J, R]):
    def __init__(
        self,
        store: Store,
        work: Work[J, R],
        after_commit: AfterCommit[R],
        observe_batch: Callable[[int], None] = lambda size: None,
        max_batch: int = 1024,
        max_queue: int = 10_000,
        alone: Callable[[J], bool] = lambda job: False,
    ) -> None:
        self._alone = alone  # jobs that run in a transaction of their own
        self._store = store
        self._work = work
        self._after_commit = after_commit
        self._observe_batch = observe_batch
        self._max_batch = max_batch
        self._max_queue = max_queue
        self._queue: asyncio.Queue[tuple[J, asyncio.Future[R]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        """Finish every queued job, then stop."""
        await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def submit(self, job: J) -> R:
        if self._task is None:
            raise StoreUnavailable("the writer is not running", "writer_stopped")
        if self._queue.qsize() >= self._max_queue:
            raise StoreUnavailable("too many updates are waiting; retry shortly", "queue_full")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((job, future))
        return await future

    def enqueue(self, job: J) -> None:
        """Submit without waiting: for records nobody waits on (security events).

        A failure is logged by the writer; past the queue bound the job is dropped.
        """
        if self._task is None or self._queue.qsize() >= self._max_queue:
            log.warning("job_dropped", reason="queue_full" if self._task else "writer_stopped")
            return
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume)
        self._queue.put_nowait((job, future))

    async def _run(self) -> None:
        held: tuple[J, asyncio.Future[R]] | None = None  # taken, but for the next batch
        while True:
            batch = [held if held is not None else await self._queue.get()]
            held = None
            while (not self._alone(batch[0][0]) and len(batch) < self._max_batch
                   and not self._queue.empty()):
                item = self._queue.get_nowait()
                if self._alone(item[0]):
                    held = item
                    break
                batch.append(item)
            try:
                await self._commit(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit(self, batch: list[tuple[J, asyncio.Future[R]]]) -> None:
        """Commit the batch; answer every caller. One update the database refuses fails
        alone: the batch is then committed one job at a time."""
        jobs = [job for job, _ in batch]
        try:
            results = await self._transact(jobs)
        except StatementFailed as exc:
            if len(batch) > 1:
                log.warning("batch_split", batch=len(batch), reason=exc.reason)
                for item in batch:
                    await self._commit([item])
                return
            self._fail(batch, exc)
            return
        except StoreUnavailable as exc:
            log.error("commit_failed", batch=len(batch), reason=exc.reason)
            self._fail(batch, exc)
            return
        except Exception as exc:  # a bug: fail the batch, keep the writer alive
            log.exception("commit_crashed", batch=len(batch))
            failure = StoreUnavailable()
            failure.__cause__ = exc
            self._fail(batch, failure)
            return
        self._observe_batch(len(batch))
        try:
            await self._after_commit(results)
        except Exception:
            # The batch is committed: its callers get their answers whatever happened to
            # the caches after it (the ranking is rebuilt from the store when it is lost).
            log.exception("after_commit_failed", batch=len(batch))
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # the caller went away; the job is committed all the same
                continue
            if isinstance(result, ScoreboardError):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _transact(self, jobs: list[J]) -> list[R | ScoreboardError]:
        """The jobs in one transaction, run again when the database gave it up for a
        conflict with another instance's (nothing of it was kept)."""
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                async with self._store.transaction() as tx:
                    return await self._work(tx, jobs)
            except TransactionConflict as exc:
                if attempt == CONFLICT_ATTEMPTS:
                    raise
                log.warning("commit_conflict", batch=len(jobs), attempt=attempt,
                            reason=exc.reason)
        raise AssertionError("unreachable")

    @staticmethod
    def _fail(batch: list[tuple[J, asyncio.Future[R]]], error: StoreUnavailable) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(error)


def _consume(future: asyncio.Future[Any]) -> None:
    # Nobody awaits an enqueued job: take its outcome so asyncio does not report it.
    if not future.cancelled():
        future.exception()
