"""Notices: what the broker did that an operator wants to hear about, for logs and
metrics.

Pulled with ``Broker.take_notices()`` after any input, like effects, but nothing depends
on them: a runtime that ignores them loses nothing but the news. A notice about jobs is
released only when the write that made it durable has landed, and carries that write's
``epoch`` and ``revision`` (a lease that expired in a batch that never landed, because
another broker took over, is not reported: the new owner starts every lease afresh).

At most :data:`MAX_NOTICES` wait to be taken; beyond that the oldest are dropped and
counted (a driver that never takes them holds a bounded list).
"""

from __future__ import annotations

from collections import deque

import attrs

#: Notices kept for a driver that does not take them.
MAX_NOTICES = 10_000


@attrs.frozen
class Committed:
    """A state write of this broker landed: revision ``revision`` of epoch ``epoch``,
    carrying ``operations`` replies, ``state_bytes`` long; ``released``: it was the last
    write of a clean stop, which releases ownership."""

    epoch: int
    revision: int
    operations: int
    state_bytes: int
    released: bool = False


@attrs.frozen
class LeaseExpired:
    """No heartbeat from ``worker_id`` in time: the job's attempt (its ``attempts``-th)
    counts as failed, durable at ``revision``."""

    job_id: str
    queue: str
    worker_id: str
    attempts: int
    epoch: int = 0
    revision: int = 0


@attrs.frozen
class JobDead:
    """The job became a dead letter (out of attempts, or failed without retry) for
    ``reason``, durable at ``revision``."""

    job_id: str
    queue: str
    reason: str = attrs.field(repr=False)
    attempts: int
    epoch: int = 0
    revision: int = 0


JobNotice = LeaseExpired | JobDead
Notice = Committed | LeaseExpired | JobDead


class Notices:
    """The notices waiting to be taken (bounded: see the module docstring)."""

    def __init__(self) -> None:
        self._waiting: deque[Notice] = deque(maxlen=MAX_NOTICES)
        #: Dropped since the last :meth:`take` (the list was full).
        self.dropped = 0

    def add(self, notice: Notice) -> None:
        if len(self._waiting) == MAX_NOTICES:
            self.dropped += 1  # the deque drops the oldest itself
        self._waiting.append(notice)

    def landed(self, notices: list[JobNotice], epoch: int, revision: int) -> None:
        """``notices`` held in a batch whose write landed at ``revision``."""
        for notice in notices:
            self.add(attrs.evolve(notice, epoch=epoch, revision=revision))

    def take(self) -> tuple[list[Notice], int]:
        """The notices in order, and how many were dropped before them."""
        taken = list(self._waiting)
        self._waiting.clear()
        dropped, self.dropped = self.dropped, 0
        return taken, dropped
