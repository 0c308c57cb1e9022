"""Successful answers to commands, carried by :class:`~osqueue_core.effects.Reply`."""

from __future__ import annotations

import attrs


@attrs.frozen
class Pushed:
    """The job is durably in the queue under ``job_id``. ``existing``: the push carried
    a key that matched a job pushed before, whose id this is (nothing was created)."""

    job_id: str
    existing: bool = False


@attrs.frozen
class PushedBatch:
    """Every job of a ``PushBatch`` is durably in the queue, ids in payload order;
    ``existing[i]`` as in :class:`Pushed` (empty when nothing matched)."""

    job_ids: tuple[str, ...]
    existing: tuple[bool, ...] = ()


@attrs.frozen
class Claimed:
    """The worker holds ``job_id`` until ``lease_deadline`` unless it heartbeats.

    ``lease_deadline`` is on the clock of the broker's ``now`` (monotonic in
    ``osqueue_io``): use ``lease_deadline - now`` as a duration. ``attempts`` counts
    this claim."""

    job_id: str
    payload: bytes = attrs.field(repr=False)
    attempts: int
    lease_deadline: float
    queue: str = "default"
    priority: int = 0
    #: The most attempts this job gets (None: unlimited).
    max_attempts: int | None = None


@attrs.frozen
class ClaimedBatch:
    """The jobs a ``Claim`` with ``count`` > 1 took (at least one), best first."""

    jobs: tuple[Claimed, ...]


@attrs.frozen
class NothingToClaim:
    """No job was ready (within the claim's wait)."""


@attrs.frozen
class LeaseExtended:
    """The worker still holds ``job_id``, now until ``lease_deadline`` (broker clock).
    ``cancel_requested``: the job was cancelled; stop working on it and fail or release
    it (it then ends cancelled)."""

    job_id: str
    lease_deadline: float
    cancel_requested: bool = False


@attrs.frozen
class Completed:
    """The job is durably finished; it will be archived."""

    job_id: str


@attrs.frozen
class Failed:
    """The failure is recorded: ``dead`` (a dead letter, or cancelled), or the job runs
    again from ``retry_at`` (UNIX time; None when it was dead or cancelled)."""

    job_id: str
    dead: bool
    retry_at: float | None = None
    cancelled: bool = False


@attrs.frozen
class Released:
    """The job is back in the queue at its old place; the claim did not count."""

    job_id: str


@attrs.frozen
class Cancelled:
    """The cancel is recorded: ``at_once`` when the job was not claimed (it is
    cancelled and will be archived), else its worker learns it at its next heartbeat."""

    job_id: str
    at_once: bool


@attrs.frozen
class JobInfo:
    """What the broker knows about a job in the state (``GetJob``, ``ListDead``)."""

    id: str
    queue: str
    priority: int
    #: ``ready``, ``claimed``, ``completed``, ``dead`` or ``cancelled``.
    status: str
    attempts: int
    #: The attempts it gets (its own limit or its queue's policy; None: unlimited).
    max_attempts: int | None
    created_at: float
    #: UNIX time before which it is not claimable (None: claimable now or not ready).
    run_at: float | None
    last_error: str | None
    #: The worker holding it, if claimed.
    holder: str | None
    key: str | None = None
    cancel_requested: bool = False
    finished_at: float | None = None


@attrs.frozen
class DeadLetters:
    """A page of dead letters, oldest death first; ``more``: a next page exists (ask
    again with ``after`` set to the last id)."""

    jobs: tuple[JobInfo, ...]
    more: bool = False


@attrs.frozen
class Redriven:
    """These dead letters are ready again, with fresh attempts."""

    job_ids: tuple[str, ...]


@attrs.frozen
class Purged:
    """These dead letters left the dead-letter list (archived, status ``dead``)."""

    job_ids: tuple[str, ...]


Result = (
    Pushed
    | PushedBatch
    | Claimed
    | ClaimedBatch
    | NothingToClaim
    | LeaseExtended
    | Completed
    | Failed
    | Released
    | Cancelled
    | JobInfo
    | DeadLetters
    | Redriven
    | Purged
)
