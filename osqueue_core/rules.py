"""The queue's semantics: what each command and each expired lease does to the jobs.

:class:`JobRules` owns the broker's in-memory **head** state (the job table, waiting
claims, recently given answers) and applies commands to it. It never issues a storage
operation and never decides when anything is written: it changes jobs, marks the open
batch changed, and holds each reply in that batch until the commit protocol
(:mod:`osqueue_core.commit`) has made it safe. What it needs from the commit protocol
arrives as a :class:`CommitContext`; what the commit protocol needs from it (the encoded
jobs, archive contents, fresh leases after a takeover) is the "for the commit protocol"
section below. Nothing else crosses between the two.
"""

from __future__ import annotations

import attrs

from osqueue_core.archive import archive_bucket, archive_key
from osqueue_core.batch import Batch, Grant
from osqueue_core.clock import Clock
from osqueue_core.codec import ArchivedJob, encode_archive
from osqueue_core.commands import (
    Claim,
    Command,
    Complete,
    Fail,
    Heartbeat,
    Push,
    PushBatch,
    Release,
    RequestId,
)
from osqueue_core.config import BrokerConfig
from osqueue_core.effects import Reply
from osqueue_core.errors import (
    InvalidArgument,
    JobNotFound,
    LeaseLost,
    OsqueueError,
    Overloaded,
    PayloadTooLarge,
    StateDiverged,
)
from osqueue_core.job import Job, JobStatus
from osqueue_core.limits import MAX_ID_LENGTH, check_error_text, check_id, check_wait
from osqueue_core.outbox import Outbox
from osqueue_core.recent import RecentOutcomes
from osqueue_core.results import (
    Claimed,
    Completed,
    Failed,
    LeaseExtended,
    NothingToClaim,
    Pushed,
    PushedBatch,
    Released,
)
from osqueue_core.table import JobTable
from osqueue_core.waiters import Waiter, WaitingClaims


@attrs.frozen
class CommitContext:
    """What applying a command needs to know about the commit protocol."""

    #: The epoch this broker owns the state with (job ids and archive keys carry it).
    epoch: int
    #: The revision of the write that will commit the open batch (archive keys name it).
    commit_revision: int
    #: Whether a claim may wait for a job (only while running).
    waiting_allowed: bool


def payload_bytes(command: Command) -> int:
    """The job payload bytes a (checked) command carries."""
    match command:
        case Push():
            return len(command.payload)
        case PushBatch():
            return sum(len(payload) for payload in command.payloads)
    return 0


class JobRules:
    """Applies commands and lease expiry to the head state. See the module docstring."""

    def __init__(self, config: BrokerConfig, clock: Clock, outbox: Outbox) -> None:
        self.config = config
        self._clock = clock
        self._out = outbox
        self.table = JobTable()
        self.waiters = WaitingClaims()
        self.recent = RecentOutcomes(config.reply_memory, config.reply_memory_size)

    # -- checking ----------------------------------------------------------------------

    def check(self, command: object) -> None:
        """Refuse a malformed command before anything is done with it: types, then every
        length and size limit (no value is looked at beyond its limit)."""
        match command:
            case Push():
                self._check_payload(command.payload)
            case PushBatch():
                payloads = command.payloads
                if not isinstance(payloads, tuple | list):
                    raise InvalidArgument("a batch's payloads must be a tuple of bytes")
                limits = self.config
                if len(payloads) > limits.max_batch_ops:
                    raise PayloadTooLarge(
                        f"a batch of {len(payloads)} payloads exceeds the broker's limit of "
                        f"{limits.max_batch_ops}: split it (nothing was pushed)"
                    )
                for index, payload in enumerate(payloads):
                    self._check_payload(payload, f"payload {index} of the batch")
                total = sum(len(payload) for payload in payloads)
                if total > limits.max_batch_bytes:
                    raise PayloadTooLarge(
                        f"a batch of {total} bytes exceeds the broker's limit of "
                        f"{limits.max_batch_bytes} bytes: split it (nothing was pushed)"
                    )
            case Claim():
                check_id("worker_id", command.worker_id)
                check_wait(command.wait)
            case Heartbeat() | Complete() | Release():
                check_id("job_id", command.job_id)
                check_id("worker_id", command.worker_id)
            case Fail():
                check_id("job_id", command.job_id)
                check_id("worker_id", command.worker_id)
                check_error_text(command.error)
                if not isinstance(command.requeue, bool):
                    raise InvalidArgument("requeue must be true or false")
            case _:
                raise InvalidArgument(f"not an osqueue command: {type(command).__name__}")

    def _check_payload(self, payload: object, what: str = "payload") -> None:
        if not isinstance(payload, bytes):
            raise InvalidArgument(f"a job {what} must be bytes, got {type(payload).__name__}")
        if len(payload) > self.config.max_payload_bytes:
            raise PayloadTooLarge(
                f"{what} of {len(payload)} bytes exceeds the broker's limit of "
                f"{self.config.max_payload_bytes} bytes: store large data elsewhere and "
                "push a reference (nothing was pushed)"
            )

    # -- applying ----------------------------------------------------------------------

    def apply(self, command: Command, batch: Batch, ctx: CommitContext) -> None:
        """Apply a checked command to the head state; its reply is held in ``batch`` or
        (for errors that need no confirmation) sent at once."""
        try:
            match command:
                case Push():
                    self._push(command, batch, ctx)
                case PushBatch():
                    self._push_batch(command, batch, ctx)
                case Claim():
                    self._claim(command, batch, ctx)
                case Heartbeat():
                    self._heartbeat(command, batch)
                case Complete():
                    self._complete(command, batch, ctx)
                case Fail():
                    self._fail(command, batch, ctx)
                case Release():
                    self._release(command, batch, ctx)
        except (LeaseLost, JobNotFound) as error:
            # Only the current owner may say a job is gone: held until an operation
            # confirms it, so a replaced broker answers BrokerReplaced instead.
            batch.hold(Reply(command.request_id, error=error))
        except OsqueueError as error:
            self._out.reply(Reply(command.request_id, error=error))

    def _push(self, command: Push, batch: Batch, ctx: CommitContext) -> None:
        [job_id] = self._new_ids(1, ctx)
        job = self._add_job(job_id, command.payload, batch)
        batch.hold(Reply(command.request_id, Pushed(job.id)))
        self._serve_waiters(batch, ctx)

    def _push_batch(self, command: PushBatch, batch: Batch, ctx: CommitContext) -> None:
        # All in the open batch: they become durable in one write, or not at all.
        ids = self._new_ids(len(command.payloads), ctx)  # all checked before any is added
        jobs = [self._add_job(i, p, batch) for i, p in zip(ids, command.payloads, strict=True)]
        batch.hold(Reply(command.request_id, PushedBatch(tuple(job.id for job in jobs))))
        self._serve_waiters(batch, ctx)

    def _new_ids(self, count: int, ctx: CommitContext) -> list[str]:
        """The ids of the next ``count`` jobs, refused (changing nothing) if any is taken
        or malformed: an injected ``job_id_factory`` that repeats, or an edited state."""
        first = self.table.next_seq
        ids = [self.config.job_id_factory(ctx.epoch, seq) for seq in range(first, first + count)]
        valid = all(isinstance(i, str) and 0 < len(i) <= MAX_ID_LENGTH for i in ids)
        if not valid or len(set(ids)) < count or any(self.table.get(i) for i in ids):
            raise StateDiverged(
                f"the job ids for seq {first}.. are taken or malformed: fix "
                "BrokerConfig.job_id_factory (ids must be unique for distinct (epoch, seq) "
                f"and 1 to {MAX_ID_LENGTH} characters long), or the state object"
            )
        return ids

    def _add_job(self, job_id: str, payload: bytes, batch: Batch) -> Job:
        seq = self.table.next_seq
        job = Job(id=job_id, seq=seq, payload=payload, created_at=self._clock.wall)
        self.table.add(job)
        batch.changed(self._clock.now)
        batch.payload_bytes += len(payload)
        return job

    def _claim(self, command: Claim, batch: Batch, ctx: CommitContext) -> None:
        job = self.table.pop_ready()
        if job is not None:
            self._grant(job, command.worker_id, command.request_id, batch)
        elif command.wait > 0 and ctx.waiting_allowed:
            if len(self.waiters) >= self.config.max_waiting_claims:
                raise Overloaded(
                    f"{len(self.waiters)} claims are already waiting for a job (the "
                    "broker's limit): retry later"
                )
            deadline = self._clock.now + command.wait
            self.waiters.add(Waiter(command.request_id, command.worker_id, deadline))
        else:
            self._out.reply(Reply(command.request_id, NothingToClaim()))

    def _grant(self, job: Job, worker_id: str, request_id: RequestId, batch: Batch) -> None:
        claimed = attrs.evolve(
            job,
            status=JobStatus.CLAIMED,
            attempts=job.attempts + 1,
            claimed_by=worker_id,
            claimed_at=self._clock.wall,
        )
        self.table.replace(claimed)
        deadline = self._clock.now + self.config.heartbeat_timeout
        self.table.set_lease(job.id, deadline)
        batch.changed(self._clock.now)
        batch.grants[request_id] = Grant(request_id, before=job, after=claimed)
        batch.hold(Reply(request_id, Claimed(job.id, job.payload, claimed.attempts, deadline)))

    def _serve_waiters(self, batch: Batch, ctx: CommitContext) -> None:
        while len(self.waiters):
            job = self.table.pop_ready()
            if job is None:
                return
            waiter = self.waiters.pop_first()
            assert waiter is not None
            self._grant(job, waiter.worker_id, waiter.request_id, batch)

    def _heartbeat(self, command: Heartbeat, batch: Batch) -> None:
        job = self.table.get(command.job_id)
        if job is None:
            raise JobNotFound(command.job_id)
        if job.status is not JobStatus.CLAIMED or job.claimed_by != command.worker_id:
            raise LeaseLost(job.id, command.worker_id)
        deadline = self._clock.now + self.config.heartbeat_timeout
        self.table.set_lease(job.id, deadline)
        # Released once a later operation confirms we still own the state: only then
        # is the promise safe from a successor that would hand the job out again.
        batch.hold(Reply(command.request_id, LeaseExtended(job.id, deadline)))

    def _complete(self, command: Complete, batch: Batch, ctx: CommitContext) -> None:
        job = self._own_job(command.job_id, command.worker_id, Completed)
        if job is None:  # a repeat of an answer given before the job left the state
            batch.hold(Reply(command.request_id, Completed(command.job_id)))
            return
        if job.status is JobStatus.CLAIMED:
            self._finish(job, JobStatus.COMPLETED, job.last_error, batch, ctx)
        elif job.status is not JobStatus.COMPLETED:
            raise LeaseLost(job.id, command.worker_id)
        # A repeated complete is answered like the first, once that one is durable.
        batch.hold(Reply(command.request_id, Completed(job.id)))

    def _fail(self, command: Fail, batch: Batch, ctx: CommitContext) -> None:
        job = self._own_job(command.job_id, command.worker_id, Failed)
        if job is None:
            outcome = self.recent.recall(command.job_id, command.worker_id, self._clock.now)
            batch.hold(Reply(command.request_id, outcome))
            return
        if job.status is JobStatus.CLAIMED:
            dead = not command.requeue or self._out_of_attempts(job)
            self._release_job(job, command.error or "failed by worker", dead, batch, ctx)
            if not dead:
                # Requeued: the job stays in the state, but this worker no longer holds
                # it, so a repeat must be recognised from memory.
                outcome = Failed(job.id, dead=False)
                self.recent.remember(job.id, command.worker_id, outcome, self._clock.now)
        elif job.status is JobStatus.DEAD:
            dead = True
        else:
            raise LeaseLost(job.id, command.worker_id)
        batch.hold(Reply(command.request_id, Failed(job.id, dead)))
        self._serve_waiters(batch, ctx)

    def _own_job(
        self, job_id: str, worker_id: str, kind: type[Completed] | type[Failed]
    ) -> Job | None:
        """The job ``worker_id`` holds (or finished), or None when it is a repeat of an
        answer of ``kind`` given earlier. Raises JobNotFound / LeaseLost otherwise."""
        job = self.table.get(job_id)
        if job is not None and job.claimed_by == worker_id:
            return job
        remembered = self.recent.recall(job_id, worker_id, self._clock.now)
        if isinstance(remembered, kind):
            return None
        if job is None and remembered is None:
            raise JobNotFound(job_id)
        raise LeaseLost(job_id, worker_id)

    def _release(self, command: Release, batch: Batch, ctx: CommitContext) -> None:
        job = self.table.get(command.job_id)
        if job is None:
            raise JobNotFound(command.job_id)
        if job.status is not JobStatus.CLAIMED or job.claimed_by != command.worker_id:
            raise LeaseLost(job.id, command.worker_id)
        self.table.replace(
            attrs.evolve(
                job,
                status=JobStatus.READY,
                attempts=max(0, job.attempts - 1),
                claimed_by=None,
                claimed_at=None,
            )
        )
        batch.changed(self._clock.now)
        batch.hold(Reply(command.request_id, Released(job.id)))
        self._serve_waiters(batch, ctx)

    def _out_of_attempts(self, job: Job) -> bool:
        limit = self.config.max_attempts
        return limit is not None and job.attempts >= limit

    def _release_job(
        self, job: Job, reason: str, dead: bool, batch: Batch, ctx: CommitContext
    ) -> None:
        """A claimed job goes back to the queue, or to the archive as dead."""
        if dead:
            self._finish(job, JobStatus.DEAD, reason, batch, ctx)
            return
        self.table.replace(
            attrs.evolve(
                job, status=JobStatus.READY, claimed_by=None, claimed_at=None, last_error=reason
            )
        )
        batch.changed(self._clock.now)

    def _finish(
        self, job: Job, status: JobStatus, error: str | None, batch: Batch, ctx: CommitContext
    ) -> None:
        wall = self._clock.wall
        key = self._archive_key(archive_bucket(wall, self.config.archive_bucket_format), ctx)
        self.table.replace(
            attrs.evolve(job, status=status, finished_at=wall, archive_key=key, last_error=error)
        )
        batch.archive_keys.add(key)
        batch.changed(self._clock.now)

    def _archive_key(self, bucket: str, ctx: CommitContext) -> str:
        # The key names the revision that commits the change, so keys never repeat.
        return archive_key(self.config.archive_prefix, bucket, ctx.epoch, ctx.commit_revision)

    # -- time --------------------------------------------------------------------------

    def expire(self, batch: Batch, ctx: CommitContext) -> None:
        """Requeue (or dead-letter) jobs whose lease ran out; answer claims whose wait
        ran out."""
        now = self._clock.now
        for job_id in self.table.expired_leases(now):
            job = self.table.get(job_id)
            if job is None or job.status is not JobStatus.CLAIMED:
                continue
            reason = f"lease expired: no heartbeat from worker {job.claimed_by!r}"
            # The worker no longer holds it, whatever happens next: a late complete or
            # fail from it is answered LeaseLost.
            released = attrs.evolve(job, claimed_by=None, claimed_at=None)
            self._release_job(released, reason, self._out_of_attempts(job), batch, ctx)
        self._serve_waiters(batch, ctx)
        for request_id in self.waiters.expire(now):
            self._out.reply(Reply(request_id, NothingToClaim()))

    def next_deadline(self) -> float | None:
        """The earliest lease or wait deadline (None: nothing is timed)."""
        deadlines = (self.table.next_lease_deadline(), self.waiters.next_deadline())
        timed = [d for d in deadlines if d is not None]
        return min(timed) if timed else None

    def answer_waiters(self, error: OsqueueError | None = None) -> None:
        """Answer every waiting claim: ``NothingToClaim``, or ``error``."""
        for request_id in self.waiters.take_all():
            if error is None:
                self._out.reply(Reply(request_id, NothingToClaim()))
            else:
                self._out.reply(Reply(request_id, error=error))

    # -- for the commit protocol -------------------------------------------------------

    def load(self, jobs: list[Job], next_seq: int) -> None:
        """Replace the head state with a state read from storage (at takeover)."""
        self.table = JobTable(jobs, next_seq)

    def start_leases(self) -> None:
        """After a takeover: every claimed job gets a full fresh lease from now (leases
        are not persisted; the predecessor's promises have all run out by then)."""
        deadline = self._clock.now + self.config.heartbeat_timeout
        for job in self.table:
            if job.status is JobStatus.CLAIMED:
                self.table.set_lease(job.id, deadline)

    def take_back(self, grant: Grant, batch: Batch, ctx: CommitContext) -> bool:
        """Undo a grant whose caller left or was answered an error: the job returns to
        its place, as it was (this claim does not count). False if the job changed since
        the grant (expired, completed...), and then nothing is done."""
        if self.table.get(grant.after.id) is not grant.after:
            return False
        self.table.replace(grant.before)
        batch.changed(self._clock.now)
        self._serve_waiters(batch, ctx)
        return True

    def archive_contents(self, key: str) -> tuple[bytes, list[ArchivedJob]]:
        """The archive object for ``key`` and what identifies its jobs."""
        jobs = self.table.archived_under(key)
        data = encode_archive(key, self.table.fragments(jobs))
        return data, [(job.id, job.seq, job.payload) for job in jobs]

    def drop_archived(self, key: str, batch: Batch) -> None:
        """The archive object for ``key`` is durable: its jobs leave the head state (the
        next write drops them), and their workers' answers are remembered for a while."""
        now = self._clock.now
        for job in self.table.archived_under(key):
            self.table.remove(job.id)
            if job.claimed_by is not None:
                outcome: Completed | Failed = (
                    Completed(job.id)
                    if job.status is JobStatus.COMPLETED
                    else Failed(job.id, dead=True)
                )
                self.recent.remember(job.id, job.claimed_by, outcome, now)
        batch.changed(now)

    def reassign_archive(self, key: str, batch: Batch, ctx: CommitContext) -> str:
        """``key`` turned out to hold somebody else's jobs: move ours to a fresh key
        (same time bucket), committed with the open batch. Returns the new key."""
        jobs = self.table.archived_under(key)
        bucket = key[len(self.config.archive_prefix) :].split("/", 1)[0]
        new_key = self._archive_key(bucket, ctx)
        for job in jobs:
            self.table.replace(attrs.evolve(job, archive_key=new_key))
        batch.archive_keys.add(new_key)
        batch.changed(self._clock.now)
        return new_key
