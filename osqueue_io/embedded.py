"""``EmbeddedQueue[T]``: broker, publishers and consumers in one process, typed and async.

::

    async with EmbeddedQueue("./queue-data", Task) as queue:
        job_id = await queue.push(Task(name="build-index"))
        job = await queue.claim("worker-1", wait=5)
        if job is not None:
            async with queue.processing(job):   # heartbeats; completes on success
                await build(job.item)

Delivery is at least once: a job whose worker stops heartbeating goes back to the
queue and may run again. A payload that no longer decodes into ``T`` is dead-lettered
(archived with status ``dead`` and the decode error) and ``claim`` moves on to the next
job, so it can never be claimed and reclaimed forever.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Generic, TypeVar

import attrs
import cattrs

from osqueue_core import (
    BrokerConfig,
    BrokerStats,
    Claim,
    Claimed,
    Complete,
    Fail,
    Failed,
    Heartbeat,
    LeaseExtended,
    Push,
    PushBatch,
    Pushed,
    PushedBatch,
    clip_error_text,
)
from osqueue_io.keepalive import Lease, default_interval, keep_alive, process_job
from osqueue_io.payload import PayloadCodec, PayloadDecodeError
from osqueue_io.resource import AsyncResource
from osqueue_io.runtime import BrokerRuntime
from osqueue_io.storage import ObjectStore, open_store

T = TypeVar("T")

log = logging.getLogger("osqueue.embedded")


@attrs.frozen
class ClaimedJob(Generic[T]):
    """A job held by ``worker_id``: process ``item``, then complete or fail it."""

    id: str
    item: T
    worker_id: str
    attempts: int
    #: When the lease ends without a heartbeat, on the runtime's clock (``runtime.now()``,
    #: ``time.monotonic()`` by default).
    lease_deadline: float
    payload: bytes = attrs.field(repr=False)


class EmbeddedQueue(AsyncResource, Generic[T]):
    """A job queue on ``storage`` (a URL such as ``memory://``, ``./dir``, ``s3://b/p``,
    or an :class:`~osqueue_io.storage.ObjectStore`) whose items are of ``item_type``.

    Use it with ``async with``; leaving the block finishes accepted requests and
    releases the state object for the next broker. ``storage_options`` go to
    :func:`~osqueue_io.storage.open_store` when ``storage`` is a URL; the timeouts and
    ``max_pending_requests`` to :class:`~osqueue_io.runtime.BrokerRuntime`.
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
    ) -> None:
        self.config = config or BrokerConfig()
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

    # -- publishing ------------------------------------------------------------------

    async def push(self, item: T) -> str:
        """Add ``item`` to the back of the queue; returns the job id once durable."""
        payload = self.codec.encode(item)
        runtime = self.runtime
        result = await runtime.request(Push(runtime.new_request_id(), payload))
        assert isinstance(result, Pushed)
        return result.job_id

    async def push_many(self, items: Sequence[T]) -> list[str]:
        """Add ``items`` in order, all in one write (all or none); returns their ids."""
        payloads = tuple(self.codec.encode(item) for item in items)
        runtime = self.runtime
        result = await runtime.request(PushBatch(runtime.new_request_id(), payloads))
        assert isinstance(result, PushedBatch)
        return list(result.job_ids)

    # -- consuming -------------------------------------------------------------------

    async def claim(self, worker_id: str, *, wait: float = 0.0) -> ClaimedJob[T] | None:
        """Take the oldest ready job for ``worker_id``, waiting up to ``wait`` seconds
        for one to arrive. Returns None when none came."""
        give_up_at = time.monotonic() + wait
        runtime = self.runtime
        while True:
            remaining = max(0.0, give_up_at - time.monotonic()) if wait else 0.0
            result = await runtime.request(Claim(runtime.new_request_id(), worker_id, remaining))
            if not isinstance(result, Claimed):
                return None
            try:
                item = self.codec.decode(result.payload)
            except PayloadDecodeError as error:
                await self._dead_letter(result.job_id, worker_id, error)
                if wait and time.monotonic() >= give_up_at:
                    return None
                continue
            return ClaimedJob(
                result.job_id,
                item,
                worker_id,
                result.attempts,
                result.lease_deadline,
                result.payload,
            )

    async def _dead_letter(self, job_id: str, worker_id: str, error: PayloadDecodeError) -> None:
        log.error("dead-lettering job %s: %s", job_id, error)
        runtime = self.runtime
        text = clip_error_text(str(error))
        await runtime.request(Fail(runtime.new_request_id(), job_id, worker_id, text, False))

    async def heartbeat(self, job: ClaimedJob[T]) -> float:
        """Extend the lease on ``job``; returns the new deadline (on the runtime's clock,
        ``runtime.now()``). Raises ``LeaseLost``."""
        runtime = self.runtime
        result = await runtime.request(Heartbeat(runtime.new_request_id(), job.id, job.worker_id))
        assert isinstance(result, LeaseExtended)
        return result.lease_deadline

    async def complete(self, job: ClaimedJob[T]) -> None:
        """Mark ``job`` done; it leaves the queue and is archived. Raises ``LeaseLost``."""
        runtime = self.runtime
        await runtime.request(Complete(runtime.new_request_id(), job.id, job.worker_id))

    async def fail(self, job: ClaimedJob[T], error: str = "", *, requeue: bool = True) -> bool:
        """Give up on ``job``: requeue it (default) or dead-letter it. Returns True when
        the job is dead (not requeued, or out of attempts). ``error`` is kept with the
        job, cut to ``MAX_ERROR_LENGTH`` characters."""
        runtime = self.runtime
        result = await runtime.request(
            Fail(runtime.new_request_id(), job.id, job.worker_id, clip_error_text(error), requeue)
        )
        assert isinstance(result, Failed)
        return result.dead

    @asynccontextmanager
    async def keep_alive(self, job: ClaimedJob[T]) -> AsyncIterator[Lease]:
        """Heartbeat ``job`` in the background while the block runs.

        If the lease is lost, the block is cancelled and ``LeaseLost`` is raised here.
        Completing or failing the job is left to the caller (see :meth:`processing`).
        """
        # The lease runs from the claim; its deadline is on the runtime's clock.
        expires_at = time.monotonic() + (job.lease_deadline - self.runtime.now())
        async with keep_alive(
            job.id,
            job.worker_id,
            lambda: self.heartbeat(job),
            interval=self.heartbeat_interval,
            lease_timeout=self.config.heartbeat_timeout,
            expires_at=expires_at,
        ) as lease:
            yield lease

    def processing(
        self, job: ClaimedJob[T], *, requeue_on_error: bool = True
    ) -> AbstractAsyncContextManager[Lease]:
        """Process ``job`` safely: heartbeat while the block runs, ``complete`` it when
        the block succeeds, ``fail`` it (requeue by default) when the block raises.

        If the lease is lost the block is cancelled and ``LeaseLost`` is raised; the job
        is then neither completed nor failed here (another worker may hold it).
        """
        return process_job(
            self.keep_alive(job),
            lambda: self.complete(job),
            lambda error: self.fail(job, error, requeue=requeue_on_error),
        )
