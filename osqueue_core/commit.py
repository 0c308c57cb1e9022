"""The commit protocol: ownership of the state object, group commit, and when replies
become safe to release.

Theory of operation (docs/architecture.md has the long form):

* Commands change the head state at once (:mod:`osqueue_core.rules`) and collect in the
  **open batch**. Whenever no state operation is in flight, the open batch goes out: a
  dirty batch as one conditional write of the whole state (revision + 1, this broker's
  epoch), a batch that changed nothing durable but holds replies as a version check
  (``ReadVersion``) that proves this broker still owns the state. Replies are released
  when that operation lands. Nothing is acknowledged before it is durable.
* A write that conflicted or whose outcome is unknown is resolved by reading the state
  back: our revision there means it landed; the previous one means it did not (the very
  same bytes are sent again: a batch is never applied twice); a newer epoch means
  another broker took over (``BrokerReplaced``: this broker never writes again).
* Storage that fails for ``stall_timeout`` makes the broker **stalled**: held and new
  requests get ``StorageUnavailable`` instead of waiting in silence, claims granted in
  unwritten batches are taken back, and the broker keeps retrying.
* A busy owner reads the takeover request object every ``takeover_check`` seconds and,
  asked by a broker that keeps losing its takeover write, pauses its writes once per
  request (see :mod:`osqueue_core.takeover`).
* Segments a write drops are deleted once that write is known landed, and a landed
  takeover sweeps the orphans of the epochs it fenced (:mod:`osqueue_core.segment_deletes`,
  :mod:`osqueue_core.segment_sweep`): garbage is collected only where a landed state
  proves nothing can reference it again.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs

from osqueue_core.archiver import Archiver
from osqueue_core.batch import Batch, PendingWrite
from osqueue_core.clock import Clock
from osqueue_core.codec import SCHEMA_VERSION, StateHeader, decode_header, encode_state, peek_owner
from osqueue_core.commands import RequestId
from osqueue_core.config import BrokerConfig
from osqueue_core.effects import ReadObject, ReadVersion, Reply, WriteObject
from osqueue_core.errors import (
    BrokerReplaced,
    OsqueueError,
    StateDiverged,
    StorageUnavailable,
    UnsupportedSchema,
)
from osqueue_core.events import (
    ObjectRead,
    ObjectWritten,
    StorageFailed,
    StorageResult,
    VersionRead,
    WriteConflicted,
)
from osqueue_core.gather import Gather
from osqueue_core.histogram import COMMIT_LATENCY_BOUNDS, COMMIT_OPERATIONS_BOUNDS, Histogram
from osqueue_core.limits import quote
from osqueue_core.markers import decode_takeover_request
from osqueue_core.notices import Committed
from osqueue_core.outbox import Outbox
from osqueue_core.owner import Owner
from osqueue_core.phase import RULES, Phase, PhaseEvent
from osqueue_core.rules import CommitContext, JobRules
from osqueue_core.segment_deletes import SegmentDeleter
from osqueue_core.segment_reads import SegmentReader
from osqueue_core.segment_sweep import SegmentSweep
from osqueue_core.slot import StateOp, StateSlot
from osqueue_core.spill import Spiller
from osqueue_core.standby import Watch
from osqueue_core.takeover import Takeover
from osqueue_core.tally import JobTally


@attrs.define
class CommitCounters:
    """What the commit protocol has done, for monitoring."""

    writes: int = 0
    confirms: int = 0
    resolves: int = 0
    stalls: int = 0
    yields: int = 0
    #: Writes made only to renew the owner's lease (an idle owner with ``owner_lease``).
    renewals: int = 0
    #: State writes (after the takeover) refused because the object changed, and those
    #: whose outcome storage could not tell (both are resolved by reading back).
    conflicts: int = 0
    unknown_outcomes: int = 0
    #: Takeovers this broker made, and reads that found it replaced (fenced: it never
    #: writes again).
    takeovers: int = 0
    fenced: int = 0
    #: Bytes of the last state object this broker wrote that landed (0: none yet).
    state_bytes: int = 0
    #: Job events of the writes that landed (:mod:`osqueue_core.tally`).
    jobs: JobTally = attrs.Factory(JobTally)
    #: Each landed write of a batch (renewals aside): seconds from its first issue, and
    #: the requests it acknowledged.
    latency: Histogram = attrs.Factory(lambda: Histogram(COMMIT_LATENCY_BOUNDS))
    operations: Histogram = attrs.Factory(lambda: Histogram(COMMIT_OPERATIONS_BOUNDS))


class CommitProtocol:
    """Ownership, batches and state operations of one broker, whose identity is
    ``me``. The broker calls :meth:`pump` after every input."""

    def __init__(
        self,
        config: BrokerConfig,
        clock: Clock,
        outbox: Outbox,
        rules: JobRules,
        me: Owner,
        phase: Callable[[], Phase],
    ) -> None:
        self.config = config
        self._phase = phase
        self._clock = clock
        self._out = outbox
        self._rules = rules
        self.owner: Owner | None = None
        #: The last revision known durable, and its storage version token.
        self.revision = 0
        self.version: object | None = None
        self.open = Batch()
        self.pending_write: PendingWrite | None = None
        self.slot = StateSlot(config, clock, outbox)
        self.archiver = Archiver(config, clock, outbox, rules, lambda: self.open, self.context)
        self.takeover = Takeover(
            config, clock, outbox, self.slot, rules, me, self._took_over, self._stepped_back
        )
        self.watch = Watch(config, clock, outbox, self._lapsed) if config.standby else None
        self.deleter = SegmentDeleter(config, clock, outbox)
        self.sweep = SegmentSweep(config, clock, outbox, self.deleter)
        self.spiller = Spiller(
            config, clock, outbox, rules, lambda: self.open, self._epoch, self.deleter.delete
        )
        self.reader = SegmentReader(
            config, clock, outbox, rules, self._owned_header, self._segment_loaded
        )
        self.counters = CommitCounters()
        self.gather = Gather(config.gather, config.gather_max)
        self._write_issued_at = -math.inf
        self._confirmed_at = -math.inf
        #: When the last write of ours landed: an idle owner renews its lease from it.
        self._renewed_at = -math.inf
        self._renewal: PendingWrite | None = None
        self._stalled = False
        # Owner side of takeover requests.
        self._yield_until = -math.inf
        self._writes_since_poll = 0
        self._next_poll_at = -math.inf
        self._polling = False
        self._honoured: object | None = None
        #: The phase events landed writes caused, for the broker to take.
        self.events: list[PhaseEvent] = []

    # -- views -------------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        """The broker's phase (the broker owns it)."""
        return self._phase()

    @property
    def established(self) -> bool:
        """The takeover landed: this broker owns the state (or did, until replaced)."""
        return self.owner is not None

    @property
    def stalled(self) -> bool:
        return self._stalled

    def context(self) -> CommitContext:
        assert self.owner is not None
        return CommitContext(
            epoch=self.owner.epoch,
            # The next write commits the open batch, or the one after if a write is
            # already on its way.
            commit_revision=self.revision + (2 if self.pending_write is not None else 1),
            waiting_allowed=RULES[self.phase].waiting_allowed,
        )

    def has_room(self) -> bool:
        batch = self.open
        return (
            len(batch.replies) < self.config.max_batch_ops
            and batch.payload_bytes < self.config.max_batch_bytes
        )

    def held_batches(self) -> list[Batch]:
        """Every batch whose replies wait on storage: the open one first."""
        batches = [self.open, *self.slot.held_batches()]
        if self.pending_write is not None:
            batches.append(self.pending_write.batch)
        unique: dict[int, Batch] = {}
        for batch in batches:
            unique.setdefault(id(batch), batch)
        return list(unique.values())

    # -- driving -----------------------------------------------------------------------

    def start(self) -> None:
        if self.watch is not None:
            self.watch.begin()
        else:
            self.takeover.begin()

    def _lapsed(self, version: object | None) -> None:
        self.events.append(PhaseEvent.LAPSED)
        self.takeover.begin(expect=version)

    def hold_takeover(self, held: bool) -> None:
        """Hold back (or let go) a standby's takeover (:meth:`Watch.hold`)."""
        if self.watch is not None:
            self.watch.hold(held)

    def _stepped_back(self, version: object | None, owner: Owner | None) -> None:
        assert self.watch is not None
        self.events.append(PhaseEvent.STEPPED_BACK)
        self.watch.resume(version, owner)

    def pump(self, *, inbox_empty: bool) -> None:
        """Issue the next state operation if one is due. Called after every input."""
        rules = RULES[self.phase]
        if rules.final:
            return
        if rules.watches:
            assert self.watch is not None
            self.watch.pump()
            return
        if self.established:
            self.archiver.pump()
            if rules.releases:
                self.spiller.stop()  # the successor spills; nothing new to attach
            self.spiller.pump()
            self.deleter.pump()
            self.sweep.pump()
            self._poll_takeover_request()
        if not self.slot.idle:
            self.slot.pump()
            return
        now = self._clock.now
        if not self.established or now < self._yield_until:
            return
        batch = self.open
        if rules.releases and inbox_empty:
            # Everything accepted is applied: one last write commits it and releases
            # ownership (a landed write also confirms any held heartbeat replies).
            self._write_batch(release=True)
        elif batch.dirty:
            if not (rules.lingers and self.has_room() and now < self._write_due(batch)):
                self._write_batch()
        elif batch.replies:
            self._confirm(batch)
            self.open = Batch()
        elif rules.checks_ownership and now >= self._renewal_due():
            # Idle past a third of the lease: an empty write tells standbys this owner
            # lives (and, landing, confirms that it still owns the state).
            self.counters.renewals += 1
            self._write_batch()
            self._renewal = self.pending_write
        elif (
            rules.checks_ownership
            and self.config.ownership_check is not None
            and now >= self._confirmed_at + self.config.ownership_check
        ):
            # Idle: a version check is how a broker that writes nothing learns it was
            # replaced.
            self._confirm(Batch())

    def next_deadline(self) -> float | None:
        rules = RULES[self.phase]
        if rules.final:
            return None
        candidates = [self.slot.retry_at]
        if rules.watches:
            assert self.watch is not None
            watch = self.watch.next_deadline()
            return watch
        if self.established:
            for retry in (
                self.archiver.next_deadline(),
                self.spiller.next_deadline(),
                self.reader.next_deadline(),
                self.deleter.next_deadline(),
                self.sweep.next_deadline(),
            ):
                if retry is not None:
                    candidates.append(retry)
        stall = self.slot.stall_deadline()
        if stall is not None and not self._stalled:
            candidates.append(stall)
        if self.established and self.slot.idle:
            batch = self.open
            wants_operation = batch.needs_operation() or rules.releases
            if self._clock.now < self._yield_until:
                if wants_operation:
                    candidates.append(self._yield_until)
            elif batch.dirty and rules.lingers and self.has_room():
                candidates.append(self._write_due(batch))
            check = self.config.ownership_check
            if check is not None and rules.checks_ownership and not wants_operation:
                candidates.append(max(self._confirmed_at + check, self._yield_until))
            if rules.checks_ownership and not wants_operation:
                candidates.append(max(self._renewal_due(), self._yield_until))
        deadline = min(candidates)
        return None if deadline == math.inf else deadline

    def _renewal_due(self) -> float:
        lease = self.config.owner_lease
        return math.inf if lease is None else self._renewed_at + lease / 3

    # -- writing batches ---------------------------------------------------------------

    def _write_due(self, batch: Batch) -> float:
        """When a dirty batch with room goes out: ``linger`` after its first change, and
        once the callers the last write released came back (or waited long enough)."""
        lingered = -math.inf
        if batch.first_change_at is not None:
            lingered = batch.first_change_at + self.config.linger
        return max(lingered, self.gather.deadline(len(batch.replies)))

    def _write_batch(self, *, release: bool = False) -> None:
        assert self.owner is not None
        owner = attrs.evolve(self.owner, released=True) if release else self.owner
        rules = self._rules
        header = StateHeader(
            SCHEMA_VERSION,
            self.revision + 1,
            owner,
            rules.table.next_seq,
            segment_floor=rules.segment_floor,
        )
        table = rules.table
        refs = table.segments.encoded_refs()
        data = encode_state(header, table.encoded_chunks(), rules.encoded_keys(), refs)
        write = PendingWrite(header.revision, data, self.open, release=release)
        # The first state without the segments dropped since the last write: they are
        # deleted once it is known landed.
        self.deleter.dropped(table.segments.take_dropped(), header.revision)
        self.pending_write = write
        self.open = Batch()
        self.counters.writes += 1
        self._write_issued_at = self._clock.now
        self._issue_write(write)

    def _issue_write(self, write: PendingWrite) -> None:
        self.slot.issue(self._write_op(write))

    def _write_op(self, write: PendingWrite) -> StateOp:
        key = self.config.state_key
        return StateOp(
            # The version is read when the effect is made: a resend after a resolve
            # uses the version that resolve found.
            lambda op_id: WriteObject(op_id, key, write.data, self.version),
            lambda result: self._on_write(write, result),
            f"write revision {write.revision}",
            batch=write.batch,
            write=write,
            writes=True,
        )

    def _on_write(self, write: PendingWrite, result: StorageResult) -> None:
        if isinstance(result, ObjectWritten):
            self._landed(write, result.version)
            return
        # Conflicted, or the outcome is unknown: read the state back to find out.
        if isinstance(result, WriteConflicted):
            self.counters.conflicts += 1
            self.slot.count_failed_attempt()  # (a storage failure was counted already)
        elif isinstance(result, StorageFailed):
            self.counters.unknown_outcomes += 1
        self.counters.resolves += 1
        key = self.config.state_key
        self.slot.issue(
            StateOp(
                lambda op_id: ReadObject(op_id, key),
                lambda found: self._on_resolve(write, found),
                f"read back revision {write.revision}",
                batch=write.batch,
            )
        )

    def _on_resolve(self, write: PendingWrite, result: StorageResult) -> None:
        assert isinstance(result, ObjectRead)
        header = self._owned_header(result.data)
        if header.revision == write.revision:
            self._landed(write, result.version)
        elif header.revision == self.revision:
            # Certainly not landed, and nobody else wrote: the same bytes again, after
            # backoff (the store just failed or refused this write). Refused again and
            # again, that is a storage fault like any other: it leads to a stall.
            if self.version == result.version:
                self.slot.refused(
                    f"conditional write of revision {write.revision} refused "
                    "although the state is still at the version it expects"
                )
            else:
                self.slot.refused(
                    f"the state was rewritten (same revision {self.revision}) "
                    f"while revision {write.revision} was being written"
                )
            self.version = result.version
            self.slot.schedule(self._write_op(write))
        else:
            raise StateDiverged(
                f"the state has revision {header.revision}, expected {self.revision} or "
                f"{write.revision}"
            )

    def _landed(self, write: PendingWrite, version: object) -> None:
        self.slot.succeeded()
        self._confirmed_at = self._renewed_at = self._clock.now
        self.pending_write = None
        self.revision = write.revision
        self.version = version
        if write is not self._renewal:
            # A landed write changed the object: busy. (A renewal does not count: it
            # comes after a third of a lease of quiet, far apart from any other.)
            self._writes_since_poll += 1
        batch = write.batch
        for reply in batch.replies:
            self._out.reply(reply)
        self._notice_landed(write)
        now = self._clock.now
        counters = self.counters
        counters.state_bytes = len(write.data)
        counters.jobs.add(batch.tally)
        if write is not self._renewal:
            counters.latency.observe(now - self._write_issued_at)
            counters.operations.observe(len(batch.replies))
        self.gather.landed(self._write_issued_at, now, len(batch.replies), len(self.open.replies))
        handed_back = False
        for grant in batch.abandoned:
            # Its caller left after the batch went out: hand the job back now.
            handed_back |= self._rules.take_back(grant, self.open, self.context())
        if write.release:
            if handed_back:
                return  # one more release write carries the hand-backs (pump issues it)
            self.events.append(PhaseEvent.RELEASED)  # archives are the successor's
            self.archiver.stop()
            self.deleter.stop()  # and so are deletes: its sweep finds what is left
            self.sweep.stop()
            return
        self.deleter.landed(write.revision)
        for key in sorted(batch.archive_keys):
            self.archiver.write(key)

    def _notice_landed(self, write: PendingWrite) -> None:
        assert self.owner is not None
        epoch, batch, notices = self.owner.epoch, write.batch, self._out.notices
        size = len(write.data)
        notices.add(Committed(epoch, write.revision, len(batch.replies), size, write.release))
        if batch.notices:
            notices.landed(batch.notices, epoch, write.revision)

    def _took_over(self, write: PendingWrite, owner: Owner, version: object) -> None:
        self.owner = owner
        self.counters.takeovers += 1
        self.counters.state_bytes = len(write.data)
        self.slot.succeeded()
        self._confirmed_at = self._renewed_at = self._clock.now
        self.revision = write.revision
        self.version = version
        self._next_poll_at = self._clock.now + self.config.takeover_check
        self.events.append(PhaseEvent.TOOK_OVER)
        # Leases are not persisted: every claimed job gets a full fresh timeout.
        self._rules.start_leases()
        for key in self._rules.table.archive_keys():
            self.archiver.write(key)
        predecessor = self.takeover.predecessor
        if predecessor is not None:
            # Orphans of the epochs now fenced: listed and deleted beside serving.
            segments = self._rules.table.segments
            self.sweep.begin(self._rules.segment_floor, predecessor, [s.key for s in segments])

    # -- segments ----------------------------------------------------------------------

    def pump_segments(self) -> None:
        """Issue the segment reads due (after every input, once commands are applied)."""
        if self.established and not RULES[self.phase].final:
            self.reader.pump()

    def _epoch(self) -> int:
        assert self.owner is not None
        return self.owner.epoch

    def _segment_loaded(self, queues: tuple[str, ...]) -> None:
        self._rules.segment_loaded(queues, self.open, self.context())

    # -- confirming ownership ----------------------------------------------------------

    def _confirm(self, batch: Batch) -> None:
        self.counters.confirms += 1
        key = self.config.state_key
        self.slot.issue(
            StateOp(
                lambda op_id: ReadVersion(op_id, key),
                lambda result: self._on_version(batch, result),
                "check the state's version",
                batch=batch,
            )
        )

    def _on_version(self, batch: Batch, result: StorageResult) -> None:
        assert isinstance(result, VersionRead)
        if result.version is not None and result.version == self.version:
            self._confirmed(batch)
            return
        # Changed: find out by whom (another broker, or a rewrite of our own bytes).
        key = self.config.state_key
        self.slot.issue(
            StateOp(
                lambda op_id: ReadObject(op_id, key),
                lambda found: self._on_confirm_read(batch, found),
                "read the state to confirm ownership",
                batch=batch,
            )
        )

    def _on_confirm_read(self, batch: Batch, result: StorageResult) -> None:
        assert isinstance(result, ObjectRead)
        header = self._owned_header(result.data)
        if header.revision != self.revision:
            raise StateDiverged(
                f"the state has revision {header.revision}, expected {self.revision}"
            )
        self.version = result.version
        self._confirmed(batch)

    def _confirmed(self, batch: Batch) -> None:
        self.slot.succeeded()
        self._confirmed_at = self._clock.now
        for reply in batch.replies:
            self._out.reply(reply)

    def _owned_header(self, data: bytes | None) -> StateHeader:
        """The header of the state read back; raises unless this broker still owns it."""
        if data is None:
            raise StateDiverged("the state object was deleted while this broker owned it")
        assert self.owner is not None
        try:
            header = decode_header(data)
        except UnsupportedSchema:
            # A newer osqueue took over (a rolling upgrade): say "replaced", which
            # clients retry elsewhere, rather than an error about this broker's state.
            successor = peek_owner(data)
            if successor is not None and successor.epoch > self.owner.epoch:
                self.counters.fenced += 1
                raise BrokerReplaced(
                    successor.identity, successor.epoch, successor.address
                ) from None
            raise
        owner = header.owner
        if owner.epoch == self.owner.epoch and owner.incarnation == self.owner.incarnation:
            return header
        if owner.epoch >= self.owner.epoch:
            self.counters.fenced += 1
            raise BrokerReplaced(owner.identity, owner.epoch, owner.address)
        raise StateDiverged(
            f"the state names epoch {owner.epoch}, older than this broker's "
            f"{self.owner.epoch}: was it restored from a backup?"
        )

    # -- stalls, cancellations, failure ------------------------------------------------

    def check_stall(self) -> StorageUnavailable | None:
        """Whether storage is stalled; on becoming so, answer every held reply with
        ``StorageUnavailable`` and take back claims granted in unwritten batches.
        Returns the error new commands should get while it lasts."""
        if not self.slot.stalled():
            self._stalled = False
            return None
        error = StorageUnavailable(
            f"the broker cannot reach its storage ({quote(self.slot.trouble(), 300)}); "
            "it keeps retrying: retry later (a request answered this way may still be "
            "committed once storage recovers)"
        )
        if self._stalled:
            return error
        self._stalled = True
        self.counters.stalls += 1
        # Waiting claims first: a grant taken back below must not go to one of them
        # (its reply would be held in a batch whose replies are being answered now).
        self._rules.answer_waiters(error)
        for batch in self.held_batches():
            for reply in batch.replies:
                self._out.reply(Reply(reply.request_id, error=error))
            for request_id in list(batch.grants):
                self.cancel_grant(request_id, batch)
            batch.replies = []
        return error

    def cancel_grant(self, request_id: RequestId, only: Batch | None = None) -> bool:
        """Take back the claim granted to ``request_id`` if its reply is still held;
        False if no held batch has it. Its reply is withdrawn (the caller answers it)."""
        for batch in [only] if only is not None else self.held_batches():
            grant = batch.grants.pop(request_id, None)
            if grant is None:
                continue
            batch.withdraw(request_id)
            if batch is self.open:
                self._rules.take_back(grant, batch, self.context())
            else:
                batch.abandoned.append(grant)  # handed back once its write has landed
            return True
        return False

    def fail(self) -> list[Batch]:
        """Stop for good; returns the batches whose replies must be answered."""
        batches = self.held_batches()
        self.slot.cancel()
        self.pending_write = None
        self.open = Batch()
        self.archiver.stop()
        self.spiller.stop()
        self.reader.stop()
        self.deleter.stop()
        self.sweep.stop()
        return batches

    # -- takeover requests, owner side -------------------------------------------------

    def _poll_takeover_request(self) -> None:
        now = self._clock.now
        if not RULES[self.phase].polls_takeover_requests or now < self._next_poll_at:
            return
        # Busy means a write landed in the last interval: an idle owner cannot starve anyone,
        # but even one write per interval can, if the challenger's read-and-write cycle
        # is longer than that (a large state on GCS). One small read per interval.
        busy = self._writes_since_poll > 0
        self._writes_since_poll = 0
        self._next_poll_at = now + self.config.takeover_check
        if not busy or self._polling:
            return
        self._polling = True
        key = self.config.takeover_request_key
        self._out.issue(lambda op_id: ReadObject(op_id, key), self._on_takeover_request)

    def _on_takeover_request(self, result: StorageResult) -> None:
        self._polling = False
        if not isinstance(result, ObjectRead) or result.data is None or self.owner is None:
            return  # no request, or unreadable now: look again at the next poll
        if result.version == self._honoured:
            return
        request = decode_takeover_request(result.data)
        if request is None or request.target_epoch != self.owner.epoch:
            return
        # Once per version of the request: a dead challenger costs one pause at most.
        self._honoured = result.version
        self.counters.yields += 1
        self._yield_until = self._clock.now + min(request.hold, self.config.takeover_yield_max)


def failure_replies(batches: list[Batch], error: OsqueueError) -> list[Reply]:
    """``error`` for every reply held in ``batches``."""
    return [Reply(reply.request_id, error=error) for batch in batches for reply in batch.replies]
