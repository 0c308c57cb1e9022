"""Spills: inline ready jobs move into a segment object, off the acknowledgement path.

Three steps, each after the previous one is known (docs/architecture.md, "Writing a
segment"):

1. **Pick** the inline ready jobs a spill may move (ids that give their seq back), once
   ``spill_jobs`` of them (or ``spill_bytes``) have gathered, up to ``segment_jobs`` /
   ``segment_bytes``, and split them: the jobs with no due time make one segment, those
   with one (a run-at or a retry's backoff, past or not) another, whose reference
   carries their due range (:mod:`osqueue_core.segment_windows`). Each segment is its
   jobs' cached fragments joined in segment order (nothing is encoded anew), headed by
   the key index of those with an idempotency key. Steps 2 and 3 run for each segment
   on its own.
2. **Create** ``segments/<epoch>-<n>.json``, create-only. Failed, or outcome unknown:
   the same key with the same bytes again after a backoff. Conflicted: read it back; the
   same digest means an earlier attempt landed; absent, try again; anything else is
   not ours: the spill is abandoned (the jobs stay inline) and counted.
3. **Attach**: each picked job that is still the very object picked leaves the inline
   jobs; one that changed meanwhile stays inline with its position left. The reference
   goes into the head state and is written by the next batch write.

One spill (one pick) at a time. A segment never attached (every picked job changed meanwhile) is
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
from osqueue_core.key_index import key_pairs
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


@attrs.define(eq=False)
class _Spill:
    """One segment of the pick under way: written, retried, read back, attached."""

    ref: SegmentRef
    data: bytes = attrs.field(repr=False)
    picked: list[Job] = attrs.field(repr=False)
    in_flight: bool = False
    retry_at: float | None = None
    failures: int = 0


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
        #: The segments of the pick under way not attached (nor abandoned) yet.
        self._current: list[_Spill] = []
        self._active = config.spills
        self.counters = SpillCounters()

    @property
    def busy(self) -> bool:
        return bool(self._current)

    def pump(self) -> None:
        """Start a spill if enough has gathered, or retry the one under way."""
        if not self._active:
            return
        if self._current:
            now = self._clock.now
            for spill in list(self._current):
                if not spill.in_flight and spill.retry_at is not None and now >= spill.retry_at:
                    self._create(spill)
            return
        config = self._config
        table = self._rules.table
        assert config.spill_jobs is not None
        if table.spillable_count < config.spill_jobs and table.spillable_bytes < config.spill_bytes:
            return
        candidates = table.spill_candidates(config.segment_jobs, config.segment_bytes)
        # Jobs with a due time apart: their segment has a due window, the others' none.
        untimed = [job for job in candidates if job.ready_at is None]
        timed = [job for job in candidates if job.ready_at is not None]
        self._current = [self._segment(jobs) for jobs in (untimed, timed) if jobs]
        for spill in list(self._current):
            self._create(spill)

    def _segment(self, jobs: list[Job]) -> _Spill:
        picked, groups = group_jobs(jobs)
        self._number += 1
        key = segment_key(self._config.segment_prefix, self._epoch(), self._number)
        seqs = [job.seq for job in picked]
        keys = key_pairs(
            (position, job.queue, job.born.key)
            for position, job in enumerate(picked)
            if job.born.key is not None
        )
        data = encode_segment(key, groups, seqs, self._rules.table.fragments(picked), keys)
        dues = [at for job in picked if (at := job.ready_at) is not None]
        due = (min(dues), max(dues)) if dues else None
        ref = SegmentRef(
            key,
            digest_of(data),
            len(data),
            len(picked),
            (min(seqs), max(seqs)),
            groups,
            due,
            keyed=len(keys),
        )
        return _Spill(ref, data, picked)

    def next_deadline(self) -> float | None:
        waiting = [s.retry_at for s in self._current if not s.in_flight and s.retry_at is not None]
        return min(waiting, default=None)

    def stop(self) -> None:
        """No more spills (the broker is releasing the state, or failed)."""
        self._active = False
        self._current = []

    def _create(self, spill: _Spill) -> None:
        spill.in_flight = True
        spill.retry_at = None
        key, data = spill.ref.key, spill.data
        self._out.issue(
            lambda op_id: WriteObject(op_id, key, data, None),
            lambda result: self._on_create(spill, result),
        )

    def _on_create(self, spill: _Spill, result: StorageResult) -> None:
        if spill not in self._current:
            return
        spill.in_flight = False
        if isinstance(result, ObjectWritten):
            self._attach(spill)
        elif isinstance(result, WriteConflicted):
            # Ours from an earlier attempt whose outcome was unknown, or not ours?
            spill.in_flight = True
            key = spill.ref.key
            self._out.issue(
                lambda op_id: ReadObject(op_id, key),
                lambda found: self._on_read_back(spill, found),
            )
        else:
            self._failed(spill)

    def _on_read_back(self, spill: _Spill, result: StorageResult) -> None:
        if spill not in self._current:
            return
        spill.in_flight = False
        if isinstance(result, ObjectRead) and result.data == spill.data:
            self._attach(spill)
        elif isinstance(result, StorageFailed) or (
            isinstance(result, ObjectRead) and result.data is None
        ):
            self._failed(spill)  # unreadable now, or gone: create it again later
        else:
            assert isinstance(result, ObjectRead | ObjectCorrupt)
            # Somebody else's object under our key: never reference it, never delete
            # it. The jobs stay inline; the next spill takes a fresh key.
            self.counters.abandoned += 1
            self._current.remove(spill)

    def _failed(self, spill: _Spill) -> None:
        spill.failures += 1
        spill.retry_at = self._clock.now + backoff(self._config, spill.failures)

    def _attach(self, spill: _Spill) -> None:
        self._current.remove(spill)
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
    changed stays inline, its position left. A job that was due inline stays due, what
    the wall clock does. Returns how many jobs moved (0: the segment is not referenced
    at all)."""
    left = [i for i, job in enumerate(picked) if table.get(job.id) is not job]
    if len(left) == len(picked):
        return 0
    due = [i for i, job in enumerate(picked) if table.get(job.id) is job and table.is_due(job)]
    for job in picked:
        if table.get(job.id) is job:
            table.remove(job.id)
    table.segments.attach(ref, picked, left, due)
    return len(picked) - len(left)
