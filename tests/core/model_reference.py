"""The reference model of tests/core/test_model.py: what the model believes about the
jobs, learnt from acknowledged replies only, and the check of every reply against it.

The model only believes what was acknowledged, and allows for what was not: a push, a
claim or a redrive answered with an error (or not at all) may still have landed. Three
ideas carry it:

* **Replies come out in the order their commands took effect.** A broker holds each
  reply in the batch of the command, releases a batch's replies when its write lands,
  and batches land in order; a broker that lost ownership answers errors. So what
  earlier replies taught the model held when a later reply's command was applied.
* **Known ready** (``fresh``): a job acknowledged pushed, released or redriven, never
  handed out since as far as the model can tell, with its exact attempts. Anything
  that may hand out a job unseen (a claim answered with an error, a cancelled claim, a
  write that lands late, a crash) bumps the ``generation`` and forgets them all; an
  acknowledgement only makes a job known ready if nothing of the kind happened since
  its request was sent.
* **Time**: a command applied between two steps saw a wall clock between the lowest
  and the highest of those steps (:class:`~tests.core.model_basics.Timeline`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from hypothesis import event

from osqueue_core import (
    BrokerConfig,
    BrokerStopping,
    Cancel,
    Cancelled,
    Claim,
    Claimed,
    ClaimedBatch,
    Command,
    Complete,
    Completed,
    DeadLetters,
    Fail,
    Failed,
    GetJob,
    Heartbeat,
    InvalidArgument,
    JobAlreadyFinished,
    JobInfo,
    JobNotDead,
    JobNotFound,
    JobStatus,
    LeaseExtended,
    LeaseLost,
    ListDead,
    NewJob,
    NothingToClaim,
    OsqueueError,
    Overloaded,
    Purge,
    Purged,
    Push,
    PushBatch,
    Pushed,
    PushedBatch,
    Redrive,
    Redriven,
    Release,
    Released,
    Reply,
)

from .model_basics import (
    EPSILON,
    ArchiveReader,
    RecordingStore,
    Spec,
    Timeline,
    seq_of,
)
from .model_endings import (
    BOGUS_ID,
    acked_cancel,
    acked_fail,
    acked_purge,
    acked_redrive,
    acked_release,
    check_cancel_expectation,
    check_dead_letters,
    check_info,
)
from .model_history import Sent

#: Errors a Redrive/Purge gets only when it changed nothing.
NOTHING_DONE = (JobNotDead, JobNotFound, InvalidArgument, Overloaded, BrokerStopping)


@attrs.define
class Hold:
    """An acknowledged claim: who holds the job until when (broker clock), with how many
    attempts, acknowledged in which generation."""

    worker: str
    deadline: float
    attempts: int
    generation: int


@attrs.frozen
class Fresh:
    """A job known ready, never handed out since ``since`` (a step)."""

    since: int
    attempts: int
    queue: str
    priority: int
    #: It is surely due once the wall clock has passed this.
    due_by: float

    def rank(self, job_id: str) -> tuple[int, int]:
        return -self.priority, seq_of(job_id)


class Reference:
    """What the model believes, and the checks. The state machine tells it about every
    request it sends (:meth:`sent` and the ``*_sent`` hooks), every reply
    (:meth:`on_reply`) and every event that may hand out a job unseen
    (:meth:`uncertain`)."""

    def __init__(
        self,
        config: BrokerConfig,
        timeline: Timeline,
        store: RecordingStore,
        now: Callable[[], float],
    ) -> None:
        self.config = config
        self.timeline = timeline
        self.store = store
        self.now = now
        self.archives = ArchiveReader()
        #: Brokers started so far (with one ever, "nothing to claim" is checkable), and
        #: the step each (by incarnation) started at: it saw no wall clock from before.
        self.brokers_started = 0
        self.broker_started: dict[str, int] = {}
        self.rules_run = 0
        self.requests: dict[int, tuple[Command, int]] = {}  # command, step sent
        self.answered: set[int] = set()
        self.acked_at: dict[int, int] = {}
        #: The step at which each state object's bytes were first handed to storage.
        self.emitted: dict[bytes, int] = {}
        #: What every pushed item asked for, by its (unique) payload.
        self.specs: dict[bytes, Spec] = {}
        #: Job id -> payload, for every job the model has heard of.
        self.payload_of: dict[str, bytes] = {}
        #: Acknowledged pushes that created their job; ids acknowledged as existing.
        self.created: dict[str, bytes] = {}
        self.created_step: dict[str, int] = {}
        self.existing: dict[str, tuple[str, str]] = {}
        self.key_owner: dict[tuple[str, str], str] = {}
        self.generation = 0
        self.generation_at: dict[int, int] = {}
        self.fresh: dict[str, Fresh] = {}
        self.holds: dict[str, Hold] = {}
        #: (job, worker) pairs the worker gave up on with a complete, fail or release.
        self.relinquished: set[tuple[str, str]] = set()
        self.granted_step: dict[str, int] = {}
        #: Job id -> (a wall time it is not claimable before, the step from which on).
        self.floors: dict[str, list[tuple[float, int]]] = {}
        self.acked_completions: set[str] = set()
        self.results: dict[str, set[bytes | None]] = {}
        self.fails_sent: dict[tuple[str, str], list[tuple[int, bool]]] = {}
        #: Dead jobs no redrive may have brought back (the step they were known dead).
        self.known_dead: dict[str, int] = {}
        self.known_purged: set[str] = set()
        self.known_cancelled: set[str] = set()
        #: Acknowledged cancels of claimed jobs (the step): never claimed again.
        self.cancel_marked: dict[str, int] = {}
        self.cancels: dict[str, list[int]] = {}
        self.cancel_expect: dict[int, tuple[str, Hold | None]] = {}
        self.cancelled_claims: set[int] = set()
        self.redrives: list[Sent] = []
        self.purges: list[Sent] = []
        self.not_applied: set[int] = set()

    # -- what the model sends ----------------------------------------------------------

    def sent(self, rid: int, command: Command) -> None:
        self.requests[rid] = (command, self.timeline.step)
        self.generation_at[rid] = self.generation

    def uncertain(self) -> None:
        """A job may have been handed out unseen: forget what was known ready."""
        self.generation += 1
        self.fresh.clear()

    def new_job(self, data: bytes, options: tuple[Any, ...] | None, rid: int) -> NewJob:
        """A NewJob with a payload no other push has: the model tells every job apart by
        it. ``options``: queue, priority, (delay, run-at offset), key, max_attempts."""
        payload = f"{len(self.specs)}:".encode() + data
        step = self.timeline.step
        if options is None:
            self.specs[payload] = Spec(rid, step)
            return NewJob(payload)
        queue, priority, (delay, offset), key, max_attempts = options
        run_at = None if offset is None else self.timeline.walls[-1] + offset
        self.specs[payload] = Spec(rid, step, queue, priority, delay, run_at, key, max_attempts)
        return NewJob(payload, queue, priority, delay, run_at, key, max_attempts)

    def job_ids(self) -> list[str]:
        """Every job id the model has heard of, and one nobody pushed."""
        return [*sorted(self.payload_of), BOGUS_ID]

    def held(self, pick: int) -> tuple[str, str]:
        job_id = sorted(self.holds)[pick % len(self.holds)]
        return job_id, self.holds[job_id].worker

    def relinquishing(self, job_id: str, worker: str) -> None:
        """``worker`` sends a complete, fail or release for ``job_id``."""
        self.relinquished.add((job_id, worker))

    def complete_sent(self, job_id: str, result: bytes | None) -> None:
        self.results.setdefault(job_id, set()).add(result)

    def fail_sent(self, rid: int, job_id: str, worker: str, requeue: bool) -> None:
        self.fails_sent.setdefault((job_id, worker), []).append((rid, requeue))

    def cancel_sent(self, rid: int, job_id: str) -> None:
        """A cancel of a job known ready must cancel it at once; of one known held (and
        still held when answered), mark it."""
        hold = self.holds.get(job_id)
        if job_id in self.fresh:
            expected: tuple[str, Hold | None] = ("ready", None)
        elif (
            hold is not None
            and hold.generation == self.generation
            and (job_id, hold.worker) not in self.relinquished
        ):
            expected = ("claimed", hold)
        else:
            expected = ("", None)
        self.fresh.pop(job_id, None)  # cancelled: not claimable, whatever its place
        self.cancels.setdefault(job_id, []).append(self.timeline.step)
        self.cancel_expect[rid] = expected

    def redrive_sent(self, rid: int, command: Redrive) -> None:
        self.redrives.append(Sent(rid, self.timeline.step, command))
        # Whatever it answers, it may bring these back (a dead job is not final).
        for job_id in list(self.known_dead):
            if self._names(command, job_id):
                del self.known_dead[job_id]

    def purge_sent(self, rid: int, command: Purge) -> None:
        self.purges.append(Sent(rid, self.timeline.step, command))

    def _names(self, command: Redrive | Purge, job_id: str) -> bool:
        """Whether ``command`` may select ``job_id`` (by id, or by its queue)."""
        if job_id in command.job_ids:
            return True
        spec = self.spec_of(job_id)
        return command.queue is not None and (spec is None or spec.queue == command.queue)

    def spec_of(self, job_id: str) -> Spec | None:
        payload = self.payload_of.get(job_id)
        return None if payload is None else self.specs[payload]

    def limit(self, spec: Spec) -> int | None:
        return spec.limit(self.config)

    def _unanswered(self) -> list[int]:
        return [rid for rid in self.requests if rid not in self.answered]

    # -- replies -----------------------------------------------------------------------

    def on_reply(self, reply: Reply) -> None:
        """Check one reply against what the model knows.

        Held replies come out in the order their commands were applied (a batch's
        replies when its write lands, batches in order), so what earlier replies taught
        the model held when this reply's command was applied."""
        rid = reply.request_id
        assert isinstance(rid, int)
        assert rid not in self.answered, f"request {rid} answered twice"
        self.answered.add(rid)
        command, submitted = self.requests[rid]
        result, error = reply.result, reply.error
        assert (result is None) != (error is None), "a result or an error, never both"
        event(f"reply: {type(error or result).__name__}")
        if error is not None:
            assert isinstance(error, OsqueueError), f"untyped error {error!r}"
            self._on_error(rid, command, error)
            return
        self.acked_at[rid] = self.timeline.step
        match result:
            case Pushed(job_id, existing):
                assert isinstance(command, Push)
                self._acked_push(job_id, existing, command.payload, rid)
            case PushedBatch(job_ids, existing):
                assert isinstance(command, PushBatch)
                self._acked_batch(command, job_ids, existing, rid)
            case Claimed() | ClaimedBatch():
                assert isinstance(command, Claim)
                self._acked_claim(command, result, submitted)
            case NothingToClaim():
                assert isinstance(command, Claim)
                self._check_nothing_to_claim(command, rid, submitted)
            case LeaseExtended(job_id, deadline, cancel_requested):
                assert isinstance(command, Heartbeat)
                self._acked_heartbeat(command, job_id, deadline, cancel_requested, submitted)
            case Completed(job_id):
                assert isinstance(command, Complete)
                for finished in (self.known_cancelled, self.known_purged, self.known_dead):
                    assert job_id not in finished, f"{job_id} completed after it finished"
                self.acked_completions.add(job_id)
                self.holds.pop(job_id, None)
            case Failed():
                assert isinstance(command, Fail)
                acked_fail(self, command, result, rid, submitted)
            case Released(job_id):
                assert isinstance(command, Release)
                acked_release(self, command, job_id, rid, submitted)
            case Cancelled(job_id, at_once):
                assert isinstance(command, Cancel)
                acked_cancel(self, command, at_once, rid, submitted)
            case JobInfo():
                assert isinstance(command, GetJob)
                check_info(self, command, result, submitted)
            case DeadLetters(jobs, more):
                assert isinstance(command, ListDead)
                check_dead_letters(self, command, jobs, more, submitted)
            case Redriven(job_ids):
                assert isinstance(command, Redrive)
                acked_redrive(self, command, job_ids, rid)
            case Purged(job_ids):
                assert isinstance(command, Purge)
                acked_purge(self, command, job_ids)
            case _:
                raise AssertionError(f"unexpected result {result!r}")

    def _on_error(self, rid: int, command: Command, error: OsqueueError) -> None:
        if isinstance(command, Claim):
            # A claim answered with an error (its broker was replaced, storage stalled)
            # may still have landed: the job is held, unacknowledged, until handed back
            # or its lease ends.
            self.uncertain()
        if isinstance(command, Redrive | Purge) and isinstance(error, NOTHING_DONE):
            self.not_applied.add(rid)
        if isinstance(error, LeaseLost):
            hold = self.holds.get(error.job_id)
            pair = (error.job_id, error.worker_id)
            if hold is not None and hold.worker == pair[1] and pair not in self.relinquished:
                assert hold.deadline <= self.now(), "lease lost before its deadline"
                del self.holds[error.job_id]
        acknowledged = (
            isinstance(error, JobNotFound)
            and not isinstance(command, ListDead)  # (names ``after``: maybe not dead now)
            and (error.job_id in self.created or error.job_id in self.existing)
        )
        if acknowledged:
            assert isinstance(error, JobNotFound)
            archived = {job.id for job in self.archives.jobs(self.store)}
            assert error.job_id in archived, f"{error.job_id} acknowledged, now not found"
        if isinstance(error, JobAlreadyFinished) and isinstance(command, Cancel):
            check_cancel_expectation(self, rid, at_once=None)

    def _acked_push(self, job_id: str, existing: bool, payload: bytes, rid: int) -> None:
        spec = self.specs[payload]
        identity = spec.identity
        if identity is None:
            assert not existing, f"{job_id}: a push without a key matched an existing job"
        else:
            owner = self.key_owner.setdefault(identity, job_id)
            assert owner == job_id, (
                f"key {identity} acknowledged for {owner} and {job_id}: an idempotent push "
                "made a second job"
            )
        if existing:
            assert identity is not None
            self.existing[job_id] = identity
            return
        assert job_id not in self.created, f"{job_id} acknowledged for two pushes"
        self.created[job_id] = payload
        self.created_step[job_id] = self.timeline.step
        self.payload_of[job_id] = payload
        if self.generation_at[rid] == self.generation:
            self.fresh[job_id] = self.fresh_entry(job_id, spec, attempts=0)

    def fresh_entry(self, job_id: str, spec: Spec, attempts: int) -> Fresh:
        # Surely due once the wall clock passes the latest run-at the push can have set.
        until = self.created_step.get(job_id)
        _, high = spec.run_at_bounds(self.timeline, until)
        return Fresh(self.timeline.step, attempts, spec.queue, spec.priority, high)

    def _acked_batch(
        self, command: PushBatch, job_ids: tuple[str, ...], existing: tuple[bool, ...], rid: int
    ) -> None:
        items = command.new_jobs()
        assert len(job_ids) == len(items)
        assert existing == () or (len(existing) == len(items) and any(existing))
        flags = existing or (False,) * len(items)
        first: dict[tuple[str, str], str] = {}
        for item, job_id, flag in zip(items, job_ids, flags, strict=True):
            identity = None if item.key is None else (item.queue, item.key)
            if identity is not None and identity in first:
                assert job_id == first[identity], f"key {identity} twice in a batch: two jobs"
                assert flag, f"{job_id}: a repeated key not answered as existing"
            if identity is not None:
                first.setdefault(identity, job_id)
            self._acked_push(job_id, flag, item.payload, rid)
        created = [i for i, flag in zip(job_ids, flags, strict=True) if not flag]
        assert len(set(created)) == len(created)

    def _acked_claim(self, command: Claim, result: Claimed | ClaimedBatch, submitted: int) -> None:
        if command.count == 1:
            assert isinstance(result, Claimed), "a claim of one answered with a batch"
            jobs: tuple[Claimed, ...] = (result,)
        else:
            assert isinstance(result, ClaimedBatch), "a claim of many answered with one"
            jobs = result.jobs
            assert 1 <= len(jobs) <= command.count
        ids = [claimed.job_id for claimed in jobs]
        assert len(set(ids)) == len(ids), f"one job twice in a batch claim: {ids}"
        ranks = [(-claimed.priority, seq_of(claimed.job_id)) for claimed in jobs]
        assert ranks == sorted(ranks), f"a batch claim not best first: {ids}"
        for claimed in jobs:
            self._on_claimed(claimed, command)
        for job_id in ids:
            self.fresh.pop(job_id, None)
        for claimed in jobs:
            self._check_order(claimed, command, submitted)

    def _on_claimed(self, claimed: Claimed, command: Claim) -> None:
        job_id = claimed.job_id
        assert job_id not in self.acked_completions, "a completed job was handed out"
        assert job_id not in self.known_cancelled, f"cancelled {job_id} was handed out"
        assert job_id not in self.cancel_marked, f"{job_id} handed out after its cancel"
        assert job_id not in self.known_purged, f"purged {job_id} was handed out"
        assert job_id not in self.known_dead, f"dead {job_id} was handed out"
        spec = self.specs.get(claimed.payload)
        assert spec is not None, f"{job_id} holds a payload nobody pushed"
        if job_id in self.created:
            assert claimed.payload == self.created[job_id]
        self.payload_of[job_id] = claimed.payload
        assert claimed.queue == spec.queue
        assert claimed.queue in command.queues
        assert claimed.priority == spec.priority
        limit = self.limit(spec)
        assert claimed.max_attempts == limit
        assert claimed.attempts >= 1
        assert limit is None or claimed.attempts <= limit, (
            f"{job_id} claimed for attempt {claimed.attempts} of {limit}"
        )
        low, _ = spec.run_at_bounds(self.timeline)
        for floor, since in [(low, spec.submitted), *self.floors.get(job_id, ())]:
            assert floor <= self.timeline.highest(since) + EPSILON, (
                f"{job_id} claimed before its run-at {floor} (the wall clock reached at "
                f"most {self.timeline.highest(since)})"
            )
        fresh = self.fresh.get(job_id)
        if fresh is not None:
            assert claimed.attempts == fresh.attempts + 1, (
                f"{job_id} claimed with {claimed.attempts} attempts, expected "
                f"{fresh.attempts + 1} (a release counted, or a claim did not)"
            )
        granted_at = claimed.lease_deadline - self.config.heartbeat_timeout
        old = self.holds.get(job_id)
        if (
            old is not None
            and old.worker != command.worker_id
            and (job_id, old.worker) not in self.relinquished
        ):
            assert old.deadline <= granted_at, (
                f"{job_id} granted to {command.worker_id} at {granted_at} while "
                f"{old.worker} holds it until {old.deadline}"
            )
        self.holds[job_id] = Hold(
            command.worker_id, claimed.lease_deadline, claimed.attempts, self.generation
        )
        self.relinquished.discard((job_id, command.worker_id))
        self.granted_step[job_id] = self.timeline.step

    def _check_order(self, claimed: Claimed, command: Claim, submitted: int) -> None:
        """The granted job beats every job known ready (and surely due) in the claim's
        queues since before the claim was sent: priority first, then push order."""
        rank = (-claimed.priority, seq_of(claimed.job_id))
        due_floor = self.timeline.lowest(submitted)
        better = [
            other
            for other, fresh in self.fresh.items()
            if fresh.queue in command.queues
            and fresh.since < submitted
            and fresh.due_by <= due_floor
            and fresh.rank(other) < rank
        ]
        assert not better, f"claim got {claimed.job_id} while better {better} were due"

    def _check_nothing_to_claim(self, command: Claim, rid: int, submitted: int) -> None:
        """With one broker ever, nothing to claim means no job of the claim's queues was
        known due (a waiting claim wakes when a delayed job falls due)."""
        if rid in self.cancelled_claims or self.brokers_started > 1:
            return
        rivals = {
            queue
            for other in self._unanswered()
            if isinstance(rival := self.requests[other][0], Claim)
            for queue in rival.queues
        }
        due = [
            job_id
            for job_id, fresh in self.fresh.items()
            if fresh.queue in command.queues
            and fresh.queue not in rivals
            and fresh.since < submitted
            and fresh.due_by <= self.timeline.walls[-1]
        ]
        assert not due, f"claim {rid} got nothing while {due} were due"

    def _acked_heartbeat(
        self, command: Heartbeat, job_id: str, deadline: float, cancelled: bool, submitted: int
    ) -> None:
        if cancelled:
            assert job_id in self.cancels, f"{job_id}: a cancel nobody asked for"
        marked = self.cancel_marked.get(job_id)
        if marked is not None and marked < submitted:
            assert cancelled, f"heartbeat of {job_id} hides its acknowledged cancel"
        old = self.holds.get(job_id)
        if old is not None and old.worker == command.worker_id:
            self.holds[job_id] = attrs.evolve(old, deadline=deadline)
        else:
            self.holds[job_id] = Hold(command.worker_id, deadline, 0, -1)

    def learn_dead(self, job_id: str, since: int) -> None:
        """``job_id`` was dead when a request sent at step ``since`` was applied: it stays
        dead unless a redrive that may apply after that names it."""
        for sent in self.redrives:
            command = sent.command
            assert isinstance(command, Redrive)
            settled = sent.rid in self.not_applied or self.acked_at.get(sent.rid, since) < since
            if self._names(command, job_id) and not settled:
                return
        self.known_dead[job_id] = since

    def events(self) -> None:
        """How deep this run went (``--hypothesis-show-statistics``)."""
        replies: dict[str, int] = {}
        for rid in self.acked_at:
            name = type(self.requests[rid][0]).__name__
            replies[name] = replies.get(name, 0) + 1
        for name in ("Push", "PushBatch", "Claim", "Fail", "Release", "Cancel", "Redrive", "Purge"):
            count = replies.get(name, 0)
            event(f"acked {name}: {'0' if not count else '1-2' if count < 3 else '3+'}")
        deaths = sum(1 for job in self.archives.jobs(self.store) if job.status is JobStatus.DEAD)
        event(f"dead jobs archived: {min(deaths, 3)}")
        event(f"known dead: {min(len(self.known_dead), 3)}")
        event(f"rules run: {self.rules_run // 10 * 10}+")
