"""Client commands: what publishers and consumers ask the broker to do.

Each carries a caller-chosen ``request_id``; the broker answers it with exactly one
:class:`~osqueue_core.effects.Reply` carrying the same id. Every text field has a length
limit (:mod:`osqueue_core.limits`), checked before anything else.
"""

from __future__ import annotations

from collections.abc import Hashable

import attrs

RequestId = Hashable


@attrs.frozen
class Push:
    """Add a job with this payload to the back of the queue."""

    request_id: RequestId
    payload: bytes


@attrs.frozen
class PushBatch:
    """Add several jobs at once, in order: all of them in one write, or none.

    Refused whole (``PayloadTooLarge``) if any payload is too large, or if the batch has
    more than ``max_batch_ops`` payloads or ``max_batch_bytes`` bytes.
    """

    request_id: RequestId
    payloads: tuple[bytes, ...]


@attrs.frozen
class Claim:
    """Take the oldest ready job for ``worker_id``.

    With ``wait`` > 0 the claim waits up to that many seconds (at most
    ``MAX_CLAIM_WAIT``) for a job to arrive instead of answering
    :class:`~osqueue_core.results.NothingToClaim` at once.
    """

    request_id: RequestId
    worker_id: str
    wait: float = 0.0


@attrs.frozen
class Heartbeat:
    """Keep ``worker_id``'s lease on ``job_id`` alive for another heartbeat timeout."""

    request_id: RequestId
    job_id: str
    worker_id: str


@attrs.frozen
class Complete:
    """``worker_id`` finished ``job_id``: remove it from the queue and archive it."""

    request_id: RequestId
    job_id: str
    worker_id: str


@attrs.frozen
class Fail:
    """``worker_id`` gives up on ``job_id``.

    With ``requeue`` the job goes back to the queue (unless out of attempts); without,
    it is dead-lettered: archived with status ``dead`` and ``error`` as its last error.
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


Command = Push | PushBatch | Claim | Heartbeat | Complete | Fail | Release
