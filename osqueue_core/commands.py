"""Client commands: what publishers, consumers and operators ask the broker to do.

Each carries a caller-chosen ``request_id``; the broker answers it with exactly one
:class:`~osqueue_core.effects.Reply` carrying the same id. Every field has a limit
(:mod:`osqueue_core.limits`, ``BrokerConfig``), checked before anything else.
docs/lifecycle.md describes what each does to a job.
"""

from __future__ import annotations

from collections.abc import Hashable

import attrs

from osqueue_core.job import DEFAULT_QUEUE

RequestId = Hashable


@attrs.frozen
class NewJob:
    """One job to push: its payload and what it is born with.

    ``delay`` (seconds from the broker's now) and ``run_at`` (UNIX time) both say when
    it becomes claimable; give at most one. ``key`` makes the push idempotent within
    its queue: while a job with the same key is in the state, or finished less than
    ``idempotency_retention`` ago, the push returns that job's id and creates nothing.
    ``max_attempts`` overrides the queue's retry policy.
    """

    payload: bytes = attrs.field(repr=False)
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    delay: float | None = None
    run_at: float | None = None
    key: str | None = None
    max_attempts: int | None = None


@attrs.frozen
class Push:
    """Add one job (see :class:`NewJob` for the options)."""

    request_id: RequestId
    payload: bytes = attrs.field(repr=False)
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    delay: float | None = None
    run_at: float | None = None
    key: str | None = None
    max_attempts: int | None = None

    def new_job(self) -> NewJob:
        return NewJob(
            self.payload,
            self.queue,
            self.priority,
            self.delay,
            self.run_at,
            self.key,
            self.max_attempts,
        )


@attrs.frozen
class PushBatch:
    """Add several jobs at once, in order: all of them in one write, or none.

    Each item is a payload (pushed with the defaults) or a :class:`NewJob`. Refused
    whole, nothing pushed: ``PayloadTooLarge`` if any payload is too large or the batch
    has more than ``max_batch_ops`` items or ``max_batch_bytes`` bytes;
    ``InvalidArgument`` if any item's options are invalid.
    """

    request_id: RequestId
    payloads: tuple[bytes | NewJob, ...]

    def new_jobs(self) -> list[NewJob]:
        return [p if isinstance(p, NewJob) else NewJob(p) for p in self.payloads]


@attrs.frozen
class Claim:
    """Take the best due job of ``queues`` for ``worker_id``: highest priority first,
    then oldest (FIFO).

    With ``count`` > 1 it takes up to that many (answered ``ClaimedBatch``). With
    ``wait`` > 0 the claim waits up to that many seconds (at most ``MAX_CLAIM_WAIT``)
    for a job to be pushed or fall due instead of answering
    :class:`~osqueue_core.results.NothingToClaim` at once.
    """

    request_id: RequestId
    worker_id: str
    wait: float = 0.0
    queues: tuple[str, ...] = (DEFAULT_QUEUE,)
    count: int = 1


@attrs.frozen
class Heartbeat:
    """Keep ``worker_id``'s lease on ``job_id`` alive for another heartbeat timeout.
    The answer says whether the job was cancelled meanwhile."""

    request_id: RequestId
    job_id: str
    worker_id: str


@attrs.frozen
class Complete:
    """``worker_id`` finished ``job_id``: it leaves the queue and is archived, with
    ``result`` (at most ``max_result_bytes``) in its archive record."""

    request_id: RequestId
    job_id: str
    worker_id: str
    result: bytes | None = attrs.field(default=None, repr=False)


@attrs.frozen
class Fail:
    """``worker_id`` gives up on ``job_id``.

    With ``requeue`` the job is retried after its queue's backoff, unless out of
    attempts; without, or out of attempts, it is dead (a dead letter). A job whose
    cancel was requested ends cancelled instead.
    """

    request_id: RequestId
    job_id: str
    worker_id: str
    error: str = ""
    requeue: bool = True


@attrs.frozen
class Release:
    """``worker_id`` hands ``job_id`` back unstarted (a worker shutting down, a caller
    that left before it received the job): the job returns to its place in the queue
    and this claim does not count as an attempt."""

    request_id: RequestId
    job_id: str
    worker_id: str


@attrs.frozen
class Cancel:
    """Cancel ``job_id``: a ready or delayed job at once; a claimed one is marked, its
    worker learns it at its next heartbeat, and it ends cancelled when the worker fails
    or releases it or its lease runs out (a complete still completes it)."""

    request_id: RequestId
    job_id: str


@attrs.frozen
class GetJob:
    """Describe a job that is in the state (answered ``JobInfo``)."""

    request_id: RequestId
    job_id: str


@attrs.frozen
class ListDead:
    """List dead letters, oldest death first: of ``queue`` (None: every queue), at
    most ``limit``, starting after the job ``after`` (for paging)."""

    request_id: RequestId
    queue: str | None = None
    limit: int = 100
    after: str | None = None


@attrs.frozen
class Redrive:
    """Put dead letters back to ready with fresh attempts: the jobs ``job_ids``, or
    every dead letter of ``queue`` (give one or the other). All or nothing: a job that
    is not a dead letter refuses the whole command."""

    request_id: RequestId
    job_ids: tuple[str, ...] = ()
    queue: str | None = None


@attrs.frozen
class Purge:
    """Drop dead letters from the state, ``job_ids`` or all of ``queue``: they are
    archived (status ``dead``), so the record is kept. All or nothing, like Redrive."""

    request_id: RequestId
    job_ids: tuple[str, ...] = ()
    queue: str | None = None


Command = (
    Push
    | PushBatch
    | Claim
    | Heartbeat
    | Complete
    | Fail
    | Release
    | Cancel
    | GetJob
    | ListDead
    | Redrive
    | Purge
)
