"""Taking the state object over: the steps a broker runs while STARTING.

1. **Read** the state. Absent: look for history (epoch markers, archive objects); a
   queue with history but no state is refused (``StateMissing``) unless
   ``BrokerConfig.recreate``. Present: decode all of it (``CorruptState`` or
   ``UnsupportedSchema`` fail the broker; it never writes what it could not read).
2. **Reserve** the new epoch: create its marker, create-only. Found taken (a state
   restored from a backup, a broker racing us): if it is our own marker (an earlier
   attempt landed) keep it, otherwise list the markers and try above the highest.
   Epochs therefore never repeat, and with them job ids and archive keys.
3. **Write** the same jobs under the new epoch, revision + 1, conditional on the version
   read. Landed: this broker owns the state. Conflicted or unknown: read again (maybe it
   was ours after all) and go round. A busy owner can win this race forever, since each
   of its writes changes the version we need; so after losing once, the challenger asks
   the owner through the takeover request object to pause for a moment (the owner
   honours it within ``takeover_check``), and gives up after ``takeover_timeout``.

A broker started as a standby (:mod:`osqueue_core.standby`) begins here only once the
owner's lease lapsed, expecting the state still at the version it watched: if it is not
(the owner wrote after all), or the takeover write loses to another writer, it steps
back to watching instead of asking anyone to pause. Otherwise starting a broker
displaces the current owner, live or not.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs

from osqueue_core.archive import archive_key_epoch
from osqueue_core.batch import Batch, PendingWrite
from osqueue_core.clock import Clock
from osqueue_core.codec import (
    SCHEMA_VERSION,
    DecodedState,
    StateHeader,
    decode_header,
    decode_state,
    encode_state,
)
from osqueue_core.config import BrokerConfig
from osqueue_core.effects import ListKeys, ReadObject, ReadVersion, WriteObject
from osqueue_core.errors import BrokerNotRunning, StateMissing
from osqueue_core.events import (
    KeysListed,
    ObjectCorrupt,
    ObjectRead,
    ObjectWritten,
    StorageResult,
    VersionRead,
    WriteConflicted,
)
from osqueue_core.markers import (
    TakeoverRequest,
    encode_marker,
    encode_takeover_request,
    marker_epoch,
    marker_key,
)
from osqueue_core.outbox import Outbox
from osqueue_core.owner import Owner
from osqueue_core.quoting import quote
from osqueue_core.rules import JobRules
from osqueue_core.slot import StateOp, StateSlot

#: A challenger asks the owner to pause for this many of its own read-write cycles.
HOLD_CYCLES = 4
MIN_HOLD = 0.25


Landed = Callable[[PendingWrite, Owner, object], None]
#: ``on_stepped_back(version, owner)``: a standby's takeover found the owner alive.
SteppedBack = Callable[[object | None, Owner | None], None]

#: ``begin()`` without an expected version: take over whatever is there.
ANY_VERSION = object()


class Takeover:
    """The takeover steps of one broker. ``on_landed`` is called with the takeover
    write, the new owner record and its version once this broker owns the state;
    ``owner`` is who we will be (its epoch is filled in once reserved)."""

    def __init__(
        self,
        config: BrokerConfig,
        clock: Clock,
        outbox: Outbox,
        slot: StateSlot,
        rules: JobRules,
        owner: Owner,
        on_landed: Landed,
        on_stepped_back: SteppedBack | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._out = outbox
        self._slot = slot
        self._rules = rules
        self._me = owner
        self._on_landed = on_landed
        self._on_stepped_back = on_stepped_back
        #: The version a standby expects (ANY_VERSION: not a standby's takeover).
        self._expect: object | None = ANY_VERSION
        self._reserved: int | None = None
        #: Our epoch was never reserved with a marker (a brand-new queue's epoch 1).
        self._unmarked = False
        #: What history a missing state's queue has: set while the state is re-read.
        self._history: tuple[str, int] | None = None
        self._state: tuple[DecodedState | None, object | None] = (None, None)
        #: The epoch of the owner the state was taken over from, once it was (None: a
        #: new or recreated queue, which had no owner).
        self.predecessor: int | None = None
        self._pending: PendingWrite | None = None
        self._started_at = math.inf
        self._cycle_started_at = math.inf
        self._hold = 0.0
        self._next_request_at = -math.inf
        #: Takeover writes lost to another writer, and takeover requests posted.
        self.conflicts = 0
        self.requests = 0

    def begin(self, expect: object | None = ANY_VERSION) -> None:
        """Take the state over; a standby passes the version it saw lapse (None: it
        saw no state) and steps back if the state has moved on since."""
        self._expect = expect
        self._started_at = self._clock.now
        self._read()

    # -- 1. read -----------------------------------------------------------------------

    def _read(self) -> None:
        self._cycle_started_at = self._clock.now
        key = self._config.state_key
        self._slot.issue(
            StateOp(
                lambda op_id: ReadObject(op_id, key),
                self._on_state,
                "read the state object to take it over",
                give_up_after=self._config.start_attempts,
            )
        )

    def _on_state(self, result: StorageResult) -> None:
        assert isinstance(result, ObjectRead)
        pending = self._pending
        if pending is not None and result.data is not None and self._is_ours(result.data):
            self._done(pending, result.version)
            return
        if result.data is not None and self._expect not in (ANY_VERSION, result.version):
            self._step_back(result.version, decode_header(result.data).owner)
            return
        if result.data is None:
            self._state = (None, None)
            if self._history is not None:
                # Read again after finding markers, and still absent: it was deleted.
                self._refuse_or_recreate(*self._history)
            else:
                self._list(self._config.epoch_prefix, None, self._on_markers)
            return
        self._history = None
        decoded = decode_state(result.data)
        self._state = (decoded, result.version)
        self._reserve(decoded.header.owner.epoch + 1)

    def _is_ours(self, data: bytes) -> bool:
        header = decode_header(data)
        owner = header.owner
        return (
            self._pending is not None
            and header.revision == self._pending.revision
            and owner.epoch == self._reserved
            and owner.incarnation == self._me.incarnation
        )

    def _list(self, prefix: str, limit: int | None, then: Callable[[StorageResult], None]) -> None:
        self._slot.issue(
            StateOp(
                lambda op_id: ListKeys(op_id, prefix, limit),
                then,
                f"list {prefix!r}",
                give_up_after=self._config.start_attempts,
            )
        )

    def _on_markers(self, result: StorageResult) -> None:
        assert isinstance(result, KeysListed)
        epochs = self._epochs(result.keys)
        if epochs:
            # A marker exists only once a state did (a new queue's first marker is
            # written after its state): unless a broker created the state since our
            # read, it was deleted. Read it once more to tell.
            self._history = (f"epoch markers up to {max(epochs)}", max(epochs))
            self._read()
        else:
            self._list(self._config.archive_prefix, 1, self._on_archive)

    def _on_archive(self, result: StorageResult) -> None:
        assert isinstance(result, KeysListed)
        if result.keys:
            self._refuse_or_recreate("archive objects", 0)
            return
        # A brand-new queue. Its first write is create-only, so it needs no marker to
        # own epoch 1; the marker follows once the state exists (see _on_markers).
        self._reserved = 1
        self._unmarked = True
        self._write()

    def _refuse_or_recreate(self, found: str, highest_epoch: int) -> None:
        if not self._config.recreate:
            raise StateMissing(
                f"the state object {self._config.state_key!r} is missing, but this queue "
                f"has history ({found}): restore the state object from a backup or fix "
                "the storage URL; to start a new, empty queue here anyway, set "
                "BrokerConfig.recreate (--recreate)"
            )
        # Asked for explicitly, and rare: worth a full listing. Archive keys name the
        # epochs that wrote them, which covers queues older than epoch markers.
        self._slot.issue(
            StateOp(
                lambda op_id: ListKeys(op_id, self._config.archive_prefix, None),
                lambda result: self._recreate_above(highest_epoch, result),
                "list the archive",
                give_up_after=self._config.start_attempts,
            )
        )

    def _recreate_above(self, highest_epoch: int, result: StorageResult) -> None:
        assert isinstance(result, KeysListed)
        archived = [archive_key_epoch(key) for key in result.keys]
        self._reserve(max([highest_epoch, *(e for e in archived if e is not None)]) + 1)

    def _epochs(self, keys: tuple[str, ...]) -> list[int]:
        prefix = self._config.epoch_prefix
        return [epoch for key in keys if (epoch := marker_epoch(prefix, key)) is not None]

    # -- 2. reserve --------------------------------------------------------------------

    def _reserve(self, epoch: int) -> None:
        if self._reserved is not None and self._reserved >= epoch:
            self._write()  # still ahead of the state: our reservation stands
            return
        self._slot.issue(self._reserve_op(epoch))

    def _reserve_op(self, epoch: int) -> StateOp:
        key = marker_key(self._config.epoch_prefix, epoch)
        data = encode_marker(epoch, self._me.identity, self._me.incarnation)
        return StateOp(
            lambda op_id: WriteObject(op_id, key, data, None),
            lambda result: self._on_reserved(epoch, data, result),
            f"reserve epoch {epoch}",
            give_up_after=self._config.start_attempts,
            writes=True,
        )

    def _on_reserved(self, epoch: int, data: bytes, result: StorageResult) -> None:
        if isinstance(result, ObjectWritten):
            self._reserved = epoch
            self._unmarked = False
            self._write()
            return
        # Taken, or unknown: read the marker to see whose it is.
        key = marker_key(self._config.epoch_prefix, epoch)
        self._slot.issue(
            StateOp(
                lambda op_id: ReadObject(op_id, key),
                lambda found: self._on_marker(epoch, data, found),
                f"read the marker of epoch {epoch}",
                give_up_after=self._config.start_attempts,
                accepts_corrupt=True,
            )
        )

    def _on_marker(self, epoch: int, data: bytes, result: StorageResult) -> None:
        # A damaged marker is nobody's: only whose it is matters, not what it says.
        damaged = isinstance(result, ObjectCorrupt)
        assert damaged or isinstance(result, ObjectRead)
        found = None if damaged else result.data  # type: ignore[union-attr]
        if not damaged and found == data:
            self._reserved = epoch  # our own earlier attempt landed
            self._unmarked = False
            self._write()
        elif not damaged and found is None:
            # Refused as taken, yet absent (an unknown outcome that did not land, or a
            # store that contradicts itself): try again, after a backoff.
            self._slot.count_failed_attempt()
            self._slot.schedule(self._reserve_op(epoch))
        else:
            # Used before: the state was restored or recreated, or a rival is starting.
            self._list(self._config.epoch_prefix, None, self._on_used_markers)

    def _on_used_markers(self, result: StorageResult) -> None:
        assert isinstance(result, KeysListed)
        decoded = self._state[0]
        floor = decoded.header.owner.epoch if decoded is not None else 0
        self._reserve(max([floor, *self._epochs(result.keys)]) + 1)

    # -- 3. write ----------------------------------------------------------------------

    def _write(self) -> None:
        assert self._reserved is not None
        decoded, version = self._state
        jobs = decoded.jobs if decoded is not None else []
        next_seq = decoded.header.next_seq if decoded is not None else 0
        revision = decoded.header.revision if decoded is not None else 0
        keys = decoded.header.keys if decoded is not None else ()
        refs = decoded.segments if decoded is not None else []
        # A new queue's life (or a recreated one's) starts at its first epoch.
        floor = decoded.header.segment_floor if decoded is not None else self._reserved
        self._rules.load(jobs, next_seq, keys, refs, floor)
        owner = attrs.evolve(self._me, epoch=self._reserved)
        header = StateHeader(SCHEMA_VERSION, revision + 1, owner, next_seq, segment_floor=floor)
        rules = self._rules
        table = rules.table
        encoded_refs = table.segments.encoded_refs()
        data = encode_state(header, table.encoded_chunks(), rules.encoded_keys(), encoded_refs)
        write = PendingWrite(revision + 1, data, Batch(), takeover=True)
        self._pending = write
        key = self._config.state_key
        self._slot.issue(
            StateOp(
                lambda op_id: WriteObject(op_id, key, data, version),
                lambda result: self._on_written(write, owner, result),
                "write the takeover",
                write=write,
                writes=True,
                give_up_after=self._config.start_attempts,
            )
        )

    def _on_written(self, write: PendingWrite, owner: Owner, result: StorageResult) -> None:
        if isinstance(result, ObjectWritten):
            self._land(write, owner, result.version)
            return
        # Lost to another writer, or unknown: read again (it may be ours after all).
        self.conflicts += 1
        if isinstance(result, WriteConflicted):
            self._slot.count_failed_attempt()  # (a storage failure was counted already)
        now = self._clock.now
        decoded = self._state[0]
        if self._expect is not ANY_VERSION:
            # A standby never pushes a live owner: read again; a state that moved on
            # sends it back to watching (an unknown outcome may still prove ours).
            self._read()
            return
        if now - self._started_at >= self._config.takeover_timeout:
            holder = decoded.header.owner if decoded is not None else None
            who = f"{quote(holder.identity)} (epoch {holder.epoch})" if holder else "another writer"
            raise BrokerNotRunning(
                f"could not take over the state object in "
                f"{self._config.takeover_timeout:g}s: {who} kept changing it and did not "
                "pause for the takeover request (an osqueue older than this one?): stop it "
                "first"
            )
        if decoded is not None and not decoded.header.owner.released:
            self._ask_owner_to_pause(decoded.header.owner.epoch, now - self._cycle_started_at)
        self._read()

    def _step_back(self, version: object | None, owner: Owner | None) -> None:
        assert self._on_stepped_back is not None
        self._state = (None, None)
        self._pending = None
        self._history = None
        self._rules.load([], 0)  # forget what the lost attempt loaded
        self._on_stepped_back(version, owner)

    def _done(self, write: PendingWrite, version: object) -> None:
        assert self._reserved is not None
        self._land(write, attrs.evolve(self._me, epoch=self._reserved), version)

    def _land(self, write: PendingWrite, owner: Owner, version: object) -> None:
        if self._unmarked:
            # A new queue's state exists now: its epoch-1 marker records that it did,
            # so that a deleted state is noticed. Best effort: if it never lands, the
            # next takeover reserves epoch 2 anyway.
            key = marker_key(self._config.epoch_prefix, owner.epoch)
            data = encode_marker(owner.epoch, owner.identity, owner.incarnation)
            self._out.issue(lambda op_id: WriteObject(op_id, key, data, None), _ignore)
        decoded = self._state[0]
        self.predecessor = decoded.header.owner.epoch if decoded is not None else None
        # Done: what was read and written to get here is not kept (it may be large).
        self._state = (None, None)
        self._pending = None
        self._on_landed(write, owner, version)

    # -- asking a busy owner to pause --------------------------------------------------

    def _ask_owner_to_pause(self, target_epoch: int, cycle: float) -> None:
        now = self._clock.now
        if now < self._next_request_at:
            return
        limit = self._config.takeover_yield_max
        # Each request that did not do it asks for twice the pause of the one before.
        self._hold = min(limit, max(MIN_HOLD, HOLD_CYCLES * cycle, 2 * self._hold))
        self._next_request_at = now + self._hold
        self.requests += 1
        me = self._me
        data = encode_takeover_request(
            TakeoverRequest(target_epoch, me.identity, me.incarnation, self._hold, self.requests)
        )
        key = self._config.takeover_request_key
        # Beside the state operation: read the request's version, then replace it.

        def on_version(result: StorageResult) -> None:
            if isinstance(result, VersionRead):
                self._out.issue(
                    lambda op_id: WriteObject(op_id, key, data, result.version),
                    _ignore,  # lost to another challenger, or failed: either way fine
                )

        self._out.issue(lambda op_id: ReadVersion(op_id, key), on_version)


def _ignore(result: StorageResult) -> None:
    """The result of a best-effort side write: nothing depends on it."""
