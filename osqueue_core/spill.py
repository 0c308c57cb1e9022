"""Spills: inline ready jobs move into a segment object, off the acknowledgement path.

Three steps, each after the previous one is known (docs/architecture.md, "Writing a
segment"):

1. **Pick** the inline ready jobs a spill may move (unkeyed, no due time, default-factory
   ids), once ``spill_jobs`` of them (or ``spill_bytes``) have gathered, up to
   ``segment_jobs`` / ``segment_bytes``. The segment is their cached fragments joined in
   segment order: nothing is encoded anew.
2. **Create** ``segments/<epoch>-<n>.json``, create-only. Failed, or outcome unknown:
   the same key with the same bytes again after a backoff. Conflicted: read it back; the
   same digest means an earlier attempt landed; absent, try again; anything else is
   not ours: the spill is abandoned (the jobs stay inline) and counted.
3. **Attach**: each picked job that is still the very object picked leaves the inline
   jobs; one that changed meanwhile stays inline with its position left. The reference
   goes into the head state and is written by the next batch write.

One spill at a time. A segment never attached (every picked job changed meanwhile) is
handed to ``unattached`` to be deleted at once: no state ever referenced it. An
abandoned spill's key holds somebody else's object, which is never deleted.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from osqueue_core.batch import Batch
from osqueue_core.clock import Clock
from osqueue_core.config import BrokerConfig, backoff
from osqueue_core.effects import ReadObject, WriteObject
from osqueue_core.events import (
    ObjectCorrupt,
    ObjectRead,
    ObjectWritten,
    StorageFailed,
    StorageResult,
    WriteConflicted,
)
from osqueue_core.job import Job
from osqueue_core.outbox import Outbox
from osqueue_core.rules import JobRules
from osqueue_core.segment_codec import encode_segment, group_jobs
from osqueue_core.segment_refs import SegmentRef, digest_of, segment_key
from osqueue_core.table import JobTable


@attrs.define
class SpillCounters:
    """What spills have done, for monitoring."""

    #: Segments attached, and jobs they moved out of the state.
    spills: int = 0
    spilled_jobs: int = 0
    #: Spills given up: their key held somebody else's object.
    abandoned: int = 0


@attrs.frozen
class _Spill:
    ref: SegmentRef
    data: bytes = attrs.field(repr=False)
    picked: list[Job] = attrs.field(repr=False)


class Spiller:
    """The spill under way (at most one). ``epoch`` names this broker's keys;
    ``open_batch`` is where attaching is committed; ``unattached`` deletes a segment
    that nothing was attached from."""

    def __init__(
        self,
        config: BrokerConfig,
        clock: Clock,
        outbox: Outbox,
        rules: JobRules,
        open_batch: Callable[[], Batch],
        epoch: Callable[[], int],
        unattached: Callable[[str], None],
    ) -> None:
        self._config = config
        self._clock = clock
        self._out = outbox
        self._rules = rules
        self._open_batch = open_batch
        self._epoch = epoch
        self._unattached = unattached
        self._number = 0
        self._current: _Spill | None = None
        self._in_flight = False
        self._retry_at: float | None = None
        self._failures = 0
        self._active = config.spills
        self.counters = SpillCounters()

    @property
    def busy(self) -> bool:
        return self._current is not None

    def pump(self) -> None:
        """Start a spill if enough has gathered, or retry the one under way."""
        if not self._active:
            return
        if self._current is not None:
            retry_at = self._retry_at
            if not self._in_flight and retry_at is not None and self._clock.now >= retry_at:
                self._create()
            return
        config = self._config
        table = self._rules.table
        assert config.spill_jobs is not None
        if table.spillable_count < config.spill_jobs and table.spillable_bytes < config.spill_bytes:
            return
        picked, groups = group_jobs(
            table.spill_candidates(config.segment_jobs, config.segment_bytes)
        )
        self._number += 1
        key = segment_key(config.segment_prefix, self._epoch(), self._number)
        seqs = [job.seq for job in picked]
        data = encode_segment(key, groups, seqs, table.fragments(picked))
        ref = SegmentRef(
            key, digest_of(data), len(data), len(picked), (min(seqs), max(seqs)), groups
        )
        self._current = _Spill(ref, data, picked)
        self._failures = 0
        self._create()

    def next_deadline(self) -> float | None:
        return self._retry_at if self._current is not None and not self._in_flight else None

    def stop(self) -> None:
        """No more spills (the broker is releasing the state, or failed)."""
        self._active = False
        self._current = None
        self._retry_at = None

    def _create(self) -> None:
        spill = self._current
        assert spill is not None
        self._in_flight = True
        self._retry_at = None
        key, data = spill.ref.key, spill.data
        self._out.issue(
            lambda op_id: WriteObject(op_id, key, data, None),
            lambda result: self._on_create(spill, result),
        )

    def _on_create(self, spill: _Spill, result: StorageResult) -> None:
        if spill is not self._current:
            return
        self._in_flight = False
        if isinstance(result, ObjectWritten):
            self._attach(spill)
        elif isinstance(result, WriteConflicted):
            # Ours from an earlier attempt whose outcome was unknown, or not ours?
            self._in_flight = True
            key = spill.ref.key
            self._out.issue(
                lambda op_id: ReadObject(op_id, key),
                lambda found: self._on_read_back(spill, found),
            )
        else:
            self._failed()

    def _on_read_back(self, spill: _Spill, result: StorageResult) -> None:
        if spill is not self._current:
            return
        self._in_flight = False
        if isinstance(result, ObjectRead) and result.data == spill.data:
            self._attach(spill)
        elif isinstance(result, StorageFailed) or (
            isinstance(result, ObjectRead) and result.data is None
        ):
            self._failed()  # unreadable now, or gone: create it again later
        else:
            assert isinstance(result, ObjectRead | ObjectCorrupt)
            # Somebody else's object under our key: never reference it, never delete
            # it. The jobs stay inline; the next spill takes a fresh key.
            self.counters.abandoned += 1
            self._current = None

    def _failed(self) -> None:
        self._failures += 1
        self._retry_at = self._clock.now + backoff(self._config, self._failures)

    def _attach(self, spill: _Spill) -> None:
        self._current = None
        moved = attach(self._rules.table, spill.ref, spill.picked)
        if not moved:
            # Every picked job changed meanwhile: no state ever referenced the segment.
            self._unattached(spill.ref.key)
            return
        self._open_batch().changed(self._clock.now)
        self.counters.spills += 1
        self.counters.spilled_jobs += moved


def attach(table: JobTable, ref: SegmentRef, picked: list[Job]) -> int:
    """Segment ``ref`` holding ``picked`` is durable: every picked job that is still
    exactly the object picked (identity, not equality: a changed job's stale record must
    never become visible) leaves the inline jobs, untouched from now on; one that
    changed stays inline, its position left. Returns how many jobs moved (0: the
    segment is not referenced at all)."""
    left = [i for i, job in enumerate(picked) if table.get(job.id) is not job]
    if len(left) == len(picked):
        return 0
    for job in picked:
        if table.get(job.id) is job:
            table.remove(job.id)
    table.segments.attach(ref, picked, left)
    return len(picked) - len(left)
