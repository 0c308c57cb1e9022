"""A job as the state object records it.

A :class:`Job` is an immutable value: every change makes a new one with
:func:`attrs.evolve`, so the state table can cache each job's encoded JSON and re-encode
only the jobs a batch touched.
"""

from __future__ import annotations

import enum

import attrs


class JobStatus(enum.Enum):
    """Where a job is in its life. Only READY and CLAIMED jobs are live work."""

    READY = "ready"
    CLAIMED = "claimed"
    #: Finished successfully; waits in the state until its archive object is written.
    COMPLETED = "completed"
    #: Given up on (failed without requeue, or out of attempts); archived like COMPLETED.
    DEAD = "dead"


FINISHED = frozenset({JobStatus.COMPLETED, JobStatus.DEAD})


@attrs.frozen
class Job:
    """One job in the state object.

    ``seq`` is the job's place in FIFO order, unique and increasing across brokers.
    ``payload`` is opaque bytes (base64 under the key ``data`` in JSON, as in the
    original). Fields added by later schema revisions must have defaults, so older
    state objects still parse.
    """

    id: str
    seq: int
    payload: bytes
    created_at: float
    status: JobStatus = JobStatus.READY
    attempts: int = 0
    claimed_by: str | None = None
    claimed_at: float | None = None
    finished_at: float | None = None
    #: Set when the job finishes: the archive object it will be written to.
    archive_key: str | None = None
    last_error: str | None = None
