"""A job as the state object records it: what it is born with, and how it lives.

A job has two halves, kept apart in the code and in the state format:

* :class:`JobSpec`, what the job is **born with** and never changes: its payload, queue,
  priority, run-at time, idempotency key and attempt limit. (The scale work moves these
  into immutable segment objects; nothing that changes may live here.)
* the rest of :class:`Job`, what changes while it **lives**: status, attempts, holder,
  last error, the time a retry is due, a cancel request, a result.

A :class:`Job` is an immutable value: every change makes a new one with
:func:`attrs.evolve`, so the state table can cache each job's encoded JSON and re-encode
only the jobs a batch touched.
"""

from __future__ import annotations

import enum

import attrs

#: The queue a job goes to, and claims take from, when none is named.
DEFAULT_QUEUE = "default"


class JobStatus(enum.Enum):
    """Where a job is in its life. READY and CLAIMED jobs are live work; a DEAD job with
    no archive key is a dead letter (kept in the state to be listed, redriven or purged).
    """

    #: Waiting to be claimed: due, or delayed until its ``ready_at``.
    READY = "ready"
    CLAIMED = "claimed"
    #: Finished successfully; waits in the state until its archive object is written.
    COMPLETED = "completed"
    #: Out of attempts, or failed without retry: a dead letter until redriven, purged or
    #: expired (then archived like COMPLETED).
    DEAD = "dead"
    #: Cancelled before it finished; archived like COMPLETED.
    CANCELLED = "cancelled"


@attrs.frozen
class JobSpec:
    """What a job is born with. Never changes after the push."""

    #: Opaque bytes (base64 under the key ``data`` in JSON, as in the original).
    payload: bytes = attrs.field(repr=False)
    #: Wall (UNIX) time of the push.
    created_at: float
    queue: str = DEFAULT_QUEUE
    #: Higher first; FIFO (by ``seq``) within a priority.
    priority: int = 0
    #: Wall time before which the job is not claimable (None: at once).
    run_at: float | None = None
    #: Idempotency key: a later push with the same (queue, key) returns this job.
    key: str | None = None
    #: Overrides the queue's retry policy's ``max_attempts`` (None: the policy's).
    max_attempts: int | None = None


@attrs.frozen
class Job:
    """One job in the state object: its id and FIFO place, what it was born with
    (``born``), and the fields that change while it lives.

    ``seq`` is the job's place in FIFO order, unique and increasing across brokers.
    Fields added by later schema revisions must have defaults, so older state objects
    still parse.
    """

    id: str
    seq: int
    born: JobSpec
    status: JobStatus = JobStatus.READY
    #: Claims so far, the current one included (a lease that expired counts).
    attempts: int = 0
    claimed_by: str | None = None
    claimed_at: float | None = None
    finished_at: float | None = None
    #: Set when the job leaves the state: the archive object it will be written to.
    archive_key: str | None = None
    last_error: str | None = None
    #: Wall time before which a job waiting for its retry is not claimable.
    retry_at: float | None = None
    #: A cancel arrived while the job was claimed: the worker learns it at its next
    #: heartbeat, and the job ends CANCELLED unless it completes.
    cancel_requested: bool = False
    #: What the worker handed back with ``complete`` (small, size-limited).
    result: bytes | None = attrs.field(default=None, repr=False)

    @property
    def payload(self) -> bytes:
        return self.born.payload

    @property
    def queue(self) -> str:
        return self.born.queue

    @property
    def priority(self) -> int:
        return self.born.priority

    @property
    def created_at(self) -> float:
        return self.born.created_at

    @property
    def ready_at(self) -> float | None:
        """Wall time before which a READY job is not claimable (None: no such time; a
        time already past may remain, from its run-at or its last backoff)."""
        return self.retry_at if self.retry_at is not None else self.born.run_at

    @property
    def leaving(self) -> bool:
        """Finished and on its way to the archive (dropped once the archive is written)."""
        return self.archive_key is not None

    @property
    def dead_letter(self) -> bool:
        """Dead and kept in the state (listable, redrivable, purgeable)."""
        return self.status is JobStatus.DEAD and self.archive_key is None
