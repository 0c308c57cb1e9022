"""The one state operation in flight, its retries, and how long storage has been failing.

The broker reads or writes the state object (and, while taking over, the epoch
markers) through a single :class:`StateSlot`: at most one such operation is in flight,
so each one sees the outcome of the one before. An operation that failed for certain is
retried, the same operation, after ``min(retry_max, retry_initial * 2**(n-1))`` for the
n-th consecutive failed attempt; conflicts and unknown outcomes count as failed attempts
too (their handlers resolve them, then back off the same way), so a store that keeps
failing never makes the broker spin. The slot also knows how long storage has been
failing (or one operation has hung), which is what "stalled" means.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs

from osqueue_core.batch import Batch, PendingWrite
from osqueue_core.clock import Clock
from osqueue_core.config import BrokerConfig, backoff
from osqueue_core.effects import StorageEffect
from osqueue_core.errors import BrokerNotRunning, CorruptState
from osqueue_core.events import ObjectCorrupt, StorageFailed, StorageResult
from osqueue_core.limits import quote
from osqueue_core.outbox import Outbox


@attrs.frozen
class StateOp:
    """One state operation: how to make its effect, and what to do with its result.

    ``on_result`` never sees a failure that certainly changed nothing (the slot retries
    those) nor ``ObjectCorrupt`` (the slot raises ``CorruptState``); for a write
    (``writes``) it does see an outcome-unknown ``StorageFailed``, which it must
    resolve. ``batch`` holds the replies waiting on the operation, ``write`` the state
    write on its way; ``give_up_after`` is how many consecutive storage failures it
    tolerates before the broker fails (used while starting).
    """

    make: Callable[[int], StorageEffect]
    on_result: Callable[[StorageResult], None]
    what: str
    batch: Batch | None = None
    write: PendingWrite | None = None
    writes: bool = False
    give_up_after: int | None = None
    #: ``on_result`` is given ``ObjectCorrupt`` too (an object whose content does not
    #: matter, only whose it is: a damaged one is nobody's).
    accepts_corrupt: bool = False


class StateSlot:
    """At most one state operation in flight, plus at most one waiting for its retry."""

    def __init__(self, config: BrokerConfig, clock: Clock, outbox: Outbox) -> None:
        self._config = config
        self._clock = clock
        self._out = outbox
        self.op: StateOp | None = None
        self.issued_at = -math.inf
        self.retry: StateOp | None = None
        self.retry_at = math.inf
        #: Consecutive failed attempts (storage failures, conflicts, unknown outcomes).
        self.failures = 0
        #: Consecutive storage failures (what ``give_up_after`` counts).
        self.storage_failures = 0
        #: When the current run of storage failures began (None: storage is fine).
        self.failing_since: float | None = None
        self.last_error = ""
        #: The operation whose result is being handled: if its handler raises (the
        #: broker fails), its batch still holds replies that must be answered.
        self._handling: StateOp | None = None

    @property
    def idle(self) -> bool:
        return self.op is None and self.retry is None

    def issue(self, op: StateOp) -> None:
        assert self.op is None, "one state operation at a time"
        self.op = op
        self.issued_at = self._clock.now
        self._out.issue(op.make, lambda result: self._finished(op, result))

    def pump(self) -> None:
        """Re-issue the operation waiting for its retry, if its time has come."""
        if self.op is None and self.retry is not None and self._clock.now >= self.retry_at:
            op, self.retry, self.retry_at = self.retry, None, math.inf
            self.issue(op)

    def schedule(self, op: StateOp) -> None:
        """Issue ``op`` again after the backoff for the failures counted so far."""
        self.retry = op
        self.retry_at = self._clock.now + backoff(self._config, self.failures)

    def count_failed_attempt(self) -> None:
        """A conflict: it lengthens the next backoff."""
        self.failures += 1

    def refused(self, message: str) -> None:
        """Storage keeps refusing a write although nobody else wrote (a version token it
        rejects, a rewrite of the same bytes by another tool): as good as failing, so
        it counts towards a stall."""
        self._failing(message, since=self._clock.now)

    def _failing(self, message: str, since: float) -> None:
        if self.failing_since is None:
            self.failing_since = since
        self.last_error = message or "unknown storage error"

    def succeeded(self) -> None:
        """An operation proved storage works: backoff and stall tracking start over."""
        self.failures = self.storage_failures = 0
        self.failing_since = None

    def held_batches(self) -> list[Batch]:
        """Batches whose replies wait on the operation in flight or the retry."""
        ops = (self.op, self.retry, self._handling)
        return [op.batch for op in ops if op is not None and op.batch is not None]

    def cancel(self) -> None:
        """Forget everything (the broker failed or stopped for good)."""
        self.op = self.retry = self._handling = None
        self.retry_at = math.inf

    def stalled(self) -> bool:
        """Storage has failed every operation for ``stall_timeout``, or the one in
        flight has hung that long."""
        deadline = self.stall_deadline()
        return deadline is not None and self._clock.now >= deadline

    def trouble(self) -> str:
        """What is wrong with storage, for messages and stats ("" if nothing is)."""
        if self.failing_since is not None:
            return self.last_error
        if self.op is not None and self._clock.now - self.issued_at >= self._config.stall_timeout:
            waited = self._clock.now - self.issued_at
            return f"{self.op.what}: no answer for {waited:.1f}s"
        return ""

    def stall_deadline(self) -> float | None:
        """When the slot will count as stalled if nothing changes (None: not heading
        there)."""
        timeout = self._config.stall_timeout
        candidates = []
        if self.failing_since is not None:
            candidates.append(self.failing_since + timeout)
        if self.op is not None:
            candidates.append(self.issued_at + timeout)
        return min(candidates) if candidates else None

    def _finished(self, op: StateOp, result: StorageResult) -> None:
        self.op = None
        self._handling = op
        self._handle(op, result)
        self._handling = None

    def _handle(self, op: StateOp, result: StorageResult) -> None:
        if isinstance(result, ObjectCorrupt) and not op.accepts_corrupt:
            raise CorruptState(
                f"cannot {op.what}: storage reports the object damaged "
                f"({quote(result.message, 300)}); osqueue will not overwrite it: restore "
                "it from a backup"
            )
        if isinstance(result, StorageFailed):
            self.failures += 1
            self.storage_failures += 1
            # Failing since the failed operation was issued: a call that hung and then
            # failed has been failing all along (the stall must not start over).
            self._failing(result.message, since=self.issued_at)
            limit = op.give_up_after
            if limit is not None and self.storage_failures >= limit:
                raise BrokerNotRunning(
                    f"could not {op.what} after {self.storage_failures} attempts; last "
                    f"storage error: {quote(self.last_error, 300)}"
                )
            if not (result.outcome_unknown and op.writes):
                self.schedule(op)  # certainly changed nothing: the same operation, later
                return
        op.on_result(result)
