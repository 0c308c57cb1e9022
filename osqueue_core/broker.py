"""The broker state machine: commands and storage results in, effects out.

Theory of operation (docs/architecture.md has the long form):

* Inputs: ``start``, ``submit`` (client commands), ``receive`` (storage results),
  ``tick`` (time passed), ``cancel_claim`` and ``stop``. Every input carries ``now``:
  UNIX time in seconds (job timestamps and archive buckets are UTC times; leases only
  need durations). Nothing here reads a clock; a clock that steps back is ignored.
* Output: effects, pulled with ``take_effects()`` after every input. The runtime
  executes storage effects and feeds each result back; it sends ``Reply`` effects to
  callers; it calls ``tick`` at ``next_deadline()``.
* One state operation (read or write of the state object) is in flight at a time.
  Commands are applied at once to the in-memory head state and collected in the open
  batch; when no operation is in flight the open batch is written (group commit), and
  its replies are released when that write lands. Nothing is acknowledged before it is
  durable.
* Every write carries ``revision`` + 1 and this broker's epoch, and is conditional on
  the version last seen. A conflict or an ambiguous failure is resolved by reading the
  state back: our revision there means it landed, the previous one means it did not
  (so the very same bytes are written again: a batch is never applied twice), a newer
  epoch means another broker took over: this one fails every request with
  ``BrokerReplaced`` and never writes again.
* Leases live in memory. A lease is promised only after an operation issued after the
  promise confirmed this broker still owns the state, and a successor grants every
  claimed job a full fresh timeout, so two workers never hold a job at once.

Two rules for this module: no I/O, clock or randomness (effects out, time in), and no
exception other than an ``OsqueueError`` crossing its public methods for bad input.
"""

from __future__ import annotations

import math
from collections import deque

import attrs

from osqueue_core.archive_writes import ArchiveWrites
from osqueue_core.batch import Batch, PendingWrite, Purpose, StateOperation
from osqueue_core.codec import (
    SCHEMA_VERSION,
    StateHeader,
    decode_header,
    decode_state,
    encode_archive,
    encode_state,
    peek_owner,
)
from osqueue_core.commands import (
    Claim,
    Command,
    RequestId,
)
from osqueue_core.config import BrokerConfig
from osqueue_core.effects import Effect, ReadState, Reply, WriteArchive, WriteState
from osqueue_core.errors import (
    BrokerNotRunning,
    BrokerReplaced,
    BrokerStopping,
    InvalidArgument,
    OsqueueError,
    StateDiverged,
    UnsupportedSchema,
)
from osqueue_core.events import (
    ArchiveWritten,
    StateRead,
    StateWritten,
    StorageFailed,
    StorageResult,
    WriteConflicted,
)
from osqueue_core.job import Job, JobStatus
from osqueue_core.owner import Owner
from osqueue_core.phase import Phase
from osqueue_core.results import (
    NothingToClaim,
)
from osqueue_core.table import JobTable
from osqueue_core.transitions import JobTransitions
from osqueue_core.waiters import WaitingClaims


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


class Broker(JobTransitions):
    """A Sans-IO job-queue broker. Drive it as the module docstring says."""

    def __init__(
        self,
        config: BrokerConfig | None = None,
        *,
        identity: str,
        incarnation: str,
        address: str | None = None,
    ) -> None:
        if not identity or not incarnation:
            raise InvalidArgument("a broker needs a non-empty identity and incarnation")
        self.config = config or BrokerConfig()
        self.identity = identity
        self.incarnation = incarnation
        self.address = address
        self._phase = Phase.STARTING
        self._started = False
        self._stop_requested = False
        self._failure: OsqueueError | None = None
        self._now = -math.inf
        self._effects: list[Effect] = []
        self._next_op_id = 1

        self._table = JobTable()
        self._owner: Owner | None = None
        self._revision = 0  # last revision known durable
        self._version: object | None = None  # storage token of that revision

        self._open = Batch()
        self._inbox: deque[Command] = deque()
        self._op: StateOperation | None = None
        self._pending_write: PendingWrite | None = None
        self._retry: StateOperation | None = None
        self._retry_at = math.inf
        self._failures = 0
        self._confirmed_at = -math.inf  # when a state operation last proved ownership

        self._waiters = WaitingClaims()

        self._archives = ArchiveWrites()

    # -- public inputs ---------------------------------------------------------------

    def start(self, now: float) -> None:
        """Begin: read the state object, then take it over. Call once."""
        if self._started:
            raise InvalidArgument("start() was already called")
        self._started = True
        self._advance(now)
        self._issue(ReadState, Purpose.TAKEOVER_READ)

    def submit(self, command: Command, now: float) -> None:
        """A client command. Its reply comes out as a ``Reply`` effect, now or later."""
        self._advance(now)
        if self._phase is Phase.FAILED:
            assert self._failure is not None
            self._reply_error(command.request_id, self._failure)
        elif self._phase in (Phase.STOPPING, Phase.STOPPED) or self._stop_requested:
            self._reply_error(command.request_id, BrokerStopping())
        elif self._phase is Phase.STARTING or self._inbox or self._batch_full():
            self._inbox.append(command)
        else:
            self._apply(command)
        self._pump()

    def receive(self, result: StorageResult, now: float) -> None:
        """The outcome of a storage effect this broker emitted.

        Raises ``InvalidArgument`` (changing nothing) if ``result`` is not a possible
        answer to the effect it names: a runtime bug.
        """
        if self._archives.owns(result.op_id):
            _check_answer(result, (ArchiveWritten, StorageFailed), "WriteArchive")
            self._advance(now)
            self._on_archive_result(result)
        elif self._op is not None and result.op_id == self._op.op_id:
            if self._op.purpose in (Purpose.TAKEOVER_WRITE, Purpose.BATCH_WRITE):
                _check_answer(result, (StateWritten, WriteConflicted, StorageFailed), "WriteState")
            else:
                _check_answer(result, (StateRead, StorageFailed), "ReadState")
            self._advance(now)
            op, self._op = self._op, None
            self._on_state_result(op, result)
        else:
            self._advance(now)
        # Anything else answers an operation this broker no longer waits for (it failed
        # or stopped meanwhile): ignoring it is safe, nothing was acknowledged on it.
        self._pump()

    def tick(self, now: float) -> None:
        """Time passed: expire leases and waits, retry failed operations."""
        self._advance(now)
        self._pump()

    def cancel_claim(self, request_id: RequestId, now: float) -> None:
        """The caller of a waiting claim gave up: answer it ``NothingToClaim`` now.

        A claim already matched to a job is not cancelled; its reply still comes.
        """
        self._advance(now)
        if self._waiters.withdraw(request_id):
            self._effects.append(Reply(request_id, NothingToClaim()))
        else:
            # Not yet applied (during start-up, or behind a full batch): withdraw it.
            for command in self._inbox:
                if isinstance(command, Claim) and command.request_id == request_id:
                    self._inbox.remove(command)
                    self._effects.append(Reply(request_id, NothingToClaim()))
                    break
        self._pump()

    def stop(self, now: float) -> None:
        """Shut down cleanly: finish what was accepted, then release ownership.

        New commands get ``BrokerStopping``; waiting claims get ``NothingToClaim``.
        ``phase`` becomes STOPPED once the release write has landed.
        """
        self._advance(now)
        self._stop_requested = True
        if self._phase is Phase.RUNNING:
            self._phase = Phase.STOPPING
        if self._phase in (Phase.STARTING, Phase.STOPPING):
            self._answer_waiters()
        self._pump()

    # -- public outputs --------------------------------------------------------------

    def take_effects(self) -> list[Effect]:
        """Everything the runtime must do now, in order. Call after every input."""
        effects, self._effects = self._effects, []
        return effects

    def next_deadline(self) -> float | None:
        """When to call ``tick`` next (None: only when something else happens)."""
        if self._phase in (Phase.STOPPED, Phase.FAILED):
            return None
        archive_retry = self._archives.next_retry()
        candidates = [self._retry_at, math.inf if archive_retry is None else archive_retry]
        if self._phase in (Phase.RUNNING, Phase.STOPPING):
            lease = self._table.next_lease_deadline()
            if lease is not None:
                candidates.append(lease)
            if (
                self._op is None
                and self._retry is None
                and self._open.dirty
                and self._open.first_change_at is not None
            ):
                candidates.append(self._open.first_change_at + self.config.linger)
            check = self.config.ownership_check
            if (
                check is not None
                and self._phase is Phase.RUNNING
                and self._op is None
                and self._retry is None
                and not self._open.needs_operation()  # its own operation confirms too
            ):
                candidates.append(self._confirmed_at + check)
        waiting = self._waiters.next_deadline()
        if waiting is not None:
            candidates.append(waiting)
        deadline = min(candidates)
        return None if deadline == math.inf else deadline

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def failure(self) -> OsqueueError | None:
        """Why the broker FAILED (replaced, corrupt state, unreachable storage)."""
        return self._failure

    @property
    def owner(self) -> Owner | None:
        return self._owner

    def stats(self) -> BrokerStats:
        return BrokerStats(
            phase=self._phase,
            identity=self.identity,
            epoch=self._owner.epoch if self._owner else 0,
            revision=self._revision,
            ready=self._table.ready_count,
            claimed=self._table.claimed_count,
            finished_pending_archive=self._table.finished_count,
            waiting_claims=len(self._waiters),
        )

    def job(self, job_id: str) -> Job | None:
        """The head (possibly not yet durable) version of a job, for inspection."""
        return self._table.get(job_id)

    # -- time ------------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        # A clock that steps back must not un-expire anything.
        self._now = max(self._now, float(now))
        if self._phase in (Phase.RUNNING, Phase.STOPPING):
            self._expire_leases()
        self._expire_waiters()

    # -- applying commands -----------------------------------------------------------

    # -- issuing state operations ----------------------------------------------------

    def _pump(self) -> None:
        """Issue the next state operation if one is due. Called after every input."""
        if self._phase in (Phase.RUNNING, Phase.STOPPING):
            self._retry_archives()  # independent of the state operation
        if self._phase in (Phase.STOPPED, Phase.FAILED) or self._op is not None:
            return
        if self._retry is not None:
            if self._now >= self._retry_at:
                retry, self._retry, self._retry_at = self._retry, None, math.inf
                self._reissue(retry)
            return
        if self._phase is Phase.STARTING:
            return
        batch = self._open
        if self._phase is Phase.STOPPING and not self._inbox:
            # Everything accepted is applied: one last write commits it and releases
            # ownership (a landed write also confirms any held heartbeat replies).
            self._write_batch(release=True)
        elif batch.dirty:
            lingering = (
                self._phase is Phase.RUNNING
                and not self._batch_full()
                and batch.first_change_at is not None
                and self._now < batch.first_change_at + self.config.linger
            )
            if not lingering:
                self._write_batch()
        elif batch.replies:
            self._issue(ReadState, Purpose.CONFIRM_READ, batch=batch)
            self._open_next_batch()
        elif (
            self._phase is Phase.RUNNING
            and self.config.ownership_check is not None
            and self._now >= self._confirmed_at + self.config.ownership_check
        ):
            # Idle: a read is how a broker that writes nothing learns it was replaced.
            self._issue(ReadState, Purpose.CONFIRM_READ, batch=Batch())

    def _open_next_batch(self) -> None:
        """After the open batch went out with an operation: start the next one."""
        self._open = Batch()
        # Commands that waited for room go into the new batch, in arrival order.
        while self._inbox and not self._batch_full():
            self._apply(self._inbox.popleft())

    def _write_batch(self, *, release: bool = False) -> None:
        assert self._owner is not None
        owner = attrs.evolve(self._owner, released=True) if release else self._owner
        write = self._encode_write(owner, self._open, release=release)
        self._pending_write = write
        self._issue(WriteState, Purpose.BATCH_WRITE, write=write)
        self._open_next_batch()

    def _encode_write(
        self, owner: Owner, batch: Batch, *, takeover: bool = False, release: bool = False
    ) -> PendingWrite:
        revision = self._revision + 1
        header = StateHeader(SCHEMA_VERSION, revision, owner, self._table.next_seq)
        data = encode_state(header, self._table.encoded_chunks())
        return PendingWrite(revision, data, batch, takeover=takeover, release=release)

    def _new_op_id(self) -> int:
        op_id = self._next_op_id
        self._next_op_id += 1
        return op_id

    def _issue(
        self,
        kind: type[ReadState] | type[WriteState],
        purpose: Purpose,
        *,
        write: PendingWrite | None = None,
        batch: Batch | None = None,
    ) -> None:
        op = StateOperation(self._new_op_id(), purpose, write=write, batch=batch)
        self._op = op
        key = self.config.state_key
        if kind is ReadState:
            self._effects.append(ReadState(op.op_id, key))
        else:
            assert write is not None
            expected = None if write.takeover and self._version is None else self._version
            self._effects.append(WriteState(op.op_id, key, write.data, expected, write.revision))

    def _reissue(self, op: StateOperation) -> None:
        kind = (
            WriteState if op.purpose in (Purpose.TAKEOVER_WRITE, Purpose.BATCH_WRITE) else ReadState
        )
        self._issue(kind, op.purpose, write=op.write, batch=op.batch)

    def _retry_later(self, op: StateOperation, message: str) -> None:
        """Count a failed attempt and schedule ``op`` again after backoff."""
        self._failures += 1
        if self._phase is Phase.STARTING and self._failures >= self.config.start_attempts:
            self._fail(
                BrokerNotRunning(
                    f"could not take over the state object after {self._failures} "
                    f"attempts; last storage error: {message or 'unknown'}"
                )
            )
            return
        self._schedule(op)

    def _schedule(self, op: StateOperation) -> None:
        self._retry = op
        self._retry_at = self._now + self._backoff(max(1, self._failures))

    def _backoff(self, failures: int) -> float:
        return float(min(self.config.retry_max, self.config.retry_initial * 2 ** (failures - 1)))

    # -- state operation results -----------------------------------------------------

    def _on_state_result(self, op: StateOperation, result: StorageResult) -> None:
        try:
            match result:
                case StateRead():
                    self._on_read(op, result)
                case StateWritten():
                    assert op.write is not None
                    self._landed(op.write, result.version)
                case WriteConflicted() | StorageFailed(outcome_unknown=True) if op.write:
                    # Counted, so that a write that keeps failing this way backs off
                    # (and, while starting, eventually gives up).
                    self._failures += 1
                    self._resolve(op)
                case StorageFailed():
                    self._retry_later(op, result.message)
        except OsqueueError as error:
            # Corrupt or newer state, divergence, replacement: stop, never write again.
            self._fail(error, op)

    def _resolve(self, op: StateOperation) -> None:
        """A write may or may not have landed: read the state back to find out."""
        assert op.write is not None
        purpose = Purpose.TAKEOVER_READ if op.write.takeover else Purpose.RESOLVE_READ
        self._issue(ReadState, purpose, write=op.write)

    def _on_read(self, op: StateOperation, result: StateRead) -> None:
        write = op.write
        if op.purpose is Purpose.TAKEOVER_READ:
            if write is not None and result.data is not None and self._is_ours(result.data, write):
                self._landed(write, result.version)
            else:
                self._take_over(result.data, result.version)
            return
        if result.data is None:
            raise StateDiverged("the state object was deleted while this broker owned it")
        try:
            header = decode_header(result.data)
        except UnsupportedSchema:
            # A newer osqueue took over (a rolling upgrade): say "replaced", which
            # clients retry elsewhere, rather than an error about this broker's state.
            successor = peek_owner(result.data)
            if successor is not None and self._owner and successor.epoch > self._owner.epoch:
                raise BrokerReplaced(
                    successor.identity, successor.epoch, successor.address
                ) from None
            raise
        self._check_owner(header)
        if op.purpose is Purpose.RESOLVE_READ:
            assert write is not None
            if header.revision == write.revision:
                self._landed(write, result.version)
            elif header.revision == self._revision:
                # Certainly not landed, and nobody else wrote: send the same bytes again
                # (after backoff: the store just failed or refused this write).
                self._version = result.version
                self._schedule(StateOperation(0, Purpose.BATCH_WRITE, write=write))
            else:
                raise StateDiverged(
                    f"the state has revision {header.revision}, expected {self._revision} "
                    f"or {write.revision}"
                )
        else:  # CONFIRM_READ
            assert op.batch is not None
            if header.revision != self._revision:
                raise StateDiverged(
                    f"the state has revision {header.revision}, expected {self._revision}"
                )
            self._version = result.version
            self._failures = 0
            self._confirmed_at = self._now
            self._effects.extend(op.batch.replies)

    def _is_ours(self, data: bytes, write: PendingWrite) -> bool:
        header = decode_header(data)
        owner = header.owner
        return (
            header.revision == write.revision
            and owner.epoch == (self._owner.epoch if self._owner else 0)
            and owner.incarnation == self.incarnation
            and owner.identity == self.identity
        )

    def _check_owner(self, header: StateHeader) -> None:
        assert self._owner is not None
        owner = header.owner
        if owner.epoch == self._owner.epoch and owner.incarnation == self.incarnation:
            return
        if owner.epoch >= self._owner.epoch:
            raise BrokerReplaced(owner.identity, owner.epoch, owner.address)
        raise StateDiverged(
            f"the state names epoch {owner.epoch}, older than this broker's "
            f"{self._owner.epoch}: was it restored from a backup?"
        )

    def _take_over(self, data: bytes | None, version: object | None) -> None:
        if data is None:
            jobs: list[Job] = []
            next_seq, epoch, revision = 0, 1, 0
            self._version = None
        else:
            decoded = decode_state(data)
            jobs = decoded.jobs
            next_seq = decoded.header.next_seq
            epoch = decoded.header.owner.epoch + 1
            revision = decoded.header.revision
            self._version = version
        self._revision = revision
        self._table = JobTable(jobs, next_seq)
        owner = Owner(self.identity, self.incarnation, epoch, self.address)
        write = self._encode_write(owner, Batch(), takeover=True)
        self._pending_write = write
        self._owner = owner
        self._issue(WriteState, Purpose.TAKEOVER_WRITE, write=write)

    def _landed(self, write: PendingWrite, version: object) -> None:
        self._failures = 0
        self._confirmed_at = self._now
        self._pending_write = None
        self._revision = write.revision
        self._version = version
        if write.takeover:
            self._phase = Phase.STOPPING if self._stop_requested else Phase.RUNNING
            # Leases are not persisted: every claimed job gets a full fresh timeout.
            deadline = self._now + self.config.heartbeat_timeout
            for job in self._table:
                if job.status is JobStatus.CLAIMED:
                    self._table.set_lease(job.id, deadline)
            for key in self._table.archive_keys():
                self._write_archive(key)
            if self._stop_requested:
                self._reply_inbox(BrokerStopping())
            while self._inbox and not self._batch_full():
                self._apply(self._inbox.popleft())
            return
        self._effects.extend(write.batch.replies)
        if write.release:
            self._phase = Phase.STOPPED  # pending archives are the successor's
            return
        for key in sorted(write.batch.archive_keys):
            self._write_archive(key)

    # -- archive ---------------------------------------------------------------------

    def _write_archive(self, key: str) -> None:
        if self._archives.in_flight(key):
            return
        jobs = self._table.archived_under(key)
        if not jobs:
            return
        op_id = self._new_op_id()
        self._archives.started(op_id, key)
        data = encode_archive(key, self._table.fragments(jobs))
        self._effects.append(WriteArchive(op_id, key, data))

    def _on_archive_result(self, result: StorageResult) -> None:
        key = self._archives.finished(result.op_id)
        if self._phase in (Phase.STOPPED, Phase.FAILED):
            return
        if isinstance(result, ArchiveWritten):
            self._archives.succeeded(key)
            # The archive object is durable: the jobs may now leave the state.
            for job in self._table.archived_under(key):
                self._table.remove(job.id)
            self._changed()
        else:
            self._archives.failed(key, self._now, self._backoff)

    def _retry_archives(self) -> None:
        for key in self._archives.due(self._now):
            self._write_archive(key)

    # -- failure ---------------------------------------------------------------------

    def _fail(self, error: OsqueueError, failed_op: StateOperation | None = None) -> None:
        """Stop for good: answer everything pending with ``error``, never write again."""
        self._phase = Phase.FAILED
        self._failure = error
        held: list[Batch] = [self._open]
        for op in (failed_op, self._op, self._retry):
            if op is not None and op.batch is not None:
                held.append(op.batch)
        if self._pending_write is not None:
            held.append(self._pending_write.batch)
        self._op = self._retry = self._pending_write = None
        self._retry_at = math.inf
        self._archives.drop_retries()
        self._open = Batch()
        answered: set[int] = set()
        for batch in held:
            if id(batch) in answered:
                continue
            answered.add(id(batch))
            for reply in batch.replies:
                self._reply_error(reply.request_id, error)
        self._reply_inbox(error)
        for request_id in self._waiters.take_all():
            self._reply_error(request_id, error)

    def _reply_inbox(self, error: OsqueueError) -> None:
        while self._inbox:
            self._reply_error(self._inbox.popleft().request_id, error)

    def _answer_waiters(self) -> None:
        for request_id in self._waiters.take_all():
            self._effects.append(Reply(request_id, NothingToClaim()))


def _check_answer(result: StorageResult, allowed: tuple[type, ...], effect: str) -> None:
    if not isinstance(result, allowed):
        raise InvalidArgument(f"{type(result).__name__} is not an answer to {effect}")
