"""The one client API: what the embedded queue and the remote client both offer.

:class:`JobQueue` is a :class:`typing.Protocol`. :class:`~osqueue_io.EmbeddedQueue`
(broker in this process) and :class:`~osqueue_io.RemoteQueue` (a broker over gRPC)
both satisfy it with the same method names, parameters and job handle
(:class:`ClaimedJob`), so code written against one runs against the other by changing
the constructor. Their blocking twins in :mod:`osqueue_io.sync` mirror it without
``await``. docs/lifecycle.md describes what each operation does to a job.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Generic, Protocol, TypeVar

import attrs

from osqueue_core import (
    DEFAULT_QUEUE,
    InvalidArgument,
    JobInfo,
    OsqueueError,
    PayloadTooLarge,
    quote,
)
from osqueue_io.keepalive import Lease

T = TypeVar("T")


def default_worker_id() -> str:
    """``host:pid:random``: unique per client, readable in the state object (a host
    name is at most 253 characters, so the id stays within ``MAX_ID_LENGTH``)."""
    return f"{socket.gethostname()[:200]}:{os.getpid()}:{secrets.token_hex(3)}"


def claim_queues(queues: Sequence[str]) -> tuple[str, ...]:
    """A claim's ``queues`` as a tuple, refusing one name given bare (a string is a
    sequence too: ``"emails"`` would claim from six one-letter queues)."""
    if isinstance(queues, str) or not isinstance(queues, Sequence):
        raise InvalidArgument("queues must be a list of queue names (not one name)")
    return tuple(queues)


def item_keys(keys: Sequence[str | None] | None, count: int) -> list[str | None]:
    """``push_many``'s ``keys``, one per item (None: no keys), refusing a list of the
    wrong length or one string given bare (it would be split into characters)."""
    if keys is None:
        return [None] * count
    if isinstance(keys, str) or len(keys) != count:
        raise InvalidArgument("keys must be a list with one key (or None) per item")
    return list(keys)


def item_results(results: Sequence[bytes | None] | None, count: int) -> list[bytes | None]:
    """``complete_many``'s ``results``, one per job (None: no results), refusing a list
    of the wrong length, one ``bytes`` given bare, or an entry that is not bytes."""
    if results is None:
        return [None] * count
    given: object = results  # (bytes is a sequence too, of ints)
    if isinstance(given, bytes | bytearray | str) or len(results) != count:
        raise InvalidArgument("results must be a list with one result (or None) per job")
    for result in results:
        if result is not None and not isinstance(result, bytes):
            raise InvalidArgument(f"a job result must be bytes, got {type(result).__name__}")
    return list(results)


def check_batch_jobs(job_ids: Sequence[str], limit: int | None = None) -> None:
    """Refuse a batch of jobs (``complete_many``) that names a job twice, or (with
    ``limit``) has more than ``limit`` jobs: the whole call, nothing done."""
    if limit is not None and len(job_ids) > limit:
        raise PayloadTooLarge(
            f"a batch of {len(job_ids)} jobs exceeds the broker's limit of {limit}: split it "
            "(nothing was done)"
        )
    seen: set[str] = set()
    for job_id in job_ids:
        if job_id in seen:
            raise InvalidArgument(
                f"job {quote(job_id)} appears twice in the batch (nothing was done)"
            )
        seen.add(job_id)


@attrs.frozen
class ClaimedJob(Generic[T]):
    """A job held by ``worker_id``: process ``item``, then complete, fail or release it."""

    id: str
    item: T
    worker_id: str
    #: Claims so far, this one included.
    attempts: int
    #: Seconds a lease lasts without a heartbeat.
    lease_timeout: float
    #: ``time.monotonic()`` by which the lease granted with the claim runs out (the
    #: keep-alive counts later leases from its own heartbeats).
    expires_at: float
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    #: The most attempts the job gets (None: unlimited or not reported).
    max_attempts: int | None = None
    payload: bytes = attrs.field(default=b"", repr=False)


@attrs.frozen
class QueueInfo:
    """One queue's jobs by where they are."""

    queue: str
    ready: int
    #: Not claimable yet: a run-at or a retry's backoff.
    delayed: int
    claimed: int
    dead: int
    #: Seconds the oldest claimable job has waited (None: none is waiting).
    oldest_ready_age: float | None


class JobQueue(Protocol[T]):
    """The client API shared by the embedded and the remote queue (async)."""

    @property
    def worker_id(self) -> str:
        """Who claims: recorded as the holder of every job this client claims."""
        ...

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
        ...

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
        ...

    async def claim(
        self, *, queues: Sequence[str] = (DEFAULT_QUEUE,), wait: float = 0.0
    ) -> ClaimedJob[T] | None:
        """The best due job of ``queues`` (priority, then FIFO), waiting up to
        ``wait`` seconds for one; None when none came."""
        ...

    async def claim_many(
        self, count: int, *, queues: Sequence[str] = (DEFAULT_QUEUE,), wait: float = 0.0
    ) -> list[ClaimedJob[T]]:
        """Up to ``count`` jobs in one call (empty when none came within ``wait``)."""
        ...

    async def heartbeat(self, job: ClaimedJob[T]) -> float:
        """Renew the lease; the seconds it now lasts. Raises ``LeaseLost``, or
        ``JobCancelled`` when the job was cancelled (stop, then fail or release it)."""
        ...

    async def complete(self, job: ClaimedJob[T], result: bytes | None = None) -> None:
        """Done: the job leaves the queue and is archived with ``result``."""
        ...

    async def complete_many(
        self, jobs: Sequence[ClaimedJob[T]], results: Sequence[bytes | None] | None = None
    ) -> list[OsqueueError | None]:
        """Complete ``jobs`` in one call (``results``: one per job, or None), committed
        together. Each job gets its own outcome, in order: None when it is durably
        completed, else the error its own ``complete`` would have raised (``LeaseLost``,
        ``JobNotFound``, or a retryable one such as ``StorageUnavailable``). Raises
        only for the call as a whole: a job named twice, more jobs than the broker's
        batch limit (nothing is done), or a broker out of reach."""
        ...

    async def fail(self, job: ClaimedJob[T], error: str = "", *, retry: bool = True) -> bool:
        """Give up on this attempt: retried after its queue's backoff, or dead (out of
        attempts, or ``retry=False``). True when dead (or cancelled)."""
        ...

    async def release(self, job: ClaimedJob[T]) -> None:
        """Hand the job back unstarted; the claim does not count as an attempt."""
        ...

    async def cancel(self, job_id: str) -> bool:
        """Cancel a job: True when it was cancelled at once (not claimed), False when
        its worker will learn it at its next heartbeat."""
        ...

    async def get(self, job_id: str) -> JobInfo:
        """Everything known about a job in the state. Raises ``JobNotFound``."""
        ...

    async def dead_letters(
        self, *, queue: str | None = None, limit: int = 100, after: str | None = None
    ) -> list[JobInfo]:
        """Dead jobs (of ``queue``, or all), oldest death first, at most ``limit``,
        after the job ``after`` (paging)."""
        ...

    async def redrive(self, job_ids: Sequence[str] = (), *, queue: str | None = None) -> list[str]:
        """Dead letters back to ready with fresh attempts: ``job_ids``, or all of
        ``queue``. All or nothing (``JobNotDead``). Returns the ids redriven."""
        ...

    async def purge(self, job_ids: Sequence[str] = (), *, queue: str | None = None) -> list[str]:
        """Dead letters out of the state, into the archive. Returns the ids purged."""
        ...

    async def queue_stats(self) -> list[QueueInfo]:
        """Every queue with jobs, by name."""
        ...

    def keep_alive(self, job: ClaimedJob[T]) -> AbstractAsyncContextManager[Lease]:
        """Heartbeat in the background while the block runs; cancel the block and raise
        ``LeaseLost`` (or ``JobCancelled``) if the job is lost (or cancelled)."""
        ...

    def processing(
        self, job: ClaimedJob[T], *, retry_on_error: bool = True
    ) -> AbstractAsyncContextManager[Lease]:
        """``keep_alive``, then complete on success, fail on an exception (with its
        text), and on a cancel: fail without retry (the job ends cancelled) and raise
        ``JobCancelled``."""
        ...
