"""``EmbeddedQueue[T]``: broker, publishers and consumers in one process, typed and async.

::

    async with EmbeddedQueue("./queue-data", Task) as queue:
        job_id = await queue.push(Task(name="build-index"), priority=5)
        job = await queue.claim(wait=5)
        if job is not None:
            async with queue.processing(job):   # heartbeats; completes on success
                await build(job.item)

It satisfies :class:`osqueue_io.client.JobQueue`, like the remote client
:class:`osqueue_io.RemoteQueue`: the same code runs against either.

Delivery is at least once: a job whose worker stops heartbeating goes back to the
queue and may run again. A payload that no longer decodes into ``T`` is dead-lettered
(kept as a dead letter with the decode error) and ``claim`` moves on to the next job,
so it can never be claimed and reclaimed forever.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Generic, TypeVar

import cattrs

from osqueue_core import (
    DEFAULT_QUEUE,
    BrokerConfig,
    BrokerStats,
    Cancel,
    Cancelled,
    Claim,
    Claimed,
    ClaimedBatch,
    Command,
    Complete,
    DeadLetters,
    Fail,
    Failed,
    GetJob,
    Heartbeat,
    JobCancelled,
    JobInfo,
    LeaseExtended,
    ListDead,
    NewJob,
    OsqueueError,
    Purge,
    Purged,
    Push,
    PushBatch,
    Pushed,
    PushedBatch,
    Redrive,
    Redriven,
    Release,
    Result,
    check_id,
    clip_error_text,
)
from osqueue_io.client import (
    ClaimedJob,
    QueueInfo,
    check_batch_jobs,
    claim_queues,
    default_worker_id,
    item_keys,
    item_results,
)
from osqueue_io.keepalive import Lease, default_interval, keep_alive, process_job
from osqueue_io.payload import PayloadCodec, PayloadDecodeError
from osqueue_io.resource import AsyncResource
from osqueue_io.runtime import BrokerRuntime
from osqueue_io.storage import ObjectStore, open_store

__all__ = ["ClaimedJob", "EmbeddedQueue"]

T = TypeVar("T")

log = logging.getLogger("osqueue.embedded")


class EmbeddedQueue(AsyncResource, Generic[T]):
    """A job queue on ``storage`` (a URL such as ``memory://``, ``./dir``, ``s3://b/p``,
    or an :class:`~osqueue_io.storage.ObjectStore`) whose items are of ``item_type``.

    Use it with ``async with``; leaving the block finishes accepted requests and
    releases the state object for the next broker. ``storage_options`` go to
    :func:`~osqueue_io.storage.open_store` when ``storage`` is a URL; the timeouts and
    ``max_pending_requests`` to :class:`~osqueue_io.runtime.BrokerRuntime`.
    ``worker_id`` names this queue's claims (default: ``host:pid:random``).
    """

    def __init__(
        self,
        storage: str | os.PathLike[str] | ObjectStore,
        item_type: type[T],
        *,
        config: BrokerConfig | None = None,
        identity: str | None = None,
        converter: cattrs.Converter | None = None,
        heartbeat_interval: float | None = None,
        storage_options: dict[str, object] | None = None,
        storage_timeout: float = 30.0,
        shutdown_timeout: float = 30.0,
        max_pending_requests: int | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.config = config or BrokerConfig()
        self._worker_id = (
            default_worker_id() if worker_id is None else check_id("worker_id", worker_id)
        )
        self.codec = PayloadCodec(item_type, converter)
        self.heartbeat_interval = heartbeat_interval or default_interval(
            self.config.heartbeat_timeout
        )
        self._storage = storage
        self._storage_options = storage_options or {}
        self._identity = identity
        self._storage_timeout = storage_timeout
        self._shutdown_timeout = shutdown_timeout
        self._max_pending_requests = max_pending_requests
        self._runtime: BrokerRuntime | None = None
        self._owns_store = False

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Open the storage and take over the queue (usually via ``async with``)."""
        if self._runtime is not None:
            raise RuntimeError("the queue is already open")
        if isinstance(self._storage, str | os.PathLike):
            store = open_store(os.fspath(self._storage), **self._storage_options)
            self._owns_store = True
        else:
            store = self._storage
        runtime = BrokerRuntime(
            store,
            self.config,
            identity=self._identity,
            storage_timeout=self._storage_timeout,
            shutdown_timeout=self._shutdown_timeout,
            max_pending_requests=self._max_pending_requests,
        )
        try:
            await runtime.open()
        except BaseException:
            if self._owns_store:
                await store.aclose()
            raise
        self._runtime = runtime

    async def aclose(self) -> None:
        """Finish accepted requests, release the queue, close storage we opened."""
        runtime, self._runtime = self._runtime, None
        if runtime is None:
            return
        try:
            await runtime.aclose()
        finally:
            if self._owns_store:
                await runtime.store.aclose()

    async def stop(self) -> None:
        """Stop the broker from any task: accepted requests get their replies, new ones
        ``BrokerStopping``, ownership is released. ``aclose`` (the end of the
        ``async with`` block) then ends the runtime."""
        await self.runtime.stop()

    @property
    def runtime(self) -> BrokerRuntime:
        if self._runtime is None:
            raise RuntimeError("the queue is not open: use `async with EmbeddedQueue(...)`")
        return self._runtime

    def stats(self) -> BrokerStats:
        return self.runtime.stats()

    @property
    def worker_id(self) -> str:
        return self._worker_id

    async def _request(self, command: Command) -> Result:
        return await self.runtime.request(command)

    def _id(self) -> int:
        return self.runtime.new_request_id()

    # -- publishing ------------------------------------------------------------------

    async def push(
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
        """Add ``item``; returns the job id once durable (see ``JobQueue.push``)."""
        payload = self.codec.encode(item)
        command = Push(self._id(), payload, queue, priority, delay, run_at, key, max_attempts)
        result = await self._request(command)
        assert isinstance(result, Pushed)
        return result.job_id

    async def push_many(
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
        """Add ``items`` in order, all in one write (all or none); returns their ids."""
        jobs = tuple(
            NewJob(self.codec.encode(item), queue, priority, delay, run_at, key, max_attempts)
            for item, key in zip(items, item_keys(keys, len(items)), strict=True)
        )
        result = await self._request(PushBatch(self._id(), jobs))
        assert isinstance(result, PushedBatch)
        return list(result.job_ids)

    # -- consuming -------------------------------------------------------------------

    async def claim(
        self,
        worker_id: str | None = None,
        *,
        queues: Sequence[str] = (DEFAULT_QUEUE,),
        wait: float = 0.0,
    ) -> ClaimedJob[T] | None:
        """Take the best due job of ``queues`` (priority, then FIFO), waiting up to
        ``wait`` seconds for one; None when none came. ``worker_id`` overrides the
        queue's own for this claim."""
        jobs = await self._claim(worker_id or self._worker_id, claim_queues(queues), 1, wait)
        return jobs[0] if jobs else None

    async def claim_many(
        self, count: int, *, queues: Sequence[str] = (DEFAULT_QUEUE,), wait: float = 0.0
    ) -> list[ClaimedJob[T]]:
        """Up to ``count`` due jobs in one request (empty when none came in ``wait``)."""
        return await self._claim(self._worker_id, claim_queues(queues), count, wait)

    async def _claim(
        self, worker_id: str, queues: tuple[str, ...], count: int, wait: float
    ) -> list[ClaimedJob[T]]:
        give_up_at = time.monotonic() + wait
        while True:
            remaining = max(0.0, give_up_at - time.monotonic()) if wait else 0.0
            result = await self._request(Claim(self._id(), worker_id, remaining, queues, count))
            if isinstance(result, Claimed):
                granted: tuple[Claimed, ...] = (result,)
            elif isinstance(result, ClaimedBatch):
                granted = result.jobs
            else:
                return []
            jobs = [job for claim in granted if (job := await self._decode(claim, worker_id))]
            # Every job granted was undecodable (now dead letters): try again, in time.
            if jobs or (wait and time.monotonic() >= give_up_at):
                return jobs

    async def _decode(self, claim: Claimed, worker_id: str) -> ClaimedJob[T] | None:
        try:
            item = self.codec.decode(claim.payload)
        except PayloadDecodeError as error:
            log.error("dead-lettering job %s: %s", claim.job_id, error)
            text = clip_error_text(str(error))
            await self._request(Fail(self._id(), claim.job_id, worker_id, text, False))
            return None
        runtime = self.runtime
        return ClaimedJob(
            id=claim.job_id,
            item=item,
            worker_id=worker_id,
            attempts=claim.attempts,
            lease_timeout=self.config.heartbeat_timeout,
            # The lease runs from the claim; its deadline is on the runtime's clock.
            expires_at=time.monotonic() + (claim.lease_deadline - runtime.now()),
            queue=claim.queue,
            priority=claim.priority,
            max_attempts=claim.max_attempts,
            payload=claim.payload,
        )

    async def heartbeat(self, job: ClaimedJob[T]) -> float:
        """Extend the lease on ``job``; returns the seconds it now lasts. Raises
        ``LeaseLost``, or ``JobCancelled`` if the job was cancelled."""
        result = await self._request(Heartbeat(self._id(), job.id, job.worker_id))
        assert isinstance(result, LeaseExtended)
        if result.cancel_requested:
            raise JobCancelled(job.id)
        return max(0.0, result.lease_deadline - self.runtime.now())

    async def complete(self, job: ClaimedJob[T], result: bytes | None = None) -> None:
        """Mark ``job`` done; it leaves the queue and is archived with ``result``.
        Raises ``LeaseLost``."""
        await self._request(Complete(self._id(), job.id, job.worker_id, result))

    async def complete_many(
        self, jobs: Sequence[ClaimedJob[T]], results: Sequence[bytes | None] | None = None
    ) -> list[OsqueueError | None]:
        """Complete ``jobs`` together (see ``JobQueue.complete_many``): None for each
        job durably completed, else its error."""
        outcomes = await self.runtime.request_many(self._completes(jobs, results))
        return [outcome if isinstance(outcome, OsqueueError) else None for outcome in outcomes]

    def _completes(
        self, jobs: Sequence[ClaimedJob[T]], results: Sequence[bytes | None] | None
    ) -> list[Command]:
        """The ``Complete`` of each job, after checking the batch as a whole."""
        results = item_results(results, len(jobs))
        check_batch_jobs([job.id for job in jobs], self.config.max_batch_ops)
        return [
            Complete(self._id(), job.id, job.worker_id, result)
            for job, result in zip(jobs, results, strict=True)
        ]

    async def fail(self, job: ClaimedJob[T], error: str = "", *, retry: bool = True) -> bool:
        """Give up on this attempt: retried after the backoff (default) or dead.
        Returns True when the job is dead (not retried, out of attempts, or
        cancelled). ``error`` is kept with the job, cut to ``MAX_ERROR_LENGTH``."""
        command = Fail(self._id(), job.id, job.worker_id, clip_error_text(error), retry)
        result = await self._request(command)
        assert isinstance(result, Failed)
        return result.dead

    async def release(self, job: ClaimedJob[T]) -> None:
        """Hand ``job`` back unstarted; the claim does not count as an attempt."""
        await self._request(Release(self._id(), job.id, job.worker_id))

    # -- managing --------------------------------------------------------------------

    async def cancel(self, job_id: str) -> bool:
        """Cancel a job: True when done at once, False when its worker will learn it
        at its next heartbeat."""
        result = await self._request(Cancel(self._id(), job_id))
        assert isinstance(result, Cancelled)
        return result.at_once

    async def get(self, job_id: str) -> JobInfo:
        """Everything known about a job in the state. Raises ``JobNotFound``."""
        result = await self._request(GetJob(self._id(), job_id))
        assert isinstance(result, JobInfo)
        return result

    async def dead_letters(
        self, *, queue: str | None = None, limit: int = 100, after: str | None = None
    ) -> list[JobInfo]:
        """Dead jobs, oldest death first (see ``JobQueue.dead_letters``)."""
        result = await self._request(ListDead(self._id(), queue, limit, after))
        assert isinstance(result, DeadLetters)
        return list(result.jobs)

    async def redrive(self, job_ids: Sequence[str] = (), *, queue: str | None = None) -> list[str]:
        """Dead letters back to ready with fresh attempts; all or nothing."""
        result = await self._request(Redrive(self._id(), tuple(job_ids), queue))
        assert isinstance(result, Redriven)
        return list(result.job_ids)

    async def purge(self, job_ids: Sequence[str] = (), *, queue: str | None = None) -> list[str]:
        """Dead letters out of the state, into the archive; all or nothing."""
        result = await self._request(Purge(self._id(), tuple(job_ids), queue))
        assert isinstance(result, Purged)
        return list(result.job_ids)

    async def queue_stats(self) -> list[QueueInfo]:
        """Every queue with jobs in the state, by name."""
        now = time.time()
        return [
            QueueInfo(
                c.queue,
                c.ready,
                c.delayed,
                c.claimed,
                c.dead,
                None if c.oldest_ready_since is None else max(0.0, now - c.oldest_ready_since),
            )
            for c in self.runtime.stats().queues
        ]

    # -- processing ------------------------------------------------------------------

    @asynccontextmanager
    async def keep_alive(self, job: ClaimedJob[T]) -> AsyncIterator[Lease]:
        """Heartbeat ``job`` in the background while the block runs.

        If the lease is lost, the block is cancelled and ``LeaseLost`` is raised here
        (``JobCancelled`` if the job was cancelled). Completing or failing the job is
        left to the caller (see :meth:`processing`).
        """
        async with keep_alive(
            job.id,
            job.worker_id,
            lambda: self.heartbeat(job),
            interval=self.heartbeat_interval,
            lease_timeout=self.config.heartbeat_timeout,
            expires_at=job.expires_at,
        ) as lease:
            yield lease

    def processing(
        self, job: ClaimedJob[T], *, retry_on_error: bool = True
    ) -> AbstractAsyncContextManager[Lease]:
        """Process ``job`` safely: heartbeat while the block runs, ``complete`` it when
        the block succeeds, ``fail`` it (retried by default) when the block raises.

        If the lease is lost the block is cancelled and ``LeaseLost`` is raised; the job
        is then neither completed nor failed here (another worker may hold it). If the
        job is cancelled the block is cancelled, the job failed without retry (it ends
        cancelled) and ``JobCancelled`` raised.
        """
        return process_job(
            self.keep_alive(job),
            lambda: self.complete(job),
            lambda error: self.fail(job, error, retry=retry_on_error),
            lambda: self.fail(job, "cancelled", retry=False),
        )
