"""The broker state machine: commands, storage results and time in; effects out.

Theory of operation (docs/architecture.md has the long form):

* Inputs: ``start``, ``submit`` / ``submit_many`` (client commands; the second for
  several that arrived together), ``receive`` (storage results),
  ``tick`` (time passed), ``cancel_claim``, ``hold_takeover`` (a standby's) and
  ``stop``. Every input carries ``now``
  (seconds on a clock that never jumps; it drives every timer) and optionally ``wall``
  (UNIX seconds; it only stamps jobs and picks archive buckets). Nothing here reads a
  clock, does I/O or draws randomness.
* Output: effects, pulled with ``take_effects()`` after every input. The runtime
  performs storage effects and feeds each result back, sends ``Reply`` effects to
  callers, and calls ``tick`` at ``next_deadline()``. Notices (``take_notices()``:
  commits, expired leases, dead letters) are news for its logs, taken when it likes.
* Two parts do the work: :class:`~osqueue_core.rules.JobRules` (what commands do to the
  jobs) and :class:`~osqueue_core.commit.CommitProtocol` (ownership, group commit, when
  replies are safe). This class admits inputs by phase (the tables in
  :mod:`osqueue_core.phase`), bounds the commands waiting for room in a batch, and
  fails everything at once when a fatal error arrives.

Two rules for this package: no I/O, clock or randomness (effects out, time in), and no
exception other than an ``OsqueueError`` crossing its public methods for bad input.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

import attrs

from osqueue_core.clock import Clock, check_time
from osqueue_core.commands import Claim, Command, RequestId
from osqueue_core.commit import CommitProtocol, failure_replies
from osqueue_core.config import BrokerConfig
from osqueue_core.effects import Effect, Reply
from osqueue_core.errors import (
    BrokerStopping,
    InvalidArgument,
    NotOwner,
    OsqueueError,
    Overloaded,
    StorageUnavailable,
)
from osqueue_core.events import StorageResult
from osqueue_core.histogram import (
    COMMIT_LATENCY_BOUNDS,
    COMMIT_OPERATIONS_BOUNDS,
    HistogramSnapshot,
)
from osqueue_core.job import Job
from osqueue_core.limits import check_id
from osqueue_core.notices import Notice
from osqueue_core.outbox import Outbox
from osqueue_core.owner import Owner
from osqueue_core.phase import RULES, Admission, Phase, PhaseEvent, initial_phase, next_phase
from osqueue_core.queries import JobsPage, list_jobs
from osqueue_core.results import NothingToClaim
from osqueue_core.rules import CommitContext, JobRules, payload_bytes
from osqueue_core.segment_waits import segment_needed
from osqueue_core.table import QueueCounts

#: The commit histograms of a broker that has written nothing.
_NO_COMMITS = (
    HistogramSnapshot.empty(COMMIT_LATENCY_BOUNDS),
    HistogramSnapshot.empty(COMMIT_OPERATIONS_BOUNDS),
)


@attrs.frozen
class BrokerStats:
    """A snapshot for monitoring."""

    phase: Phase
    identity: str
    epoch: int
    revision: int
    ready: int
    claimed: int
    finished_pending_archive: int
    waiting_claims: int
    #: Commands waiting for room in a batch (backpressure).
    queued_commands: int = 0
    #: Storage has been failing for ``stall_timeout``; requests get StorageUnavailable.
    stalled: bool = False
    last_storage_error: str = ""
    #: State writes issued, version checks, writes resolved by reading back.
    writes: int = 0
    confirms: int = 0
    resolves: int = 0
    #: Times storage stalled (requests were answered StorageUnavailable).
    stalls: int = 0
    #: Takeover writes lost to another writer; pauses granted to challengers.
    takeover_conflicts: int = 0
    yields: int = 0
    #: Archive keys found holding somebody else's jobs (the jobs moved to fresh keys).
    archive_collisions: int = 0
    #: READY jobs not due yet (a run-at or a retry's backoff), and dead letters.
    delayed: int = 0
    dead: int = 0
    #: Per queue, by name: every queue with jobs in the state.
    queues: tuple[QueueCounts, ...] = ()
    #: Segments referenced by the state, the untouched jobs in them (counted in
    #: ``ready`` too, or in ``delayed`` until due), and those loaded in memory (and
    #: their stored bytes).
    segments: int = 0
    untouched: int = 0
    segments_loaded: int = 0
    #: Lease renewals written (an idle owner with ``owner_lease``), and a standby's
    #: version checks and state reads while it watched.
    renewals: int = 0
    standby_checks: int = 0
    standby_reads: int = 0
    segment_cache_bytes: int = 0
    #: Segments spilled and attached, jobs they moved, spills abandoned (their key held
    #: somebody else's object), and segment reads issued.
    spills: int = 0
    spilled_jobs: int = 0
    spills_abandoned: int = 0
    segment_reads: int = 0
    #: Untouched jobs whose idempotency key is in the key index (all of the untouched
    #: keyed jobs once ``key_index_complete``; until then keyed pushes wait).
    untouched_keyed: int = 0
    key_index_complete: bool = True
    #: Segment objects deleted (dropped, never attached, or orphans found by a sweep);
    #: keys still to delete (some waiting for the write that dropped them to land);
    #: keys given up after failing again and again (left for the next takeover's
    #: sweep); sweeps finished since this broker took over (one per takeover), and the
    #: orphans they found.
    segments_deleted: int = 0
    segment_deletes_pending: int = 0
    segment_deletes_abandoned: int = 0
    sweeps: int = 0
    swept: int = 0
    #: State writes refused because the object had changed, and writes whose outcome
    #: storage could not tell (each resolved by reading the state back).
    conflicts: int = 0
    unknown_outcomes: int = 0
    #: Takeovers this broker made; reads that found it replaced by another (fenced).
    takeovers: int = 0
    fenced: int = 0
    #: Job events in writes that landed: leases that ran out, failed attempts scheduled
    #: again, jobs that became dead letters (:mod:`osqueue_core.tally`).
    expired_leases: int = 0
    retries: int = 0
    dead_letters: int = 0
    #: Size of the last state object written (and landed), in bytes.
    state_bytes: int = 0
    #: Every landed write of a batch: seconds from its first issue to landing, and the
    #: requests it acknowledged (lease renewals are counted in ``renewals`` instead).
    commit_latency: HistogramSnapshot = _NO_COMMITS[0]
    commit_operations: HistogramSnapshot = _NO_COMMITS[1]


#: The fields of :class:`BrokerStats` that only grow while a broker lives (counters, for
#: monitoring); the rest describe its state now.
STATS_COUNTERS = (
    "writes",
    "confirms",
    "resolves",
    "stalls",
    "takeover_conflicts",
    "yields",
    "archive_collisions",
    "renewals",
    "standby_checks",
    "standby_reads",
    "spills",
    "spilled_jobs",
    "spills_abandoned",
    "segment_reads",
    "conflicts",
    "unknown_outcomes",
    "takeovers",
    "fenced",
    "expired_leases",
    "retries",
    "dead_letters",
)


class Broker:
    """A Sans-IO job-queue broker. Drive it as the module docstring says.

    ``identity`` names it in the state object and in errors, ``incarnation`` must be
    unique per broker instance (the runtime draws it), ``address`` is where clients can
    reach it (published in the state). Each is at most ``MAX_ID_LENGTH`` characters.
    """

    def __init__(
        self,
        config: BrokerConfig | None = None,
        *,
        identity: str,
        incarnation: str,
        address: str | None = None,
    ) -> None:
        check_id("identity", identity)
        check_id("incarnation", incarnation)
        if address is not None:
            check_id("address", address)
        self.config = config or BrokerConfig()
        self.identity = identity
        self.incarnation = incarnation
        self.address = address
        self._clock = Clock()
        self._out = Outbox()
        self._rules = JobRules(self.config, self._clock, self._out)
        me = Owner(identity, incarnation, 0, address, lease=self.config.owner_lease)
        self._commit = CommitProtocol(
            self.config, self._clock, self._out, self._rules, me, lambda: self._phase
        )
        self._phase = initial_phase(self.config.standby)
        self._failure: OsqueueError | None = None
        self._started = False
        self._inbox: deque[Command] = deque()
        self._inbox_bytes = 0
        #: Since when the first queued command waits for a segment read (None: it does
        #: not).
        self._blocked_since: float | None = None

    # -- public inputs ---------------------------------------------------------------

    def start(self, now: float, wall: float | None = None) -> None:
        """Begin: read the state object, then take it over (a standby: watch it, and
        take it over once its owner's lease lapses). Call once."""
        if self._started:
            raise InvalidArgument("start() was already called")
        self._started = True
        self._input(now, wall, self._commit.start)

    def submit(self, command: Command, now: float, wall: float | None = None) -> None:
        """A client command. Its reply comes out as a ``Reply`` effect, now or later."""
        if not hasattr(command, "request_id"):
            raise InvalidArgument(f"not an osqueue command: {type(command).__name__}")
        _check_request_id(command.request_id)
        self._input(now, wall, lambda: self._admit(command))

    def submit_many(
        self, commands: Sequence[Command], now: float, wall: float | None = None
    ) -> None:
        """Several client commands that arrived together: each as if by ``submit``, in
        order, but as one input (time is taken, leases expired and the next state
        operation considered once, after the last), so they share the open batch as far
        as its caps allow. Each gets its own ``Reply``. Raises ``InvalidArgument``
        (nothing is done) if any is not a command or has an unhashable ``request_id``.
        """
        for command in commands:
            if not hasattr(command, "request_id"):
                raise InvalidArgument(f"not an osqueue command: {type(command).__name__}")
            _check_request_id(command.request_id)
        self._input(now, wall, lambda: self._admit_all(commands))

    def receive(self, result: StorageResult, now: float, wall: float | None = None) -> None:
        """The outcome of a storage effect this broker emitted.

        Raises ``InvalidArgument`` (changing nothing) if ``result`` is not a possible
        answer to the effect it names: a runtime bug. Results for operations the broker
        no longer waits for (it failed or stopped meanwhile) are ignored.
        """
        check_time(now, wall)
        handler = self._out.handler_for(result)
        self._input(now, wall, (lambda: handler(result)) if handler else _nothing)

    def tick(self, now: float, wall: float | None = None) -> None:
        """Time passed: expire leases and waits, retry failed operations."""
        self._input(now, wall, _nothing)

    def cancel_claim(self, request_id: RequestId, now: float, wall: float | None = None) -> None:
        """The caller of a claim gave up: answer it ``NothingToClaim`` now.

        A claim still waiting, or queued, is withdrawn. A claim already granted whose
        reply is still held (its write has not landed) is taken back: in an unwritten
        batch the grant is undone; in a write on its way, the job is handed back once
        that write lands. Either way the claim does not count as an attempt. A claim
        whose reply was already released is not affected (see ``Release``).
        """
        _check_request_id(request_id)
        self._input(now, wall, lambda: self._cancel_claim(request_id))

    def hold_takeover(self, held: bool, now: float, wall: float | None = None) -> None:
        """Hold back (True) or let go (False) this standby's takeover, from now on.

        A held standby keeps watching its owner, but a lapse it finds (or a released
        or absent state) does not start a takeover until it is let go, or until the
        lapse has lasted one more lease (a hold delays a takeover, it never leaves the
        queue without an owner). A takeover already begun goes on. For a scale-out
        group (docs/high-availability.md): a member that owns its share of the queues
        holds its other standbys. Callable before ``start``; no effect on a broker that
        is not a standby.
        """
        if not isinstance(held, bool):
            raise InvalidArgument(f"held must be a bool, got {type(held).__name__}")
        self._input(now, wall, lambda: self._commit.hold_takeover(held))

    @property
    def takeover_held(self) -> bool:
        """Whether this standby's takeover is held back (:meth:`hold_takeover`)."""
        watch = self._commit.watch
        return watch is not None and watch.held

    def stop(self, now: float, wall: float | None = None) -> None:
        """Shut down cleanly: finish what was accepted, then release ownership.

        New commands get ``BrokerStopping``; waiting claims get ``NothingToClaim``.
        ``phase`` becomes STOPPED once the release write has landed.
        """
        self._input(now, wall, self._stop)

    # -- public outputs --------------------------------------------------------------

    def take_effects(self) -> list[Effect]:
        """Everything the runtime must do now, in order. Call after every input."""
        return self._out.take()

    def take_notices(self) -> tuple[list[Notice], int]:
        """What the broker did since the last call, for logs (:mod:`osqueue_core.notices`:
        commits, leases that ran out, jobs that died, each once durable), and how many
        were dropped because nobody took them. Optional: nothing depends on it."""
        return self._out.notices.take()

    def next_deadline(self) -> float | None:
        """When to call ``tick`` next, on the clock of ``now`` (None: only when
        something else happens). Never a time at which ``tick`` would find nothing to do.
        """
        if RULES[self._phase].final:
            return None
        candidates = [self._commit.next_deadline()]
        if self._commit.established:
            candidates.append(self._rules.next_deadline())
        if self._blocked_since is not None and self._inbox:
            candidates.append(self._blocked_since + self.config.stall_timeout)
        timed = [deadline for deadline in candidates if deadline is not None]
        return min(timed) if timed else None

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def failure(self) -> OsqueueError | None:
        """Why the broker FAILED (replaced, corrupt or missing state, unreachable
        storage)."""
        return self._failure

    @property
    def owner(self) -> Owner | None:
        return self._commit.owner

    def stats(self) -> BrokerStats:
        table = self._rules.table
        commit = self._commit
        counters = commit.counters
        return BrokerStats(
            phase=self._phase,
            identity=self.identity,
            epoch=commit.owner.epoch if commit.owner else 0,
            revision=commit.revision,
            ready=table.ready_count,
            claimed=table.claimed_count,
            finished_pending_archive=table.finished_count,
            waiting_claims=len(self._rules.waiters),
            queued_commands=len(self._inbox),
            stalled=commit.stalled,
            last_storage_error=commit.slot.trouble() or commit.slot.last_error,
            writes=counters.writes,
            confirms=counters.confirms,
            resolves=counters.resolves,
            stalls=counters.stalls,
            takeover_conflicts=commit.takeover.conflicts,
            yields=counters.yields,
            archive_collisions=commit.archiver.collisions,
            delayed=table.delayed_count,
            dead=table.dead_count,
            queues=tuple(table.queue_counts()),
            segments=len(table.segments),
            untouched=table.segments.total,
            segments_loaded=sum(s.records is not None for s in table.segments),
            renewals=counters.renewals,
            standby_checks=commit.watch.checks if commit.watch is not None else 0,
            standby_reads=commit.watch.reads if commit.watch is not None else 0,
            segment_cache_bytes=table.segments.loaded_bytes,
            spills=commit.spiller.counters.spills,
            spilled_jobs=commit.spiller.counters.spilled_jobs,
            spills_abandoned=commit.spiller.counters.abandoned,
            segment_reads=commit.reader.reads,
            untouched_keyed=len(table.segments.keys),
            key_index_complete=not table.segments.unindexed,
            segments_deleted=commit.deleter.counters.deleted,
            segment_deletes_pending=commit.deleter.pending,
            segment_deletes_abandoned=commit.deleter.counters.abandoned,
            sweeps=commit.sweep.counters.sweeps,
            swept=commit.sweep.counters.swept,
            conflicts=counters.conflicts,
            unknown_outcomes=counters.unknown_outcomes,
            takeovers=counters.takeovers,
            fenced=counters.fenced,
            expired_leases=counters.jobs.expired_leases,
            retries=counters.jobs.retries,
            dead_letters=counters.jobs.dead_letters,
            state_bytes=counters.state_bytes,
            commit_latency=counters.latency.snapshot(),
            commit_operations=counters.operations.snapshot(),
        )

    def job(self, job_id: str) -> Job | None:
        """The head (possibly not yet durable) version of a job, for inspection."""
        return self._rules.table.get(job_id)

    def jobs(
        self,
        wall: float,
        *,
        queue: str | None = None,
        status: str | None = None,
        after: int | None = None,
        limit: int = 50,
    ) -> JobsPage:
        """A page of the jobs in the head state, for inspection (a dashboard): see
        :func:`~osqueue_core.queries.list_jobs`. Changes nothing; raises
        ``InvalidArgument`` for a filter out of range."""
        return list_jobs(
            self._rules.table,
            self.config,
            wall,
            queue=queue,
            status=status,
            after=after,
            limit=limit,
        )

    # -- every input -----------------------------------------------------------------

    def _input(self, now: float, wall: float | None, action: Callable[[], None]) -> None:
        check_time(now, wall)
        self._clock.advance(now, wall)
        try:
            if self._commit.established and not RULES[self._phase].final:
                self._expire()
            action()
            self._settle()
        except OsqueueError as error:
            # Corrupt, newer or missing state, divergence, replacement: stop, never
            # write again, answer everything.
            self._fail(error)

    def _settle(self) -> None:
        """After every input: take phase changes, notice a stall, move queued commands
        into the open batch, and issue the next state operation."""
        self._take_phase_events()
        if RULES[self._phase].final:
            return
        stall = self._commit.check_stall()
        if stall is not None:
            self._answer_inbox(stall)
            self._rules.answer_waiters(stall)
        self._drain_inbox()
        self._commit.pump(inbox_empty=not self._inbox)
        self._drain_inbox()
        self._commit.pump_segments()

    def _transition(self, event: PhaseEvent) -> None:
        self._phase = next_phase(self._phase, event)

    def _take_phase_events(self) -> None:
        events, self._commit.events = self._commit.events, []
        for event in events:
            self._transition(event)
            if RULES[self._phase].final:
                self._out.forget()  # archive writes in flight are the successor's
            elif event is PhaseEvent.STEPPED_BACK:
                # Queued while it tried to take over: it will not serve them.
                self._answer_inbox(self.not_owner())
            elif event is PhaseEvent.TOOK_OVER:
                # The state just loaded may hold work already due (delayed jobs, old
                # dead letters): do it now, so next_deadline() is never in the past.
                self._expire()

    def _expire(self) -> None:
        """Let time pass. A waiting claim whose wait ran out while its job is being read
        from a segment goes back to the head of the commands (it arrived before all of
        them), applied without waiting once the read lands, like any claim that needs a
        segment read (answered StorageUnavailable if that takes ``stall_timeout``)."""
        self._inbox.extendleft(
            reversed(self._rules.expire(self._commit.open, self._commit.context()))
        )

    # -- commands --------------------------------------------------------------------

    def _admit(self, command: Command, context: CommitContext | None = None) -> None:
        """Apply ``command`` now, queue it, or answer it with an error. ``context``:
        the commit context, if the caller has it (the commands of one input share it:
        no state operation is issued while they are admitted)."""
        admission = RULES[self._phase].admission
        if admission is Admission.REFUSE_FAILED:
            assert self._failure is not None
            self._reply_error(command.request_id, self._failure)
            return
        if admission is Admission.REFUSE_STOPPING:
            self._reply_error(command.request_id, BrokerStopping())
            return
        if admission is Admission.REFUSE_STANDBY:
            self._reply_error(command.request_id, self.not_owner())
            return
        try:
            self._rules.check(command)
            stall = self._commit.check_stall()
            if stall is not None:
                raise stall
        except OsqueueError as error:
            self._reply_error(command.request_id, error)
            return
        if (
            admission is Admission.QUEUE
            or self._inbox
            or not self._commit.has_room()
            or segment_needed(self._rules.table, command) is not None
        ):
            # Behind the others (commands apply in arrival order), or waiting for a
            # segment read before it is applied.
            self._enqueue(command)
        else:
            context = context or self._commit.context()
            self._rules.apply(command, self._commit.open, context)

    def _admit_all(self, commands: Sequence[Command]) -> None:
        context = self._commit.context() if self._commit.established else None
        for command in commands:
            try:
                self._admit(command, context)
            except OsqueueError as error:
                # A fatal error while applying one: fail now, so the rest are answered
                # with the failure (each still gets its reply) instead of being lost.
                self._fail(error)

    def _enqueue(self, command: Command) -> None:
        size = payload_bytes(command)
        limits = self.config
        if (
            len(self._inbox) >= limits.max_queued_commands
            or self._inbox_bytes + size > limits.max_queued_bytes
        ):
            self._reply_error(
                command.request_id,
                Overloaded(
                    f"{len(self._inbox)} requests ({self._inbox_bytes} payload bytes) are "
                    "already waiting for the broker's next write (its limit): retry later"
                ),
            )
            return
        self._inbox.append(command)
        self._inbox_bytes += size

    def _drain_inbox(self) -> None:
        if not self._inbox:
            self._blocked_since = None
        if not self._commit.established or not RULES[self._phase].applies_queued:
            return
        while self._inbox and self._commit.has_room():
            if segment_needed(self._rules.table, self._inbox[0]) is not None:
                # Its segment is being read; everything behind waits with it, so
                # commands still apply in arrival order.
                if self._blocked_since is None:
                    self._blocked_since = self._clock.now
                if self._clock.now < self._blocked_since + self.config.stall_timeout:
                    return
                command = self._inbox.popleft()
                self._inbox_bytes -= payload_bytes(command)
                self._reply_error(command.request_id, _segment_unavailable())
                self._blocked_since = None
                # Whoever still needs a segment asks again (the next command at once).
                self._rules.table.segments.demanded.clear()
                self._rules.table.segments.pinned.clear()
                continue
            self._blocked_since = None
            self._rules.table.segments.pinned.clear()
            command = self._inbox.popleft()
            self._inbox_bytes -= payload_bytes(command)
            self._rules.apply(command, self._commit.open, self._commit.context())

    def _answer_inbox(self, error: OsqueueError) -> None:
        self._blocked_since = None
        while self._inbox:
            self._reply_error(self._inbox.popleft().request_id, error)
        self._inbox_bytes = 0

    def _cancel_claim(self, request_id: RequestId) -> None:
        if self._rules.waiters.withdraw(request_id):
            self._out.reply(Reply(request_id, NothingToClaim()))
            return
        for command in self._inbox:
            if isinstance(command, Claim) and command.request_id == request_id:
                self._inbox.remove(command)
                self._out.reply(Reply(request_id, NothingToClaim()))
                return
        if self._commit.established and self._commit.cancel_grant(request_id):
            self._out.reply(Reply(request_id, NothingToClaim()))

    def _stop(self) -> None:
        self._transition(PhaseEvent.STOP)
        if RULES[self._phase].releases:
            self._rules.answer_waiters()
            if not self._commit.established:
                # Queued during the takeover and never applied.
                self._answer_inbox(BrokerStopping())

    # -- failure ---------------------------------------------------------------------

    def _fail(self, error: OsqueueError) -> None:
        """Stop for good: answer everything pending with ``error``, never write again."""
        if RULES[self._phase].final:
            return
        self._transition(PhaseEvent.FATAL)
        self._failure = error
        for reply in failure_replies(self._commit.fail(), error):
            self._out.reply(reply)
        self._answer_inbox(error)
        self._rules.answer_waiters(error)
        self._out.forget()

    def not_owner(self) -> NotOwner:
        """What a standby answers: ``NotOwner`` naming the owner it last saw."""
        watch = self._commit.watch
        owner = watch.owner if watch is not None else None
        if owner is None:
            return NotOwner("", 0, None)
        return NotOwner(owner.identity, owner.epoch, owner.address)

    def _reply_error(self, request_id: RequestId, error: OsqueueError) -> None:
        self._out.reply(Reply(request_id, error=error))


def _segment_unavailable() -> StorageUnavailable:
    return StorageUnavailable(
        "the broker could not read the segment this request needs in time; it keeps "
        "trying: retry later"
    )


def _nothing() -> None:
    """An input that only lets time pass."""


def _check_request_id(request_id: object) -> None:
    try:
        hash(request_id)
    except TypeError:
        raise InvalidArgument(
            f"a request_id must be hashable, got {type(request_id).__name__}"
        ) from None
