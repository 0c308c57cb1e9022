"""How one job moves from status to status (docs/lifecycle.md has the diagram).

:class:`Transitions` changes single jobs in the job table and marks the open batch
changed; it decides nothing about *which* job moves (that is :mod:`osqueue_core.rules`)
and never answers a request. Every move that makes jobs claimable leaves serving the
claims waiting for them to its caller.

The frequent moves build a job's next version with every field given by position, in
declaration order (the changed ones commented): ``attrs.evolve`` and keyword arguments
cost two to three times as much, and every job moves at least twice.
"""

from __future__ import annotations

import attrs

from osqueue_core.archive import archive_bucket, archive_key
from osqueue_core.batch import Batch
from osqueue_core.clock import Clock
from osqueue_core.config import BrokerConfig, retry_policy
from osqueue_core.job import Job, JobStatus
from osqueue_core.notices import JobDead
from osqueue_core.results import Failed
from osqueue_core.table import JobTable


def max_attempts(job: Job, config: BrokerConfig) -> int | None:
    """The attempts ``job`` gets: its own limit, else its queue's policy's."""
    if job.born.max_attempts is not None:
        return job.born.max_attempts
    return retry_policy(config, job.queue).max_attempts


class Transitions:
    """Status changes of single jobs in ``table`` (reassigned when a state is loaded).

    ``epoch`` and ``commit_revision`` name the archive key of jobs that finish: the
    revision of the write that commits the change, so keys never repeat.
    """

    def __init__(self, config: BrokerConfig, clock: Clock, table: JobTable) -> None:
        self.config = config
        self._clock = clock
        self.table = table
        # The archive key last given, and the (wall, epoch, revision) it is for.
        self._last_key: tuple[tuple[float, int, int] | None, str] = (None, "")

    def claim(self, job: Job, worker_id: str, lease_deadline: float, batch: Batch) -> Job:
        claimed = Job(
            job.id,
            job.seq,
            job.born,
            JobStatus.CLAIMED,
            job.attempts + 1,
            worker_id,  # claimed_by
            self._clock.wall,  # claimed_at
            job.finished_at,
            job.archive_key,
            job.last_error,
            None,  # retry_at
            job.cancel_requested,
            job.result,
        )
        self.table.replace(claimed)
        self.table.set_lease(job.id, lease_deadline)
        batch.changed(self._clock.now)
        return claimed

    def give_up(
        self, job: Job, reason: str, retry: bool, batch: Batch, epoch: int, revision: int
    ) -> Failed:
        """A claimed job failed (or its lease ran out): cancelled if a cancel was asked
        for, dead if ``retry`` is false or it is out of attempts, else ready again after
        its queue's backoff."""
        if job.cancel_requested:
            self.finish(job, JobStatus.CANCELLED, reason, batch, epoch, revision)
            return Failed(job.id, True, None, True)
        limit = max_attempts(job, self.config)
        if not retry or (limit is not None and job.attempts >= limit):
            self.die(job, reason, batch, epoch, revision)
            return Failed(job.id, True)
        wall = self._clock.wall
        delay = retry_policy(self.config, job.queue).delay(job.id, job.attempts)
        retry_at = wall + delay if delay > 0 else None
        self.requeue(job, job.attempts, batch, last_error=reason, retry_at=retry_at)
        batch.tally.retries += 1
        return Failed(job.id, False, wall + delay)

    def requeue(
        self,
        job: Job,
        attempts: int,
        batch: Batch,
        *,
        last_error: str | None = None,
        retry_at: float | None = None,
    ) -> None:
        """Back to READY at its old place (due at ``retry_at``, or at once)."""
        ready = Job(
            job.id,
            job.seq,
            job.born,
            JobStatus.READY,
            attempts,
            None,  # claimed_by
            None,  # claimed_at
            job.finished_at,
            job.archive_key,
            job.last_error if last_error is None else last_error,
            retry_at,
            job.cancel_requested,
            job.result,
        )
        self.table.replace(ready)
        batch.changed(self._clock.now)

    def redrive(self, job: Job, batch: Batch) -> None:
        """A dead letter back to READY with fresh attempts (its last error kept)."""
        ready = Job(
            job.id,
            job.seq,
            job.born,
            JobStatus.READY,
            0,  # attempts
            None,  # claimed_by
            None,  # claimed_at
            None,  # finished_at
            job.archive_key,
            job.last_error,
            None,  # retry_at
            job.cancel_requested,
            job.result,
        )
        self.table.replace(ready)
        batch.changed(self._clock.now)

    def cancel_claimed(self, job: Job, batch: Batch) -> None:
        """Mark a claimed job for cancelling (its worker learns it at a heartbeat)."""
        if not job.cancel_requested:
            self.table.replace(attrs.evolve(job, cancel_requested=True))
            batch.changed(self._clock.now)

    def die(self, job: Job, reason: str, batch: Batch, epoch: int, revision: int) -> None:
        """``job`` becomes a dead letter, kept in the state; beyond ``max_dead`` the
        oldest leave for the archive."""
        dead = Job(
            job.id,
            job.seq,
            job.born,
            JobStatus.DEAD,
            job.attempts,
            job.claimed_by,
            job.claimed_at,
            self._clock.wall,  # finished_at
            job.archive_key,
            reason,  # last_error
            job.retry_at,
            job.cancel_requested,
            job.result,
        )
        self.table.replace(dead)
        batch.changed(self._clock.now)
        batch.notices.append(JobDead(job.id, job.queue, reason, job.attempts))
        batch.tally.dead_letters += 1
        while self.table.dead_count > self.config.max_dead:
            oldest = self.table.oldest_dead()
            assert oldest is not None
            self.archive_dead(oldest, batch, epoch, revision)

    def archive_dead(self, job: Job, batch: Batch, epoch: int, revision: int) -> None:
        """A dead letter leaves for the archive (purged or expired), status ``dead``."""
        self.finish(job, JobStatus.DEAD, job.last_error, batch, epoch, revision, at=job.finished_at)

    def finish(
        self,
        job: Job,
        status: JobStatus,
        error: str | None,
        batch: Batch,
        epoch: int,
        revision: int,
        *,
        result: bytes | None = None,
        at: float | None = None,
    ) -> None:
        """``job`` leaves the state for the archive with ``status``."""
        wall = self._clock.wall
        named = (wall, epoch, revision)
        if self._last_key[0] == named:  # the jobs one input finishes share their key
            key = self._last_key[1]
        else:
            bucket = archive_bucket(wall, self.config.archive_bucket_format)
            key = archive_key(self.config.archive_prefix, bucket, epoch, revision)
            self._last_key = (named, key)
        finished = Job(
            job.id,
            job.seq,
            job.born,
            status,
            job.attempts,
            job.claimed_by,
            job.claimed_at,
            wall if at is None else at,  # finished_at
            key,  # archive_key
            error,  # last_error
            job.retry_at,
            False,  # cancel_requested
            result,
        )
        self.table.replace(finished)
        batch.archive_keys.add(key)
        batch.changed(self._clock.now)

    def expire_dead(self, batch: Batch, epoch: int, revision: int) -> None:
        """Dead letters older than ``dead_retention``, or beyond ``max_dead`` (a state
        loaded by a broker with a lower cap), leave for the archive."""
        retention = self.config.dead_retention
        while (oldest := self.table.oldest_dead()) is not None and (
            (oldest.finished_at or 0.0) + retention <= self._clock.wall
            or self.table.dead_count > self.config.max_dead
        ):
            self.archive_dead(oldest, batch, epoch, revision)

    def next_dead_expiry(self) -> float | None:
        """Wall time the oldest dead letter expires (None: there is none)."""
        oldest = self.table.oldest_dead()
        if oldest is None:
            return None
        return (oldest.finished_at or 0.0) + self.config.dead_retention
