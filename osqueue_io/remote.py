"""The async clients of a remote osqueue broker: ``RemoteQueue[T]`` and ``Worker``.

:class:`RemoteQueue` is the typed client, with the same API as the embedded queue
(:class:`osqueue_io.client.JobQueue`): code written against one runs against the other
by changing the constructor::

    async with RemoteQueue("broker-host:9090", Task) as queue:
        job_id = await queue.push(Task("build-index"), queue="indexing", priority=5)
        job = await queue.claim(queues=["indexing"], wait=5)  # None: nothing within 5 s
        if job is not None:
            async with queue.processing(job):   # heartbeats; completes on success
                await build(job.item)

:class:`Worker` is its bytes-typed, job-id based form, kept for the programs written
against it (and for tools that move raw payloads): a fixed ``worker_id``,
``push(data)``, ``claim()`` giving a :class:`RemoteJob` with ``.data``,
``complete(job_id)``. Both speak the same RPCs (:mod:`osqueue_io.connection`).

Every call has a deadline (``timeout``; a waiting claim gets ``wait`` on top). Every
failure is a typed :class:`~osqueue_core.OsqueueError`, the one the broker's
``osqueue-error`` trailer names (see :mod:`osqueue_io.status`): ``LeaseLost`` /
``JobNotFound`` say stop working on that job, ``JobCancelled`` (from a heartbeat) says
the job was cancelled, ``InvalidArgument`` / ``PayloadTooLarge`` say fix the request,
and ``error.retryable`` errors (``BrokerNotRunning``, ``BrokerStopping``,
``BrokerReplaced``, ``StorageUnavailable``, ``Overloaded``, ``CallInterrupted``) say try
again later, or at ``error.new_address`` for a replaced broker. A broker that is down,
restarting, or silent past the deadline is ``BrokerNotRunning``; then, as after
``CallInterrupted``, a push may or may not have landed (at-least-once: give it a
``key`` and a retry creates nothing new). The connection is re-established by itself
once the broker is back.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Generic, TypeVar

import cattrs

from osqueue_core import (
    DEFAULT_QUEUE,
    DeadLetters,
    InvalidArgument,
    JobCancelled,
    JobInfo,
    NewJob,
    OsqueueError,
    check_id,
    clip_error_text,
)
from osqueue_core.limits import check_wait
from osqueue_io.client import (
    ClaimedJob,
    QueueInfo,
    check_batch_jobs,
    default_worker_id,
    item_keys,
    item_results,
)
from osqueue_io.connection import (
    DEFAULT_LEASE_TIMEOUT,
    BrokerConnection,
    QueueStats,
    RemoteJob,
    parse_address,
)
from osqueue_io.group.connection import GroupConnection
from osqueue_io.keepalive import Lease, default_interval, keep_alive, process_job
from osqueue_io.payload import PayloadCodec, PayloadDecodeError
from osqueue_io.resource import AsyncResource
from osqueue_io.storage import ObjectStore, StorageConfigError, open_store

__all__ = [
    "DEFAULT_LEASE_TIMEOUT",
    "QueueStats",
    "RemoteJob",
    "RemoteQueue",
    "Worker",
    "default_worker_id",
    "parse_address",
]

T = TypeVar("T")

log = logging.getLogger("osqueue.remote")


class _Discovery:
    """The storage a client finds its broker through: opened here from a URL (and
    closed with the client), or a store the caller opened (and closes)."""

    def __init__(self, storage: str | ObjectStore | None) -> None:
        self._owned = isinstance(storage, str)
        try:
            self.store = open_store(storage) if isinstance(storage, str) else storage
        except StorageConfigError as error:
            raise InvalidArgument(f"storage: {error}") from None

    async def aclose(self) -> None:
        if self._owned and self.store is not None:
            await self.store.aclose()


#: What the clients call through: one broker (and its standbys), or a group's owners.
Connection = BrokerConnection | GroupConnection


def _connection(
    address: str | Sequence[str] | None,
    owner: str,
    store: ObjectStore | None,
    group: Sequence[str] | None,
    *,
    timeout: float,
    state_key: str,
    failover_timeout: float,
    tls_ca: str | os.PathLike[str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    token: str | None = None,
) -> Connection:
    """A connection to the broker at ``address`` (or found in ``store``), or, with a
    ``group``, to the owners of the group's queues found in ``store``."""
    if group is None:
        return BrokerConnection(
            address,
            timeout=timeout,
            owner=owner,
            store=store,
            state_key=state_key,
            failover_timeout=failover_timeout,
            tls_ca=tls_ca,
            ssl_context=ssl_context,
            token=token,
        )
    if store is None or address is not None:
        raise InvalidArgument(
            "a group's clients find each queue's owner in the bucket: give storage (the "
            "group's --data URL) and no address"
        )
    return GroupConnection(
        group,
        store=store,
        timeout=timeout,
        owner=owner,
        failover_timeout=failover_timeout,
        tls_ca=tls_ca,
        ssl_context=ssl_context,
        token=token,
    )


def _checked_options(worker_id: str | None, heartbeat_interval: float | None) -> str:
    if heartbeat_interval is not None and not heartbeat_interval > 0:
        raise InvalidArgument("heartbeat_interval must be positive")
    return default_worker_id() if worker_id is None else check_id("worker_id", worker_id)


def _keep_alive(
    connection: Connection,
    job_id: str,
    worker_id: str,
    *,
    lease_timeout: float,
    expires_at: float | None,
    interval: float | None,
) -> AbstractAsyncContextManager[Lease]:
    """:func:`osqueue_io.keepalive.keep_alive` over ``connection``: a heartbeat that
    says the job was cancelled raises ``JobCancelled``, which ends the lease."""
    # A heartbeat stuck longer than half a lease is better retried.
    time_limit = min(connection.timeout, max(lease_timeout / 2, 0.05))

    async def heartbeat() -> None:
        renewed = await connection.heartbeat(job_id, worker_id, time_limit=time_limit)
        if renewed.cancel_requested:
            raise JobCancelled(job_id)

    return keep_alive(
        job_id,
        worker_id,
        heartbeat,
        interval=interval or default_interval(lease_timeout),
        lease_timeout=lease_timeout,
        expires_at=expires_at,
    )


class Worker(AsyncResource):
    """A connection to the broker at ``address``, acting as worker ``worker_id``:
    the bytes-typed client (see the module docstring; :class:`RemoteQueue` is the typed
    one).

    ``timeout`` is every call's deadline in seconds. ``heartbeat_interval`` is how
    often :meth:`keep_alive` heartbeats (default: a third of the lease timeout). Use
    with ``async with``; one Worker may be shared by many tasks.

    ``address`` may also be several addresses (a broker and its standbys), and
    ``storage`` (a storage URL or an open store) lets the client find the owner in the
    bucket instead (``address`` then defaults to none); either way calls follow the
    owner across a failover for up to ``failover_timeout`` seconds
    (docs/high-availability.md, "What a client sees").

    ``tls_ca`` (the CA's PEM file) or ``ssl_context`` connect over TLS; ``token`` is
    sent with every call to a broker that requires one (docs/security.md); with a
    ``group``, to every member alike.

    Requests are checked against the broker's limits (``osqueue_core.limits``) before
    anything is sent: a ``worker_id`` or job id longer than ``MAX_ID_LENGTH``, or a
    claim ``wait`` over ``MAX_CLAIM_WAIT``, raises ``InvalidArgument``; a ``fail``
    error text over ``MAX_ERROR_LENGTH`` is cut (its start and end kept).
    """

    def __init__(
        self,
        address: str | Sequence[str] | None = "127.0.0.1:9090",
        *,
        worker_id: str | None = None,
        heartbeat_interval: float | None = None,
        timeout: float = 10.0,
        storage: str | ObjectStore | None = None,
        state_key: str = "state.json",
        failover_timeout: float = 60.0,
        tls_ca: str | os.PathLike[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        token: str | None = None,
        group: Sequence[str] | None = None,
    ) -> None:
        self._found = _Discovery(storage)
        self.connection = _connection(
            None if storage is not None and address == "127.0.0.1:9090" else address,
            "Worker",
            self._found.store,
            group,
            timeout=timeout,
            state_key=state_key,
            failover_timeout=failover_timeout,
            tls_ca=tls_ca,
            ssl_context=ssl_context,
            token=token,
        )
        self.address = self.connection.address
        self.host, self.port = self.connection.host, self.connection.port
        self.worker_id = _checked_options(worker_id, heartbeat_interval)
        self.heartbeat_interval = heartbeat_interval
        self.timeout = timeout

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Prepare the connection (made on the first call, remade after a failure)."""
        self.connection.open()

    async def aclose(self) -> None:
        self.connection.close()
        await self._found.aclose()

    # -- publishing ------------------------------------------------------------------

    async def push(
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
        """Add a job; returns its id once the broker has stored it. The options are
        :class:`RemoteQueue.push`'s; with a ``key`` that matches a job pushed before,
        that job's id (nothing is created)."""
        job = NewJob(data, queue, priority, delay, run_at, key, max_attempts)
        return (await self.connection.push(job)).job_id

    async def push_batch(self, data: Sequence[bytes | NewJob]) -> list[str]:
        """Add several jobs in one storage write; returns their ids, in order. Each is
        a payload (pushed with the defaults) or an ``osqueue_core.NewJob`` with its
        options. On an error none is acknowledged (but some may have been stored:
        at-least-once)."""
        return list((await self.connection.push_batch(data)).job_ids)

    # -- consuming -------------------------------------------------------------------

    async def claim(
        self, *, wait: float = 0, queues: Sequence[str] = (DEFAULT_QUEUE,)
    ) -> RemoteJob | None:
        """Take the best ready job of ``queues`` (highest priority, then oldest),
        waiting up to ``wait`` seconds for one. Returns None when none came. Long-poll
        in a loop for longer waits."""
        jobs = await self.connection.claim(self.worker_id, queues, wait, None)
        return jobs[0] if jobs else None

    async def claim_many(
        self, count: int, *, wait: float = 0, queues: Sequence[str] = (DEFAULT_QUEUE,)
    ) -> list[RemoteJob]:
        """Take up to ``count`` ready jobs in one call, best first (empty when none
        came within ``wait``)."""
        return await self.connection.claim(self.worker_id, queues, wait, count)

    async def heartbeat(self, job_id: str) -> float:
        """Renew the lease on ``job_id``; returns how many seconds it now lasts.
        Raises ``LeaseLost`` or ``JobNotFound`` if this worker no longer holds it, and
        ``JobCancelled`` if it was cancelled (the lease was renewed: stop working on
        it, then fail or release it)."""
        renewed = await self.connection.heartbeat(job_id, self.worker_id)
        if renewed.cancel_requested:
            raise JobCancelled(job_id)
        return renewed.lease_timeout

    async def complete(self, job_id: str, result: bytes | None = None) -> None:
        """Mark ``job_id`` done: it leaves the queue and is archived, with ``result``
        (at most the broker's ``max_result_bytes``) in its archive record."""
        await self.connection.complete(job_id, self.worker_id, result)

    async def fail(self, job_id: str, error: str = "", requeue: bool = True) -> bool:
        """Give up on ``job_id``: retry it after its queue's backoff (default) or make
        it a dead letter, keeping ``error`` with it (cut to ``MAX_ERROR_LENGTH``
        characters). Returns True when the job is dead (not requeued, out of
        attempts, or cancelled)."""
        failed = await self.connection.fail(job_id, self.worker_id, clip_error_text(error), requeue)
        return failed.dead

    async def release(self, job_id: str) -> None:
        """Hand ``job_id`` back unstarted: it returns to its place in the queue and
        this claim does not count as an attempt."""
        await self.connection.release(job_id, self.worker_id)

    # -- operating -------------------------------------------------------------------

    async def cancel(self, job_id: str) -> bool:
        """Cancel a job: True when it was cancelled at once (it was not claimed);
        False when its worker learns it at its next heartbeat."""
        return (await self.connection.cancel(job_id)).at_once

    async def get(self, job_id: str) -> JobInfo:
        """Everything the broker knows about a job in the state. Raises ``JobNotFound``."""
        return await self.connection.get(job_id)

    async def dead_letters(
        self, *, queue: str | None = None, limit: int = 100, after: str | None = None
    ) -> DeadLetters:
        """A page of dead letters (of ``queue``, or all), oldest death first; ask again
        with ``after`` set to the last id while ``more`` is true."""
        return await self.connection.list_dead(queue, limit, after)

    async def redrive(self, job_ids: Sequence[str] = (), *, queue: str | None = None) -> list[str]:
        """Dead letters back to ready with fresh attempts: ``job_ids``, or every one of
        ``queue``. All or nothing (``JobNotDead``). Returns the ids redriven."""
        return await self.connection.redrive(job_ids, queue)

    async def purge(self, job_ids: Sequence[str] = (), *, queue: str | None = None) -> list[str]:
        """Dead letters out of the state, into the archive (status ``dead``). All or
        nothing, like :meth:`redrive`. Returns the ids purged."""
        return await self.connection.purge(job_ids, queue)

    async def stats(self) -> QueueStats:
        return await self.connection.stats()

    @asynccontextmanager
    async def keep_alive(self, job: RemoteJob) -> AsyncIterator[Lease]:
        """Heartbeat ``job`` in the background while the block runs.

        If the lease is lost (the broker says so, or no heartbeat got through before
        it ran out), the block is cancelled and ``LeaseLost`` is raised here; if the
        job was cancelled, ``JobCancelled``. Completing or failing the job is left to
        the caller (see :meth:`processing`).
        """
        async with _keep_alive(
            self.connection,
            job.id,
            self.worker_id,
            lease_timeout=job.lease_timeout,
            expires_at=job.claimed_at + job.lease_timeout if job.claimed_at else None,
            interval=self.heartbeat_interval,
        ) as lease:
            yield lease

    def processing(
        self, job: RemoteJob, *, requeue_on_error: bool = True
    ) -> AbstractAsyncContextManager[Lease]:
        """Process ``job`` safely: heartbeat while the block runs, ``complete`` it when
        the block succeeds, ``fail`` it (requeue by default) when the block raises.

        If the lease is lost the block is cancelled and ``LeaseLost`` is raised; the job
        is then neither completed nor failed here (another worker may hold it). If the
        job is cancelled, the block is cancelled, the job failed without retry (it ends
        cancelled) and ``JobCancelled`` raised.
        """
        return process_job(
            self.keep_alive(job),
            lambda: self.complete(job.id),
            lambda error: self.fail(job.id, error, requeue=requeue_on_error),
            cancel=lambda: self.fail(job.id, "cancelled", requeue=False),
        )


class RemoteQueue(AsyncResource, Generic[T]):
    """The queue served by the broker at ``address``, whose items are of
    ``item_type``: :class:`osqueue_io.client.JobQueue` over gRPC.

    Items are encoded as the embedded queue encodes them
    (:class:`~osqueue_io.payload.PayloadCodec`, with ``converter``), so both can share
    a queue. ``worker_id`` is recorded as the holder of every job this client claims
    (default: ``host:pid:random``); ``heartbeat_interval`` is how often
    :meth:`keep_alive` heartbeats (default: a third of the lease); ``timeout`` is every
    call's deadline. Use with ``async with``; one RemoteQueue may be shared by many
    tasks. ``address`` may be several addresses, or None with ``storage`` (a storage
    URL or an open store) to find the owner in the bucket; calls then follow the owner
    across a failover for up to ``failover_timeout`` seconds
    (docs/high-availability.md). A claimed payload that does not decode into ``T`` is
    dead-lettered and the claim moves on to the next job, as in the embedded queue.
    ``tls_ca`` (the CA's PEM file) or ``ssl_context`` connect over TLS; ``token`` is
    sent with every call to a broker that requires one (docs/security.md); with a
    ``group``, to every member alike.
    """

    def __init__(
        self,
        address: str | Sequence[str] | None,
        item_type: type[T],
        *,
        worker_id: str | None = None,
        heartbeat_interval: float | None = None,
        timeout: float = 10.0,
        converter: cattrs.Converter | None = None,
        storage: str | ObjectStore | None = None,
        state_key: str = "state.json",
        failover_timeout: float = 60.0,
        tls_ca: str | os.PathLike[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        token: str | None = None,
        group: Sequence[str] | None = None,
    ) -> None:
        self._found = _Discovery(storage)
        self.connection = _connection(
            address,
            "RemoteQueue",
            self._found.store,
            group,
            timeout=timeout,
            state_key=state_key,
            failover_timeout=failover_timeout,
            tls_ca=tls_ca,
            ssl_context=ssl_context,
            token=token,
        )
        self.address = self.connection.address
        self.codec = PayloadCodec(item_type, converter)
        self._worker_id = _checked_options(worker_id, heartbeat_interval)
        self.heartbeat_interval = heartbeat_interval
        self.timeout = timeout

    @property
    def worker_id(self) -> str:
        """Who claims: recorded as the holder of every job this client claims."""
        return self._worker_id

    async def open(self) -> None:
        """Prepare the connection (made on the first call, remade after a failure)."""
        self.connection.open()

    async def aclose(self) -> None:
        self.connection.close()
        await self._found.aclose()

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
        """Add a job; its id once durable. ``priority``: higher first. ``delay``
        seconds or ``run_at`` UNIX time: not claimable before. ``key``: idempotent
        (the id of the job already pushed with it, if any). ``max_attempts``: this
        job's limit instead of its queue's."""
        payload = self.codec.encode(item)
        job = NewJob(payload, queue, priority, delay, run_at, key, max_attempts)
        return (await self.connection.push(job)).job_id

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
        """Add ``items`` in one write (all or none), with the same options; ``keys``
        gives each item its own key (same length as ``items``)."""
        keys = item_keys(keys, len(items))
        jobs = [
            NewJob(self.codec.encode(item), queue, priority, delay, run_at, key, max_attempts)
            for item, key in zip(items, keys, strict=True)
        ]
        return list((await self.connection.push_batch(jobs)).job_ids)

    # -- consuming -------------------------------------------------------------------

    async def claim(
        self, *, queues: Sequence[str] = (DEFAULT_QUEUE,), wait: float = 0.0
    ) -> ClaimedJob[T] | None:
        """The best due job of ``queues`` (priority, then FIFO), waiting up to
        ``wait`` seconds for one; None when none came."""
        jobs = await self._claim(queues, wait, None)
        return jobs[0] if jobs else None

    async def claim_many(
        self, count: int, *, queues: Sequence[str] = (DEFAULT_QUEUE,), wait: float = 0.0
    ) -> list[ClaimedJob[T]]:
        """Up to ``count`` jobs in one call (empty when none came within ``wait``)."""
        return await self._claim(queues, wait, count)

    async def _claim(
        self, queues: Sequence[str], wait: float, count: int | None
    ) -> list[ClaimedJob[T]]:
        wait = check_wait(wait)
        give_up_at = time.monotonic() + wait
        while True:
            remaining = max(0.0, give_up_at - time.monotonic())
            claimed = await self.connection.claim(self.worker_id, queues, remaining, count)
            jobs: list[ClaimedJob[T]] = []
            for remote in claimed:
                try:
                    item = self.codec.decode(remote.data)
                except PayloadDecodeError as error:
                    await self._dead_letter(remote.id, error)
                    continue
                jobs.append(self._claimed(remote, item))
            if jobs or not claimed:
                return jobs
            # Every job granted was undecodable (and is now dead): claim again, for
            # what is left of the wait.
            if wait and time.monotonic() >= give_up_at:
                return []

    def _claimed(self, remote: RemoteJob, item: T) -> ClaimedJob[T]:
        return ClaimedJob(
            id=remote.id,
            item=item,
            worker_id=self.worker_id,
            attempts=remote.attempts,
            lease_timeout=remote.lease_timeout,
            expires_at=remote.claimed_at + remote.lease_timeout,
            queue=remote.queue,
            priority=remote.priority,
            max_attempts=remote.max_attempts,
            payload=remote.data,
        )

    async def _dead_letter(self, job_id: str, error: PayloadDecodeError) -> None:
        log.error("dead-lettering job %s: %s", job_id, error)
        text = clip_error_text(str(error))
        await self.connection.fail(job_id, self.worker_id, text, requeue=False)

    async def heartbeat(self, job: ClaimedJob[T]) -> float:
        """Renew the lease; the seconds it now lasts. Raises ``LeaseLost``, or
        ``JobCancelled`` when the job was cancelled (stop, then fail or release it)."""
        renewed = await self.connection.heartbeat(job.id, job.worker_id)
        if renewed.cancel_requested:
            raise JobCancelled(job.id)
        return renewed.lease_timeout

    async def complete(self, job: ClaimedJob[T], result: bytes | None = None) -> None:
        """Done: the job leaves the queue and is archived with ``result``."""
        await self.connection.complete(job.id, job.worker_id, result)

    async def complete_many(
        self, jobs: Sequence[ClaimedJob[T]], results: Sequence[bytes | None] | None = None
    ) -> list[OsqueueError | None]:
        """Complete ``jobs`` in one CompleteBatch call (see ``JobQueue.complete_many``):
        None for each job durably completed, else its error."""
        results = item_results(results, len(jobs))
        check_batch_jobs([job.id for job in jobs])  # the broker checks its size limit
        if not jobs:
            return []
        items = [(job.id, job.worker_id, result) for job, result in zip(jobs, results, strict=True)]
        return await self.connection.complete_batch(items)

    async def fail(self, job: ClaimedJob[T], error: str = "", *, retry: bool = True) -> bool:
        """Give up on this attempt: retried after its queue's backoff, or dead (out of
        attempts, or ``retry=False``). True when dead (or cancelled). ``error`` is
        kept with the job, cut to ``MAX_ERROR_LENGTH`` characters."""
        failed = await self.connection.fail(job.id, job.worker_id, clip_error_text(error), retry)
        return failed.dead

    async def release(self, job: ClaimedJob[T]) -> None:
        """Hand the job back unstarted; the claim does not count as an attempt."""
        await self.connection.release(job.id, job.worker_id)

    # -- operating -------------------------------------------------------------------

    async def cancel(self, job_id: str) -> bool:
        """Cancel a job: True when it was cancelled at once (not claimed), False when
        its worker will learn it at its next heartbeat."""
        return (await self.connection.cancel(job_id)).at_once

    async def get(self, job_id: str) -> JobInfo:
        """Everything known about a job in the state. Raises ``JobNotFound``."""
        return await self.connection.get(job_id)

    async def dead_letters(
        self, *, queue: str | None = None, limit: int = 100, after: str | None = None
    ) -> list[JobInfo]:
        """Dead jobs (of ``queue``, or all), oldest death first, at most ``limit``,
        after the job ``after`` (paging)."""
        return list((await self.connection.list_dead(queue, limit, after)).jobs)

    async def redrive(self, job_ids: Sequence[str] = (), *, queue: str | None = None) -> list[str]:
        """Dead letters back to ready with fresh attempts: ``job_ids``, or all of
        ``queue``. All or nothing (``JobNotDead``). Returns the ids redriven."""
        return await self.connection.redrive(job_ids, queue)

    async def purge(self, job_ids: Sequence[str] = (), *, queue: str | None = None) -> list[str]:
        """Dead letters out of the state, into the archive. Returns the ids purged."""
        return await self.connection.purge(job_ids, queue)

    async def queue_stats(self) -> list[QueueInfo]:
        """Every queue with jobs, by name."""
        return list((await self.connection.stats()).queues)

    async def stats(self) -> QueueStats:
        """The broker's whole report: totals, per queue, and who owns the state."""
        return await self.connection.stats()

    def keep_alive(self, job: ClaimedJob[T]) -> AbstractAsyncContextManager[Lease]:
        """Heartbeat in the background while the block runs; cancel the block and raise
        ``LeaseLost`` (or ``JobCancelled``) if the job is lost (or cancelled)."""
        return _keep_alive(
            self.connection,
            job.id,
            job.worker_id,
            lease_timeout=job.lease_timeout,
            expires_at=job.expires_at,
            interval=self.heartbeat_interval,
        )

    def processing(
        self, job: ClaimedJob[T], *, retry_on_error: bool = True
    ) -> AbstractAsyncContextManager[Lease]:
        """``keep_alive``, then complete on success, fail on an exception (with its
        text), and on a cancel: fail without retry (the job ends cancelled) and raise
        ``JobCancelled``."""
        return process_job(
            self.keep_alive(job),
            lambda: self.complete(job),
            lambda error: self.fail(job, error, retry=retry_on_error),
            cancel=lambda: self.fail(job, "cancelled", retry=False),
        )


if TYPE_CHECKING:
    # mypy checks here that RemoteQueue satisfies the shared client protocol exactly.
    from osqueue_io.client import JobQueue

    def _is_a_job_queue(queue: RemoteQueue[T]) -> JobQueue[T]:
        return queue
