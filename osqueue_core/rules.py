"""The queue's semantics: what each command and the passing of time do to the jobs.

:class:`JobRules` owns the broker's in-memory **head** state (the job table, waiting
claims, recently given answers, remembered idempotency keys) and applies commands to
it. It never issues a storage operation and never decides when anything is written: it
changes jobs, marks the open batch changed, and holds each reply in that batch until
the commit protocol (:mod:`osqueue_core.commit`) has made it safe. What it needs from
the commit protocol arrives as a :class:`CommitContext`; what the commit protocol needs
from it (the encoded jobs, archive contents, fresh leases after a takeover) is the "for
the commit protocol" section below. Nothing else crosses between the two.

docs/lifecycle.md has the job state diagram these rules implement.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from osqueue_core.archive import archive_key
from osqueue_core.batch import Batch, Grant
from osqueue_core.checks import check_command
from osqueue_core.clock import Clock
from osqueue_core.codec import ArchivedJob, encode_archive
from osqueue_core.commands import (
    Cancel,
    Claim,
    Command,
    Complete,
    Fail,
    GetJob,
    Heartbeat,
    ListDead,
    NewJob,
    Purge,
    Push,
    PushBatch,
    Redrive,
    Release,
    RequestId,
)
from osqueue_core.config import BrokerConfig, default_job_seq
from osqueue_core.effects import Reply
from osqueue_core.errors import (
    CorruptState,
    JobAlreadyFinished,
    JobNotDead,
    JobNotFound,
    LeaseLost,
    OsqueueError,
    Overloaded,
    SegmentMissing,
    StateDiverged,
)
from osqueue_core.job import Job, JobSpec, JobStatus
from osqueue_core.limits import MAX_ID_LENGTH
from osqueue_core.notices import LeaseExpired
from osqueue_core.outbox import Outbox
from osqueue_core.queries import job_info, list_dead, select_dead
from osqueue_core.recent import RecentOutcomes
from osqueue_core.remembered import RememberedKey, RememberedKeys
from osqueue_core.results import (
    Cancelled,
    Claimed,
    ClaimedBatch,
    Completed,
    Failed,
    LeaseExtended,
    NothingToClaim,
    Purged,
    Pushed,
    PushedBatch,
    Redriven,
    Released,
)
from osqueue_core.segment_refs import SegmentRef
from osqueue_core.segment_windows import READ_AHEAD_SECONDS
from osqueue_core.table import JobTable, SegmentNeeded
from osqueue_core.transitions import Transitions, max_attempts
from osqueue_core.waiters import Waiter, WaitingClaims

#: Errors that depend on the head state: only the current owner may give them, so they
#: are held until an operation confirms ownership (a replaced broker answers
#: BrokerReplaced instead).
_STATE_ERRORS = (LeaseLost, JobNotFound, JobNotDead, JobAlreadyFinished)

#: Errors that condemn the stored state, not the command that found them (a segment
#: record no job can be made of): they reach the broker, which fails and never writes
#: again, rather than being answered to one caller while it serves on.
_BROKER_ERRORS = (CorruptState, SegmentMissing)


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
            return sum(
                len(item.payload if isinstance(item, NewJob) else item) for item in command.payloads
            )
        case Complete():
            return len(command.result or b"")
    return 0


class JobRules:
    """Applies commands and the passing of time to the head state. See the module
    docstring."""

    def __init__(self, config: BrokerConfig, clock: Clock, outbox: Outbox) -> None:
        self.config = config
        self._clock = clock
        self._out = outbox
        self.table = self._table()
        #: The first epoch of this queue's life (written with every state).
        self.segment_floor = 1
        self.moves = Transitions(config, clock, self.table)
        self.waiters = WaitingClaims()
        self.recent = RecentOutcomes(config.reply_memory, config.reply_memory_size)
        self.remembered = RememberedKeys(config.max_remembered_keys)

    def check(self, command: object) -> None:
        """Refuse a malformed command before anything is done with it."""
        check_command(self.config, command)

    # -- applying ----------------------------------------------------------------------

    def apply(self, command: Command, batch: Batch, ctx: CommitContext) -> None:
        """Apply a checked command to the head state; its reply is held in ``batch`` or
        (for errors that need no confirmation) sent at once."""
        try:
            match command:
                case Push():
                    [(job_id, matched)] = self._push([command.new_job()], batch, ctx)
                    batch.hold(Reply(command.request_id, Pushed(job_id, matched)))
                    self._serve_waiters((command.queue,), batch, ctx)
                case PushBatch():
                    # All in the open batch: durable in one write, or not at all.
                    jobs = command.new_jobs()
                    pushed = self._push(jobs, batch, ctx)
                    existing = tuple(e for _, e in pushed)
                    result = PushedBatch(
                        tuple(i for i, _ in pushed), existing if any(existing) else ()
                    )
                    batch.hold(Reply(command.request_id, result))
                    self._serve_waiters({job.queue for job in jobs}, batch, ctx)
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
                case Cancel():
                    self._cancel(command, batch, ctx)
                case GetJob():
                    job = self._get(command.job_id)
                    info = job_info(job, self.config, self._clock.wall)
                    batch.hold(Reply(command.request_id, info))
                case ListDead():
                    answer = list_dead(self.table, self.config, command, self._clock.wall)
                    batch.hold(Reply(command.request_id, answer))
                case Redrive():
                    self._redrive(command, batch, ctx)
                case Purge():
                    self._purge(command, batch, ctx)
        except _STATE_ERRORS as error:
            batch.hold(Reply(command.request_id, error=error))
        except _BROKER_ERRORS as error:
            # Answered here (once: not also as a held reply), since the broker's failure
            # answers only what is queued and held, not the command being applied.
            batch.withdraw(command.request_id)
            self._out.reply(Reply(command.request_id, error=error))
            raise
        except OsqueueError as error:
            self._out.reply(Reply(command.request_id, error=error))

    @staticmethod
    def _key(ctx: CommitContext) -> tuple[int, int]:
        """What names the archive key of a job finished now: (epoch, revision)."""
        return ctx.epoch, ctx.commit_revision

    def _get(self, job_id: str) -> Job:
        job = self.table.lookup(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    # -- pushing -----------------------------------------------------------------------

    def _push(self, jobs: list[NewJob], batch: Batch, ctx: CommitContext) -> list[tuple[str, bool]]:
        """Add ``jobs``; a job whose key matches one pushed before (in the state, inline
        or untouched in a segment; in this batch; or remembered) is not added and
        answers that job's id. The caller
        holds the push's reply, then serves waiting claims (in that order: a client
        learns of a job before anybody is granted it)."""
        wall = self._clock.wall
        self.remembered.forget_expired(wall)
        matched: list[str | None] = [None] * len(jobs)
        first_with_key: dict[tuple[str, str], int] = {}
        for index, job in enumerate(jobs):
            if job.key is None:
                continue
            identity = (job.queue, job.key)
            existing = self.table.by_key(*identity)
            found = existing.id if existing is not None else None
            if found is None:
                found = self.table.untouched_with_key(*identity)
            if found is None:
                found = self.remembered.recall(job.queue, job.key, wall)
            if found is None and identity in first_with_key:
                found = f"#{first_with_key[identity]}"  # the earlier item of this batch
            first_with_key.setdefault(identity, index)
            matched[index] = found
        new = [i for i, found in enumerate(matched) if found is None]
        ids = self._new_ids(len(new), ctx)  # all checked before any is added
        given: dict[int, str] = {}
        for index, job_id in zip(new, ids, strict=True):
            self._add_job(job_id, jobs[index], batch)
            given[index] = job_id
        answers = []
        for index, found in enumerate(matched):
            if found is None:
                answers.append((given[index], False))
            elif found.startswith("#") and int(found[1:]) in given:
                answers.append((given[int(found[1:])], True))
            else:
                answers.append((found, True))
        return answers

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

    def _add_job(self, job_id: str, new: NewJob, batch: Batch) -> Job:
        wall = self._clock.wall
        run_at = wall + new.delay if new.delay is not None else new.run_at
        # (By position: keywords cost twice as much, on every push.)
        born = JobSpec(
            new.payload,
            wall,  # created_at
            new.queue,
            new.priority,
            # A time already past is no constraint: not stored.
            run_at if run_at is not None and run_at > wall else None,
            new.key,
            new.max_attempts,
        )
        job = Job(job_id, self.table.next_seq, born)
        self.table.add(job)
        batch.changed(self._clock.now)
        batch.payload_bytes += len(new.payload)
        return job

    # -- claiming ----------------------------------------------------------------------

    def _claim(self, command: Claim, batch: Batch, ctx: CommitContext) -> None:
        taken = self._take(command.queues, command.count, command.worker_id, batch)
        if taken:
            self._grant(taken, command.request_id, command.count > 1, batch)
        elif command.wait > 0 and ctx.waiting_allowed:
            assert self.table.peek_ready(command.queues) is None, "claim applied too early"
            if len(self.waiters) >= self.config.max_waiting_claims:
                raise Overloaded(
                    f"{len(self.waiters)} claims are already waiting for a job (the "
                    "broker's limit): retry later"
                )
            deadline = self._clock.now + command.wait
            self.waiters.add(
                Waiter(
                    command.request_id,
                    command.worker_id,
                    deadline,
                    command.queues,
                    command.count,
                )
            )
        else:
            self._out.reply(Reply(command.request_id, NothingToClaim()))

    def _take(
        self, queues: Iterable[str], count: int, worker_id: str, batch: Batch
    ) -> list[tuple[Job, Job]]:
        """Claim up to ``count`` due jobs of ``queues`` for ``worker_id``, best first;
        returns (before, after) of each. Stops at a job whose segment is not loaded
        (and asks for it)."""
        taken: list[tuple[Job, Job]] = []
        queues = tuple(queues)
        deadline = self._clock.now + self.config.heartbeat_timeout
        while len(taken) < count:
            job = self.table.best_ready(queues)
            if isinstance(job, SegmentNeeded):
                self.table.segments.demanded[job.key] = None
                break
            if job is None:
                break
            # Claimed at once: a job best_ready took from a segment is in no ready heap.
            taken.append((job, self.moves.claim(job, worker_id, deadline, batch)))
        return taken

    def _grant(
        self, taken: list[tuple[Job, Job]], request_id: RequestId, many: bool, batch: Batch
    ) -> None:
        batch.grants[request_id] = Grant(request_id, tuple(taken))
        claims = tuple(self._claimed(after) for _, after in taken)
        result = ClaimedBatch(claims) if many else claims[0]
        batch.hold(Reply(request_id, result))

    def _claimed(self, job: Job) -> Claimed:
        deadline = self.table.lease_deadline(job.id)
        assert deadline is not None
        limit = max_attempts(job, self.config)
        return Claimed(job.id, job.payload, job.attempts, deadline, job.queue, job.priority, limit)

    def _serve_waiters(self, queues: Iterable[str], batch: Batch, ctx: CommitContext) -> None:
        """Hand jobs that became due in ``queues`` to the claims waiting for them, the
        longest-waiting claim first."""
        if not len(self.waiters):
            return
        due = {queue for queue in queues if self.table.has_ready(queue)}
        while due:
            waiter = self.waiters.pop_earliest(due)
            if waiter is None:
                return
            taken = self._take(waiter.queues, waiter.count, waiter.worker_id, batch)
            if not taken:
                # Its best job is in a segment being read: it waits on, and is served
                # when that segment is loaded.
                self.waiters.add(waiter)
                due -= set(waiter.queues)
                continue
            self._grant(taken, waiter.request_id, waiter.count > 1, batch)
            due = {queue for queue in due if self.table.has_ready(queue)}

    # -- working on a claimed job ------------------------------------------------------

    def _heartbeat(self, command: Heartbeat, batch: Batch) -> None:
        job = self._get(command.job_id)
        if job.status is not JobStatus.CLAIMED or job.claimed_by != command.worker_id:
            raise LeaseLost(job.id, command.worker_id)
        deadline = self._clock.now + self.config.heartbeat_timeout
        self.table.set_lease(job.id, deadline)
        # Released once a later operation confirms we still own the state: only then
        # is the promise safe from a successor that would hand the job out again.
        reply = LeaseExtended(job.id, deadline, job.cancel_requested)
        batch.hold(Reply(command.request_id, reply))

    def _complete(self, command: Complete, batch: Batch, ctx: CommitContext) -> None:
        job = self._own_job(command.job_id, command.worker_id, Completed)
        if job is None:  # a repeat of an answer given before the job left the state
            batch.hold(Reply(command.request_id, Completed(command.job_id)))
            return
        if job.status is JobStatus.CLAIMED:
            result = command.result
            self.moves.finish(
                job, JobStatus.COMPLETED, job.last_error, batch, *self._key(ctx), result=result
            )
            batch.payload_bytes += len(result or b"")
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
            reason = command.error or "failed by worker"
            outcome = self.moves.give_up(job, reason, command.requeue, batch, *self._key(ctx))
            if not outcome.dead:
                # Retried: the job stays in the state, but this worker no longer holds
                # it, so a repeat must be recognised from memory.
                self.recent.remember(job.id, command.worker_id, outcome, self._clock.now)
        elif job.status in (JobStatus.DEAD, JobStatus.CANCELLED):
            outcome = Failed(job.id, True, None, job.status is JobStatus.CANCELLED)
        else:
            raise LeaseLost(job.id, command.worker_id)
        # Answered before a waiting claim is served the job: replies come out in the
        # order their changes took effect.
        batch.hold(Reply(command.request_id, outcome))
        self._serve_waiters((job.queue,), batch, ctx)

    def _own_job(
        self, job_id: str, worker_id: str, kind: type[Completed] | type[Failed]
    ) -> Job | None:
        """The job ``worker_id`` holds (or finished), or None when it is a repeat of an
        answer of ``kind`` given earlier. Raises JobNotFound / LeaseLost otherwise."""
        job = self.table.lookup(job_id)
        if job is not None and job.claimed_by == worker_id:
            return job
        remembered = self.recent.recall(job_id, worker_id, self._clock.now)
        if isinstance(remembered, kind):
            return None
        if job is None and remembered is None:
            raise JobNotFound(job_id)
        raise LeaseLost(job_id, worker_id)

    def _release(self, command: Release, batch: Batch, ctx: CommitContext) -> None:
        job = self._get(command.job_id)
        if job.status is not JobStatus.CLAIMED or job.claimed_by != command.worker_id:
            raise LeaseLost(job.id, command.worker_id)
        if job.cancel_requested:
            reason = "cancelled (released)"
            self.moves.finish(job, JobStatus.CANCELLED, reason, batch, *self._key(ctx))
        else:
            self.moves.requeue(job, max(0, job.attempts - 1), batch)
        batch.hold(Reply(command.request_id, Released(job.id)))
        self._serve_waiters((job.queue,), batch, ctx)

    # -- finishing, dead letters, cancelling -------------------------------------------

    def _cancel(self, command: Cancel, batch: Batch, ctx: CommitContext) -> None:
        job = self._get(command.job_id)
        if job.leaving and job.status is JobStatus.CANCELLED:
            at_once = True
        elif job.status is JobStatus.READY:
            self.table.bring_inline(job)  # an untouched job leaves its segment
            self.moves.finish(job, JobStatus.CANCELLED, job.last_error, batch, *self._key(ctx))
            at_once = True
        elif job.status is JobStatus.CLAIMED:
            self.moves.cancel_claimed(job, batch)
            at_once = False
        else:
            raise JobAlreadyFinished(job.id, job.status.value)
        batch.hold(Reply(command.request_id, Cancelled(job.id, at_once)))

    def _redrive(self, command: Redrive, batch: Batch, ctx: CommitContext) -> None:
        jobs = select_dead(self.table, command.job_ids, command.queue)
        for job in jobs:
            self.moves.redrive(job, batch)
        batch.hold(Reply(command.request_id, Redriven(tuple(job.id for job in jobs))))
        self._serve_waiters({job.queue for job in jobs}, batch, ctx)

    def _purge(self, command: Purge, batch: Batch, ctx: CommitContext) -> None:
        jobs = select_dead(self.table, command.job_ids, command.queue)
        for job in jobs:
            self.moves.archive_dead(job, batch, *self._key(ctx))
        batch.hold(Reply(command.request_id, Purged(tuple(job.id for job in jobs))))

    # -- time --------------------------------------------------------------------------

    def expire(self, batch: Batch, ctx: CommitContext) -> list[Claim]:
        """What the passing of time does: leases that ran out count as failed attempts,
        delayed jobs fall due, old dead letters leave for the archive, and claims whose
        wait ran out are answered. Returns those of them whose best job is in a segment
        being read (it fell due as they waited: a broker that never spills would have
        handed it over): claims without a wait, to apply once that read has landed."""
        now = self._clock.now
        touched: set[str] = set()
        for job_id in self.table.expired_leases(now):
            job = self.table.get(job_id)
            if job is None or job.status is not JobStatus.CLAIMED:
                continue
            reason = f"lease expired: no heartbeat from worker {job.claimed_by!r}"
            # The worker no longer holds it, whatever happens next: a late complete or
            # fail from it is answered LeaseLost.
            released = attrs.evolve(job, claimed_by=None, claimed_at=None)
            worker_id = job.claimed_by or ""
            batch.notices.append(LeaseExpired(job.id, job.queue, worker_id, job.attempts))
            batch.tally.expired_leases += 1
            self.moves.give_up(released, reason, True, batch, *self._key(ctx))
            touched.add(job.queue)
        touched |= self.table.promote_due()
        self.moves.expire_dead(batch, *self._key(ctx))
        self._serve_waiters(touched, batch, ctx)
        late = []
        for waiter in self.waiters.expire(now):
            if self.table.peek_ready(waiter.queues) is not None:
                queues, count = waiter.queues, waiter.count
                late.append(Claim(waiter.request_id, waiter.worker_id, 0.0, queues, count))
            else:
                self._out.reply(Reply(waiter.request_id, NothingToClaim()))
        return late

    def next_deadline(self) -> float | None:
        """The earliest time (on the clock of ``now``) something above is due."""
        deadlines = [self.table.next_lease_deadline(), self.waiters.next_deadline()]
        walls = [self.table.next_due_at(), self.moves.next_dead_expiry()]
        clock = self._clock
        # Wall-clock times become times on the clock of ``now`` as of this input.
        deadlines += [clock.now + max(0.0, at - clock.wall) for at in walls if at is not None]
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

    def load(
        self,
        jobs: list[Job],
        next_seq: int,
        keys: Iterable[RememberedKey] = (),
        refs: Iterable[SegmentRef] = (),
        segment_floor: int = 1,
    ) -> None:
        """Replace the head state with a state read from storage (at takeover). Its
        segments are not read: their references are enough to serve."""
        self.table = self.moves.table = self._table(jobs, next_seq, refs)
        self.remembered = RememberedKeys(self.config.max_remembered_keys, keys)
        self.segment_floor = segment_floor

    def _table(
        self, jobs: Iterable[Job] = (), next_seq: int = 0, refs: Iterable[SegmentRef] = ()
    ) -> JobTable:
        config = self.config
        lead = READ_AHEAD_SECONDS if config.read_ahead else 0.0
        return JobTable(
            self._clock,
            jobs,
            next_seq,
            refs,
            spill=config.spills,
            window_lead=lead,
            # The default inverse itself, when there is no other: the table then checks
            # default ids with its fast path.
            seq_of=default_job_seq if config.job_id_seq is None else config.seq_of,
        )

    def segment_loaded(self, queues: Iterable[str], batch: Batch, ctx: CommitContext) -> None:
        """A segment was read: claims waiting for its jobs can be served now."""
        self._serve_waiters(queues, batch, ctx)

    def encoded_keys(self) -> bytes:
        """The remembered keys to write with the state, encoded (expired ones
        dropped)."""
        self.remembered.forget_expired(self._clock.wall)
        return self.remembered.encoded()

    def start_leases(self) -> None:
        """After a takeover: every claimed job gets a full fresh lease from now (leases
        are not persisted; the predecessor's promises have all run out by then)."""
        deadline = self._clock.now + self.config.heartbeat_timeout
        for job in self.table:
            if job.status is JobStatus.CLAIMED:
                self.table.set_lease(job.id, deadline)

    def take_back(self, grant: Grant, batch: Batch, ctx: CommitContext) -> bool:
        """Undo a grant whose caller left or was answered an error: each job returns to
        its place, as it was (this claim does not count); a job cancelled since the
        grant ends cancelled (nobody holds it). A job that changed otherwise (expired,
        completed...) is left alone; False if every job had."""
        restored = False
        for before, after in grant.jobs:
            current = self.table.get(after.id)
            if current is after:
                self.table.replace(before)
                restored = True
            elif current is not None and current == attrs.evolve(after, cancel_requested=True):
                reason = "cancelled (its claim was withdrawn)"
                self.moves.finish(current, JobStatus.CANCELLED, reason, batch, *self._key(ctx))
                restored = True
        if restored:
            batch.changed(self._clock.now)
            self._serve_waiters({before.queue for before, _ in grant.jobs}, batch, ctx)
        return restored

    def archive_contents(self, key: str) -> tuple[bytes, list[ArchivedJob]]:
        """The archive object for ``key`` and what identifies its jobs."""
        jobs = self.table.archived_under(key)
        data = encode_archive(key, self.table.fragments(jobs))
        return data, [(job.id, job.seq, job.payload) for job in jobs]

    def drop_archived(self, key: str, batch: Batch) -> None:
        """The archive object for ``key`` is durable: its jobs leave the head state (the
        next write drops them, and remembers their idempotency keys), and their
        workers' answers are remembered for a while."""
        now = self._clock.now
        retention = self.config.idempotency_retention
        for job in self.table.archived_under(key):
            self.table.remove(job.id)
            if job.born.key is not None:
                until = (job.finished_at or self._clock.wall) + retention
                self.remembered.remember(RememberedKey(job.queue, job.born.key, job.id, until))
            if job.claimed_by is not None:
                outcome: Completed | Failed = (
                    Completed(job.id)
                    if job.status is JobStatus.COMPLETED
                    else Failed(job.id, True, None, job.status is JobStatus.CANCELLED)
                )
                self.recent.remember(job.id, job.claimed_by, outcome, now)
        batch.changed(now)

    def reassign_archive(self, key: str, batch: Batch, ctx: CommitContext) -> str:
        """``key`` turned out to hold somebody else's jobs: move ours to a fresh key
        (same time bucket), committed with the open batch. Returns the new key."""
        jobs = self.table.archived_under(key)
        bucket = key[len(self.config.archive_prefix) :].split("/", 1)[0]
        new_key = archive_key(self.config.archive_prefix, bucket, *self._key(ctx))
        for job in jobs:
            self.table.replace(attrs.evolve(job, archive_key=new_key))
        batch.archive_keys.add(new_key)
        batch.changed(self._clock.now)
        return new_key
