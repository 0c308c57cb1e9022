"""The blocking ``Worker``: the async one, driven through a portal.

::

    with Worker("broker-host:9090") as worker:
        worker.push(b"payload")
        job = worker.claim(wait=5)
        if job is not None:
            with worker.processing(job):
                handle(job.data)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from osqueue_core import DEFAULT_QUEUE, DeadLetters, JobInfo, NewJob
from osqueue_io.keepalive import Lease
from osqueue_io.remote import QueueStats, RemoteJob
from osqueue_io.remote import Worker as AsyncWorker
from osqueue_io.sync.portal import PortalShell


class Worker(PortalShell):
    """Blocking twin of :class:`osqueue_io.remote.Worker`; same arguments, same methods,
    same checks against the broker's limits (a ``worker_id`` at construction, job ids,
    claim waits, cut error texts) before anything is sent.

    Safe to call from several threads: every call is handed to the one event loop.
    """

    def __init__(
        self, address: str | Sequence[str] | None = "127.0.0.1:9090", **options: Any
    ) -> None:
        self.async_worker = AsyncWorker(address, **options)
        super().__init__(self.async_worker)

    @property
    def worker_id(self) -> str:
        return self.async_worker.worker_id

    def push(
        self,
        data: bytes,
        *,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        delay: float | None = None,
        run_at: float | None = None,
        key: str | None = None,
        max_attempts: int | None = None,
    ) -> str:
        return self.portal.call(
            lambda: self.async_worker.push(
                data,
                queue=queue,
                priority=priority,
                delay=delay,
                run_at=run_at,
                key=key,
                max_attempts=max_attempts,
            )
        )

    def push_batch(self, data: Sequence[bytes | NewJob]) -> list[str]:
        return self.portal.call(self.async_worker.push_batch, data)

    def claim(
        self, *, wait: float = 0, queues: Sequence[str] = (DEFAULT_QUEUE,)
    ) -> RemoteJob | None:
        return self.portal.call(lambda: self.async_worker.claim(wait=wait, queues=queues))

    def claim_many(
        self, count: int, *, wait: float = 0, queues: Sequence[str] = (DEFAULT_QUEUE,)
    ) -> list[RemoteJob]:
        return self.portal.call(
            lambda: self.async_worker.claim_many(count, wait=wait, queues=queues)
        )

    def heartbeat(self, job_id: str) -> float:
        return self.portal.call(self.async_worker.heartbeat, job_id)

    def complete(self, job_id: str, result: bytes | None = None) -> None:
        self.portal.call(self.async_worker.complete, job_id, result)

    def fail(self, job_id: str, error: str = "", requeue: bool = True) -> bool:
        return self.portal.call(self.async_worker.fail, job_id, error, requeue)

    def release(self, job_id: str) -> None:
        self.portal.call(self.async_worker.release, job_id)

    def cancel(self, job_id: str) -> bool:
        return self.portal.call(self.async_worker.cancel, job_id)

    def get(self, job_id: str) -> JobInfo:
        return self.portal.call(self.async_worker.get, job_id)

    def dead_letters(
        self, *, queue: str | None = None, limit: int = 100, after: str | None = None
    ) -> DeadLetters:
        return self.portal.call(
            lambda: self.async_worker.dead_letters(queue=queue, limit=limit, after=after)
        )

    def redrive(self, job_ids: Sequence[str] = (), *, queue: str | None = None) -> list[str]:
        return self.portal.call(lambda: self.async_worker.redrive(job_ids, queue=queue))

    def purge(self, job_ids: Sequence[str] = (), *, queue: str | None = None) -> list[str]:
        return self.portal.call(lambda: self.async_worker.purge(job_ids, queue=queue))

    def stats(self) -> QueueStats:
        return self.portal.call(self.async_worker.stats)

    def keep_alive(self, job: RemoteJob) -> AbstractContextManager[Lease]:
        """Heartbeat in the background while the block runs. A blocking block cannot be
        cancelled: check ``lease.lost`` (or ``lease.check()``) in long loops; on exit
        ``LeaseLost`` (or ``JobCancelled``) is raised if the lease was lost (or the job
        cancelled)."""
        return self.portal.wrap_async_context_manager(self.async_worker.keep_alive(job))

    @contextmanager
    def processing(self, job: RemoteJob, *, requeue_on_error: bool = True) -> Iterator[Lease]:
        """Like the async ``processing``: complete on success, fail on error, and on a
        cancel fail without retry and raise ``JobCancelled``."""
        manager = self.async_worker.processing(job, requeue_on_error=requeue_on_error)
        with self.portal.wrap_async_context_manager(manager) as lease:
            yield lease
