"""Successful answers to commands, carried by :class:`~osqueue_core.effects.Reply`."""

from __future__ import annotations

import attrs


@attrs.frozen
class Pushed:
    """The job is durably in the queue under ``job_id``."""

    job_id: str


@attrs.frozen
class PushedBatch:
    """Every job of a ``PushBatch`` is durably in the queue, ids in payload order."""

    job_ids: tuple[str, ...]


@attrs.frozen
class Claimed:
    """The worker holds ``job_id`` until ``lease_deadline`` unless it heartbeats.

    ``lease_deadline`` is on the clock of the broker's ``now`` (monotonic in
    ``osqueue_io``): use ``lease_deadline - now`` as a duration. ``attempts`` counts
    this claim."""

    job_id: str
    payload: bytes
    attempts: int
    lease_deadline: float


@attrs.frozen
class NothingToClaim:
    """No job was ready (within the claim's wait)."""


@attrs.frozen
class LeaseExtended:
    """The worker still holds ``job_id``, now until ``lease_deadline`` (broker clock)."""

    job_id: str
    lease_deadline: float


@attrs.frozen
class Completed:
    """The job is durably finished; it will be archived."""

    job_id: str


@attrs.frozen
class Failed:
    """The failure is recorded: requeued, or ``dead`` (dead-lettered and archived)."""

    job_id: str
    dead: bool


@attrs.frozen
class Released:
    """The job is back in the queue at its old place; the claim did not count."""

    job_id: str


Result = (
    Pushed | PushedBatch | Claimed | NothingToClaim | LeaseExtended | Completed | Failed | Released
)
