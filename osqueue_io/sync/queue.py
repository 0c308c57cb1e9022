"""What both blocking queues share: the ``JobQueue`` API without ``await``.

:class:`BlockingQueue` drives any async :class:`~osqueue_io.client.JobQueue` through a
portal; the blocking ``EmbeddedQueue`` and ``RemoteQueue`` are it plus a constructor.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

from osqueue_core import DEFAULT_QUEUE, JobInfo, OsqueueError
from osqueue_io.client import ClaimedJob, JobQueue, QueueInfo
from osqueue_io.keepalive import Lease
from osqueue_io.sync.portal import PortalShell

T = TypeVar("T")


class OpenableQueue(JobQueue[T], Protocol[T]):
    """A ``JobQueue`` opened and closed with ``async with``."""

    async def __aenter__(self) -> Any: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any: ...


Q = TypeVar("Q", bound=OpenableQueue[Any])


class BlockingQueue(PortalShell, Generic[T, Q]):
    """``async_queue``'s methods, blocking (``T`` its items, ``Q`` its type). Safe to call
    from several threads: every call is handed to the one event loop."""

    def __init__(self, async_queue: Q) -> None:
        self.async_queue = async_queue
        super().__init__(async_queue)

    @property
    def worker_id(self) -> str:
        return self.async_queue.worker_id

    def push(
        self,
        item: T,
        *,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        delay: float | None = None,
        run_at: float | None = None,
        key: str | None = None,
        max_attempts: int | None = None,
    ) -> str:
        return self.portal.call(
            lambda: self.async_queue.push(
                item,
                queue=queue,
                priority=priority,
                delay=delay,
                run_at=run_at,
                key=key,
                max_attempts=max_attempts,
            )
        )

    def push_many(
        self,
        items: Sequence[T],
        *,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        delay: float | None = None,
        run_at: float | None = None,
        keys: Sequence[str | None] | None = None,
        max_attempts: int | None = None,
    ) -> list[str]:
        return self.portal.call(
            lambda: self.async_queue.push_many(
                items,
                queue=queue,
                priority=priority,
                delay=delay,
                run_at=run_at,
                keys=keys,
                max_attempts=max_attempts,
            )
        )

    def claim(
        self, *, queues: Sequence[str] = (DEFAULT_QUEUE,), wait: float = 0.0
    ) -> ClaimedJob[T] | None:
        job: ClaimedJob[T] | None = self.portal.call(
            lambda: self.async_queue.claim(queues=queues, wait=wait)
        )
        return job

    def claim_many(
        self, count: int, *, queues: Sequence[str] = (DEFAULT_QUEUE,), wait: float = 0.0
    ) -> list[ClaimedJob[T]]:
        return self.portal.call(
            lambda: self.async_queue.claim_many(count, queues=queues, wait=wait)
        )

    def heartbeat(self, job: ClaimedJob[T]) -> float:
        lasts: float = self.portal.call(self.async_queue.heartbeat, job)
        return lasts

    def complete(self, job: ClaimedJob[T], result: bytes | None = None) -> None:
        self.portal.call(self.async_queue.complete, job, result)

    def complete_many(
        self, jobs: Sequence[ClaimedJob[T]], results: Sequence[bytes | None] | None = None
    ) -> list[OsqueueError | None]:
        return self.portal.call(self.async_queue.complete_many, jobs, results)

    def fail(self, job: ClaimedJob[T], error: str = "", *, retry: bool = True) -> bool:
        return self.portal.call(lambda: self.async_queue.fail(job, error, retry=retry))

    def release(self, job: ClaimedJob[T]) -> None:
        self.portal.call(self.async_queue.release, job)

    def cancel(self, job_id: str) -> bool:
        return self.portal.call(self.async_queue.cancel, job_id)

    def get(self, job_id: str) -> JobInfo:
        return self.portal.call(self.async_queue.get, job_id)

    def dead_letters(
        self, *, queue: str | None = None, limit: int = 100, after: str | None = None
    ) -> list[JobInfo]:
        return self.portal.call(
            lambda: self.async_queue.dead_letters(queue=queue, limit=limit, after=after)
        )

    def redrive(self, job_ids: Sequence[str] = (), *, queue: str | None = None) -> list[str]:
        return self.portal.call(lambda: self.async_queue.redrive(job_ids, queue=queue))

    def purge(self, job_ids: Sequence[str] = (), *, queue: str | None = None) -> list[str]:
        return self.portal.call(lambda: self.async_queue.purge(job_ids, queue=queue))

    def queue_stats(self) -> list[QueueInfo]:
        return self.portal.call(self.async_queue.queue_stats)

    def keep_alive(self, job: ClaimedJob[T]) -> AbstractContextManager[Lease]:
        """Heartbeat in the background while the block runs. A blocking block cannot be
        cancelled: check ``lease.lost`` (or ``lease.check()``) in long loops; on exit
        ``LeaseLost`` (or ``JobCancelled``) is raised if the lease was lost (or the job
        cancelled)."""
        return self.portal.wrap_async_context_manager(self.async_queue.keep_alive(job))

    @contextmanager
    def processing(self, job: ClaimedJob[T], *, retry_on_error: bool = True) -> Iterator[Lease]:
        """Like the async ``processing``: complete on success, fail on error, and on a
        cancel fail without retry and raise ``JobCancelled``."""
        manager = self.async_queue.processing(job, retry_on_error=retry_on_error)
        with self.portal.wrap_async_context_manager(manager) as lease:
            yield lease
