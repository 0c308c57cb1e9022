"""What each command does to the jobs: the queue's semantics on the broker's head state.

:class:`JobTransitions` is the half of :class:`~osqueue_core.broker.Broker` that applies
commands and lease expiry to the in-memory jobs: it adds, grants, extends, finishes and
requeues jobs, marks the open batch changed, and holds each reply in that batch until
the write (or read) that makes it safe has landed. It never issues storage operations;
that is the other half, in ``broker.py``.
"""

from __future__ import annotations

import math

import attrs

from osqueue_core.archive import archive_bucket, archive_key
from osqueue_core.batch import Batch, PendingWrite
from osqueue_core.commands import (
    Claim,
    Command,
    Complete,
    Fail,
    Heartbeat,
    Push,
    PushBatch,
    RequestId,
)
from osqueue_core.config import BrokerConfig
from osqueue_core.effects import Effect, Reply
from osqueue_core.errors import (
    InvalidArgument,
    JobNotFound,
    LeaseLost,
    OsqueueError,
    PayloadTooLarge,
)
from osqueue_core.job import Job, JobStatus
from osqueue_core.owner import Owner
from osqueue_core.phase import Phase
from osqueue_core.results import (
    Claimed,
    Completed,
    Failed,
    LeaseExtended,
    NothingToClaim,
    Pushed,
    PushedBatch,
)
from osqueue_core.table import JobTable
from osqueue_core.waiters import Waiter, WaitingClaims


class JobTransitions:
    """Command application for :class:`~osqueue_core.broker.Broker` (its base class).

    The attributes below belong to the broker; they are declared here so that this
    half type-checks on its own.
    """

    config: BrokerConfig
    _table: JobTable
    _open: Batch
    _owner: Owner | None
    _now: float
    _phase: Phase
    _revision: int
    _pending_write: PendingWrite | None
    _waiters: WaitingClaims
    _effects: list[Effect]

    def _batch_full(self) -> bool:
        batch = self._open
        return (
            len(batch.replies) >= self.config.max_batch_ops
            or batch.payload_bytes >= self.config.max_batch_bytes
        )

    def _expire_leases(self) -> None:
        for job_id in self._table.expired_leases(self._now):
            job = self._table.get(job_id)
            if job is None or job.status is not JobStatus.CLAIMED:
                continue
            reason = f"lease expired: no heartbeat from worker {job.claimed_by!r}"
            # The worker no longer holds it, whatever happens next: a late complete or
            # fail from it is answered LeaseLost.
            released = attrs.evolve(job, claimed_by=None, claimed_at=None)
            self._release_job(released, reason, dead_letter=self._out_of_attempts(job))
        self._serve_waiters()

    def _expire_waiters(self) -> None:
        for request_id in self._waiters.expire(self._now):
            self._effects.append(Reply(request_id, NothingToClaim()))

    def _apply(self, command: Command) -> None:
        try:
            match command:
                case Push():
                    self._push(command)
                case PushBatch():
                    self._push_batch(command)
                case Claim():
                    self._claim(command)
                case Heartbeat():
                    self._heartbeat(command)
                case Complete():
                    self._complete(command)
                case Fail():
                    self._fail_job(command)
                case _:
                    raise InvalidArgument(f"unknown command {command!r}")
        except (LeaseLost, JobNotFound) as error:
            # Only the current owner may say a job is gone: held until an operation
            # confirms it, so a replaced broker answers BrokerReplaced instead.
            self._hold(Reply(command.request_id, error=error))
        except OsqueueError as error:
            self._reply_error(command.request_id, error)

    def _push(self, command: Push) -> None:
        job = self._add_job(self._checked_payload(command.payload))
        self._hold(Reply(command.request_id, Pushed(job.id)))
        self._serve_waiters()

    def _push_batch(self, command: PushBatch) -> None:
        if not isinstance(command.payloads, tuple | list):
            raise InvalidArgument("a batch's payloads must be a tuple of bytes")
        payloads = [
            self._checked_payload(payload, f"payload {index} of the batch")
            for index, payload in enumerate(command.payloads)
        ]
        total = sum(len(payload) for payload in payloads)
        limits = self.config
        if len(payloads) > limits.max_batch_ops or total > limits.max_batch_bytes:
            raise PayloadTooLarge(
                f"a batch of {len(payloads)} payloads ({total} bytes) exceeds the broker's "
                f"limit of {limits.max_batch_ops} payloads or {limits.max_batch_bytes} bytes: "
                "split it (nothing was pushed)"
            )
        # All in the open batch: they become durable in one write, or not at all.
        jobs = [self._add_job(payload) for payload in payloads]
        self._hold(Reply(command.request_id, PushedBatch(tuple(job.id for job in jobs))))
        self._serve_waiters()

    def _checked_payload(self, payload: bytes, what: str = "payload") -> bytes:
        if not isinstance(payload, bytes):
            raise InvalidArgument(f"a job {what} must be bytes")
        if len(payload) > self.config.max_payload_bytes:
            raise PayloadTooLarge(
                f"{what} of {len(payload)} bytes exceeds the broker's limit of "
                f"{self.config.max_payload_bytes} bytes: store large data elsewhere and "
                "push a reference (nothing was pushed)"
            )
        return payload

    def _add_job(self, payload: bytes) -> Job:
        assert self._owner is not None
        seq = self._table.next_seq
        job = Job(
            id=self.config.job_id_factory(self._owner.epoch, seq),
            seq=seq,
            payload=payload,
            created_at=self._now,
        )
        self._table.add(job)
        self._changed()
        self._open.payload_bytes += len(payload)
        return job

    def _claim(self, command: Claim) -> None:
        _require_id("worker_id", command.worker_id)
        if not math.isfinite(command.wait) or command.wait < 0:
            raise InvalidArgument(f"wait must be a non-negative number, got {command.wait!r}")
        job = self._table.pop_ready()
        if job is not None:
            self._grant(job, command.worker_id, command.request_id)
        elif command.wait > 0 and self._phase is Phase.RUNNING:
            deadline = self._now + command.wait
            self._waiters.add(Waiter(command.request_id, command.worker_id, deadline))
        else:
            self._effects.append(Reply(command.request_id, NothingToClaim()))

    def _grant(self, job: Job, worker_id: str, request_id: RequestId) -> None:
        claimed = attrs.evolve(
            job,
            status=JobStatus.CLAIMED,
            attempts=job.attempts + 1,
            claimed_by=worker_id,
            claimed_at=self._now,
        )
        self._table.replace(claimed)
        deadline = self._now + self.config.heartbeat_timeout
        self._table.set_lease(job.id, deadline)
        self._changed()
        self._hold(Reply(request_id, Claimed(job.id, job.payload, claimed.attempts, deadline)))

    def _serve_waiters(self) -> None:
        while len(self._waiters):
            job = self._table.pop_ready()
            if job is None:
                return
            waiter = self._waiters.pop_first()
            assert waiter is not None
            self._grant(job, waiter.worker_id, waiter.request_id)

    def _held_job(self, job_id: str, worker_id: str) -> Job:
        _require_id("job_id", job_id)
        _require_id("worker_id", worker_id)
        job = self._table.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def _heartbeat(self, command: Heartbeat) -> None:
        job = self._held_job(command.job_id, command.worker_id)
        if job.status is not JobStatus.CLAIMED or job.claimed_by != command.worker_id:
            raise LeaseLost(job.id, command.worker_id)
        deadline = self._now + self.config.heartbeat_timeout
        self._table.set_lease(job.id, deadline)
        # Released once a later operation confirms we still own the state: only then
        # is the promise safe from a successor that would hand the job out again.
        self._hold(Reply(command.request_id, LeaseExtended(job.id, deadline)))

    def _complete(self, command: Complete) -> None:
        job = self._held_job(command.job_id, command.worker_id)
        if job.claimed_by != command.worker_id:
            raise LeaseLost(job.id, command.worker_id)
        if job.status is JobStatus.CLAIMED:
            self._finish(job, JobStatus.COMPLETED, job.last_error)
        elif job.status is not JobStatus.COMPLETED:
            raise LeaseLost(job.id, command.worker_id)
        # A repeated complete is answered like the first, once that one is durable.
        self._hold(Reply(command.request_id, Completed(job.id)))

    def _fail_job(self, command: Fail) -> None:
        job = self._held_job(command.job_id, command.worker_id)
        if job.claimed_by != command.worker_id:
            raise LeaseLost(job.id, command.worker_id)
        if job.status is JobStatus.CLAIMED:
            dead = not command.requeue or self._out_of_attempts(job)
            self._release_job(job, command.error or "failed by worker", dead_letter=dead)
        elif job.status is JobStatus.DEAD:
            dead = True
        else:
            raise LeaseLost(job.id, command.worker_id)
        self._hold(Reply(command.request_id, Failed(job.id, dead)))
        self._serve_waiters()

    def _out_of_attempts(self, job: Job) -> bool:
        limit = self.config.max_attempts
        return limit is not None and job.attempts >= limit

    def _release_job(self, job: Job, reason: str, *, dead_letter: bool) -> None:
        """A claimed job goes back to the queue, or to the archive as dead."""
        if dead_letter:
            self._finish(job, JobStatus.DEAD, reason)
        else:
            self._table.replace(
                attrs.evolve(
                    job,
                    status=JobStatus.READY,
                    claimed_by=None,
                    claimed_at=None,
                    last_error=reason,
                )
            )
            self._changed()

    def _finish(self, job: Job, status: JobStatus, error: str | None) -> None:
        assert self._owner is not None
        # The key names the revision that will commit this change: the next write, or
        # the one after if a write is already on its way.
        revision = self._revision + (2 if self._pending_write is not None else 1)
        bucket = archive_bucket(self._now, self.config.archive_bucket_format)
        key = archive_key(self.config.archive_prefix, bucket, self._owner.epoch, revision)
        self._table.replace(
            attrs.evolve(
                job, status=status, finished_at=self._now, archive_key=key, last_error=error
            )
        )
        self._open.archive_keys.add(key)
        self._changed()

    def _changed(self) -> None:
        if not self._open.dirty:
            self._open.dirty = True
            self._open.first_change_at = self._now

    def _hold(self, reply: Reply) -> None:
        self._open.replies.append(reply)

    def _reply_error(self, request_id: RequestId, error: OsqueueError) -> None:
        self._effects.append(Reply(request_id, error=error))


def _require_id(name: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{name} must be a non-empty string")
