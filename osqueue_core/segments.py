"""The untouched jobs in memory: one bit per job, one cursor per group, no ``Job``.

A job spilled into a segment and not changed since is **untouched**: the broker holds
no Python object for it. Per referenced segment it keeps a bitmap of the positions that
have *left* (the job is inline again, or gone), and per group (the run of one queue's
jobs, in claim order) a **cursor**: the first untouched position, which is the group's
best job since positions are in claim order. Per queue, a heap orders the groups by
their cursor's key ``(-priority, seq)``.

A cursor's key is exact once its job's priority and seq are known (the segment was
loaded, or attached by this broker, or the cursor is still at the group's first
position, which the reference describes). Otherwise it is a **lower bound**: the
group's first position's key, never above the true one since the cursor only moves
forward. A claim pops the best key; an exact one is the true best; a lower bound or an
unloaded segment means the segment must be read first (:attr:`SegmentIndex.demanded`).

Loaded segments keep their records as parsed JSON; a record becomes a ``Job`` only when
its job leaves (claimed, cancelled) or is looked at. A loaded segment's seqs stay known
after it is evicted (8 bytes a job), so a lookup by id reads a segment at most once.

A segment of delayed jobs in its due window keeps its groups out of the cursor heaps
until every job of it is due; meanwhile its jobs fall due one by one into per-queue
heaps of promoted jobs (:mod:`osqueue_core.segment_windows`), which claims look at too.

The idempotency keys of untouched jobs are in :attr:`SegmentIndex.keys`
(:mod:`osqueue_core.key_index`): added when a segment is attached, loaded, or its
header's key index read (after a takeover, :attr:`SegmentIndex.unindexed` lists the
keyed segments not read yet), removed when a position leaves.
"""

from __future__ import annotations

import bisect
import heapq
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence

import attrs

from osqueue_core.clock import Clock
from osqueue_core.config import default_job_seq
from osqueue_core.errors import CorruptState
from osqueue_core.job import DEFAULT_QUEUE, Job
from osqueue_core.key_index import KeyIndex, KeyPair, key_pairs, location, split_location
from osqueue_core.quoting import quote
from osqueue_core.segment_codec import SegmentContents, segment_job
from osqueue_core.segment_refs import SegmentRef, encode_ref
from osqueue_core.segment_windows import DueWindows, Window

#: Memory a loaded segment takes per stored byte: its records parsed by orjson
#: (*measured*: 4,096 records of 100-byte payloads, 0.88 MB stored, 2.8 MB parsed).
DECODED_FACTOR = 3


def loaded_cost(ref: SegmentRef) -> int:
    """What a loaded segment counts against ``segment_cache_bytes``: its estimated
    memory, not its stored size."""
    return DECODED_FACTOR * ref.size


#: A cursor's heap entry: (-priority, seq, 1 if a lower bound else 0, slot, group); a
#: promoted job's has ``-1 - position`` for its group.
Entry = tuple[int, int, int, int, int]
_Head = tuple[int, int, int]


@attrs.frozen
class Location:
    """Where an untouched job is: a segment and a position in it."""

    segment: Segment
    position: int


class Segment:
    """One referenced segment: bits, cursors, and (while loaded) its records."""

    def __init__(self, ref: SegmentRef, slot: int) -> None:
        self.ref = ref
        self.key = ref.key
        self.slot = slot
        self.left = bytearray((ref.jobs + 7) // 8)
        for start, count in ref.left:
            _set_run(self.left, start, count)
        self.starts: list[int] = []
        position = 0
        for group in ref.groups:
            self.starts.append(position)
            position += group.count
        self.cursors: list[int] = []
        self.remaining: list[int] = []
        self.heads: list[_Head] = []
        for index, group in enumerate(ref.groups):
            start, end = self.starts[index], self.starts[index] + group.count
            self.cursors.append(_next_untouched(self.left, start, end))
            self.remaining.append(group.count - _covered(ref.left, start, end))
            inexact = int(self.cursors[index] != start)
            self.heads.append((-group.top_priority, group.first_seq, inexact))
        self.untouched = sum(self.remaining)
        self.records: list[dict[str, object]] | None = None
        #: Seqs sorted, with their positions (known once loaded or attached).
        self.sorted_seqs: array[int] | None = None
        self.sorted_positions: array[int] | None = None
        #: The encoded reference, None once ``left`` changed.
        self.fragment: bytes | None = None
        self.used = 0
        #: Its due window, while open (its groups are not in the cursor heaps then).
        self.window: Window | None = None
        #: Whether its untouched jobs' keys are in the key index (none to add: yes).
        self.keys_indexed = ref.keyed == 0

    def end(self, group: int) -> int:
        return self.starts[group] + self.ref.groups[group].count

    def group_of(self, position: int) -> int:
        return bisect.bisect_right(self.starts, position) - 1

    def is_left(self, position: int) -> bool:
        return bool(self.left[position >> 3] >> (position & 7) & 1)

    def know_seqs(self, seqs: Sequence[int]) -> None:
        order = sorted(range(len(seqs)), key=seqs.__getitem__)
        self.sorted_seqs = array("q", (seqs[p] for p in order))
        self.sorted_positions = array("l", order)

    def position_of(self, seq: int) -> int | None:
        assert self.sorted_seqs is not None
        assert self.sorted_positions is not None
        at = bisect.bisect_left(self.sorted_seqs, seq)
        if at < len(self.sorted_seqs) and self.sorted_seqs[at] == seq:
            return self.sorted_positions[at]
        return None

    def current_ref(self) -> SegmentRef:
        """The reference as the state records it now (``left`` from the bits)."""
        return attrs.evolve(self.ref, left=tuple(_runs(self.left, self.ref.jobs)))

    def encoded(self) -> bytes:
        if self.fragment is None:
            self.fragment = encode_ref(self.current_ref())
        return self.fragment


class SegmentIndex:
    """Every referenced segment, with the per-queue heaps of group cursors. ``clock``'s
    wall decides the due windows; ``window_lead`` is how long before a window begins
    its segment is read ahead (0: not)."""

    def __init__(
        self,
        clock: Clock,
        refs: Iterable[SegmentRef] = (),
        window_lead: float = 0.0,
        seq_of: Callable[[str], int | None] = default_job_seq,
    ) -> None:
        #: Job id -> the seq it was made for (the id factory's inverse).
        self._seq_of = seq_of
        #: The keys of untouched keyed jobs, and the keyed segments whose keys are not
        #: known yet (their key index is read after a takeover).
        self.keys = KeyIndex()
        self.unindexed: dict[str, None] = {}
        self._segments: dict[str, Segment] = {}  # in attach order: the state's order
        self._by_slot: dict[int, Segment] = {}
        self._next_slot = 0
        self._heaps: dict[str, list[Entry]] = {}
        self._live_groups: dict[str, int] = {}
        self._untouched: dict[str, int] = {}
        self.total = 0
        #: Segments a command, a claim or a waiting claim needs loaded, oldest first.
        self.demanded: dict[str, None] = {}
        #: Segments the command waiting at the head of the inbox has needed so far: kept
        #: loaded until it is applied, so a command naming jobs of several segments never
        #: evicts one it needs while loading the next (it would read them forever).
        self.pinned: set[str] = set()
        #: Keys of segments dropped (every position left) since the last state write
        #: was encoded: that write is the first that no longer references them.
        self.dropped: list[str] = []
        self.loaded_bytes = 0
        self._uses = 0
        # Bumped by every change to a reference or a cursor: what the caches below
        # were computed at.
        self._version = 0
        self._joined: tuple[int, bytes] | None = None
        self._wanted: tuple[tuple[int, int, int, tuple[str, ...]], list[str]] | None = None
        self.windows = DueWindows(clock, window_lead)
        for ref in refs:
            self._add(ref)

    # -- reading -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._segments)

    def __iter__(self) -> Iterator[Segment]:
        return iter(self._segments.values())

    def get(self, key: str) -> Segment | None:
        return self._segments.get(key)

    def refs(self) -> list[SegmentRef]:
        """The references as the next write records them, in the state's order."""
        return [segment.current_ref() for segment in self._segments.values()]

    def encoded_refs(self) -> bytes:
        """The references' JSON, comma-joined (re-encoding only those that changed; the
        whole list is cached until one changes, so a push costs nothing here)."""
        if self._joined is None or self._joined[0] != self._version:
            joined = b",".join([segment.encoded() for segment in self._segments.values()])
            self._joined = (self._version, joined)
        return self._joined[1]

    def untouched_in(self, queue: str) -> int:
        return self._untouched.get(queue, 0)

    def due_in(self, queue: str) -> int:
        """Untouched jobs of ``queue`` that are due (claimable once loaded)."""
        return self._untouched.get(queue, 0) - self.windows.delayed_in(queue)

    @property
    def delayed_total(self) -> int:
        return self.windows.delayed_total

    def queues(self) -> Iterable[str]:
        return self._untouched.keys()

    def since(self, queue: str) -> float | None:
        """The oldest ready-since among ``queue``'s untouched jobs, as the references
        record it (an over-estimate of the age once that job left, never under)."""
        found = [
            group.since
            for segment in self._segments.values()
            for index, group in enumerate(segment.ref.groups)
            if group.queue == queue
            and segment.remaining[index] > 0
            and self.windows.has_due(segment, index)
        ]
        return min(found, default=None)

    def best(self, queue: str) -> Entry | None:
        """The best due untouched job of ``queue``: a cursor or a promoted job (its key
        may be a lower bound)."""
        cursor, promoted = self._cursor(queue), self.windows.best(queue)
        if cursor is None or (promoted is not None and promoted < cursor):
            return promoted
        return cursor

    def must_read(self, key: str) -> bool:
        """Whether segment ``key`` is read even when the cache is full: a command needs
        it, or it is in a window that has begun and must be scanned."""
        return key in self.demanded or key in self.windows.urgent

    def _cursor(self, queue: str) -> Entry | None:
        heap = self._heaps.get(queue)
        while heap:
            entry = heap[0]
            segment = self._by_slot.get(entry[3])
            if segment is not None and self._live(segment, entry):
                return entry
            heapq.heappop(heap)
        return None

    def segment_at(self, entry: Entry) -> Segment:
        return self._by_slot[entry[3]]

    def ready_to_take(self, entry: Entry) -> bool:
        """The entry's key is exact and its segment loaded: :meth:`take` can run."""
        return entry[2] == 0 and self._by_slot[entry[3]].records is not None

    def locate(self, job_id: str) -> Location | str | None:
        """Where the untouched job ``job_id`` is; the key of a segment to load first
        when that cannot be told yet; None when no untouched job has that id."""
        seq = self._seq_of(job_id)
        if seq is None:
            return None
        needed: str | None = None
        for segment in self._segments.values():
            low, high = segment.ref.seqs
            if not low <= seq <= high:
                continue
            if segment.sorted_seqs is None:
                needed = needed or segment.key
                continue
            position = segment.position_of(seq)
            if position is None or segment.is_left(position):
                continue
            if segment.records is None:
                needed = needed or segment.key
            elif segment.records[position]["id"] == job_id:
                return Location(segment, position)
        return needed

    def find_key(self, queue: str, key: str) -> Location | str | None:
        """Where the untouched job pushed to ``queue`` with ``key`` is; the key of a
        segment to load first when a job with the same key hash is in one that is not
        loaded; None when no untouched job has that key. Only once every segment's keys
        are indexed (:attr:`unindexed` empty)."""
        needed: str | None = None
        for where in self.keys.find_key(queue, key):
            slot, position = split_location(where)
            segment = self._by_slot[slot]
            if segment.records is None:
                needed = needed or segment.key
                continue
            born = segment.records[position]["born"]
            assert isinstance(born, dict)
            if born.get("queue", DEFAULT_QUEUE) == queue and born.get("key") == key:
                return Location(segment, position)
        return needed

    def materialise(self, where: Location) -> Job:
        """The ``Job`` an untouched position holds (it stays untouched)."""
        segment = where.segment
        assert segment.records is not None
        self._touch(segment)
        return segment_job(segment.records[where.position], segment.key)

    def wanted(self, read_ahead: int) -> list[str]:
        """The segments worth having loaded now, loaded or not: those demanded, then
        the best ``read_ahead`` segments of each queue (best first)."""
        windows = self.windows
        cache_key = (self._version, windows.version, read_ahead, tuple(self.demanded))
        if self._wanted is not None and self._wanted[0] == cache_key:
            return self._wanted[1]
        keys = dict(self.demanded)
        keys.update(dict.fromkeys(windows.wanted(read_ahead > 0)))
        if read_ahead:
            for queue in list(self._heaps):
                if self._cursor(queue) is None:
                    continue
                heap = self._heaps[queue]
                seen: dict[str, None] = {}
                for entry in heapq.nsmallest(2 * read_ahead + 2, heap[: 8 * read_ahead + 8]):
                    segment = self._by_slot.get(entry[3])
                    if segment is not None and self._live(segment, entry):
                        seen[segment.key] = None
                        if len(seen) == read_ahead:
                            break
                keys.update(seen)
        wanted = list(keys)
        self._wanted = (cache_key, wanted)
        return wanted

    # -- changing ----------------------------------------------------------------------

    def attach(
        self,
        ref: SegmentRef,
        ordered: Sequence[Job],
        left: Iterable[int],
        due: Iterable[int] = (),
    ) -> None:
        """A segment this broker wrote holds ``ordered`` (its positions' jobs); those
        at ``left`` changed since they were picked and stay inline; those at ``due``
        were due inline (they stay due whatever the wall clock does)."""
        segment = self._add(
            attrs.evolve(ref, left=_as_runs(sorted(left))),
            [j.seq for j in ordered],
            # Only a segment of delayed jobs has a window to fill (most have none).
            None if ref.due is None else [(j.ready_at, j.priority, j.seq) for j in ordered],
            set(due),
        )
        if segment is None:
            return
        for index in range(len(ref.groups)):
            if segment.remaining[index] > 0:
                job = ordered[segment.cursors[index]]
                self._set_head(segment, index, (-job.priority, job.seq, 0))
        if not segment.keys_indexed:
            keyed = enumerate(ordered)
            pairs = key_pairs((p, j.queue, j.born.key) for p, j in keyed if j.born.key is not None)
            self._index_pairs(segment, pairs)

    def keys_read(self, key: str, pairs: Iterable[KeyPair]) -> None:
        """Segment ``key``'s key index was read (its header only): index the keys of its
        untouched jobs."""
        segment = self._segments.get(key)
        if segment is not None and not segment.keys_indexed:
            self._index_pairs(segment, pairs)

    def take(self, entry: Entry) -> Job:
        """The job at a cursor (or a promoted job), which leaves its segment (the
        caller puts it inline)."""
        segment = self._by_slot[entry[3]]
        where = entry[4]
        position = segment.cursors[where] if where >= 0 else -1 - where
        job = self.materialise(Location(segment, position))
        self.leave(Location(segment, position))
        return job

    def leave(self, where: Location) -> None:
        """The job at ``where`` is inline from now on (or gone): set its bit."""
        segment, position = where.segment, where.position
        assert not segment.is_left(position)
        if segment.ref.keyed and segment.keys_indexed:
            # (A job leaves only once its segment is loaded: claimed, or looked up.)
            assert segment.records is not None
            born = segment.records[position]["born"]
            assert isinstance(born, dict)
            if "key" in born:
                queue = born.get("queue", DEFAULT_QUEUE)
                self.keys.remove_key(queue, born["key"], location(segment.slot, position))
        self._version += 1
        _set_run(segment.left, position, 1)
        segment.fragment = None
        group = segment.group_of(position)
        queue = segment.ref.groups[group].queue
        self.windows.left(segment, position, group)
        segment.remaining[group] -= 1
        segment.untouched -= 1
        self._untouched[queue] -= 1
        if not self._untouched[queue]:
            del self._untouched[queue]
        self.total -= 1
        if segment.untouched == 0:
            self._drop(segment)
            return
        if position != segment.cursors[group]:
            return
        cursor = _next_untouched(segment.left, position + 1, segment.end(group))
        segment.cursors[group] = cursor
        if segment.remaining[group] == 0:
            self._live_groups[queue] -= 1
            return
        if segment.records is not None:
            self._set_head(segment, group, _record_head(segment.records[cursor]))
        else:
            old = segment.heads[group]
            self._set_head(segment, group, (old[0], old[1], 1))

    def loaded(self, key: str, contents: SegmentContents, is_inline: Callable[[str], bool]) -> None:
        """Segment ``key`` was read and checked: keep its records, make its cursors'
        keys exact. Raises ``CorruptState`` if an untouched job is also inline."""
        segment = self._segments.get(key)
        self.demanded.pop(key, None)
        if segment is None or segment.records is not None:
            return  # dropped meanwhile, or read twice
        records = contents.records
        for position, record in enumerate(records):
            if not segment.is_left(position) and is_inline(str(record["id"])):
                raise CorruptState(
                    f"segment {quote(key)}: job {quote(record['id'])} is untouched there "
                    "and inline in the state too"
                )
        segment.records = records
        self._version += 1
        self.windows.scan(segment, records)
        if segment.sorted_seqs is None:
            segment.know_seqs(contents.seqs)
        if not segment.keys_indexed:
            self._index_pairs(segment, contents.keys)
        self.loaded_bytes += loaded_cost(segment.ref)
        self._touch(segment)
        for index in range(len(segment.ref.groups)):
            if segment.remaining[index] > 0:
                self._set_head(segment, index, _record_head(records[segment.cursors[index]]))

    def evict(self, key: str, segment: Segment | None = None) -> None:
        """Forget a loaded segment's records (its cursors' keys stay exact)."""
        segment = segment or self._segments[key]
        self._version += 1
        if segment.records is not None:
            segment.records = None
            self.loaded_bytes -= loaded_cost(segment.ref)

    def make_room(self, size: int, limit: int, keep: Iterable[str]) -> bool:
        """Evict the least recently used loaded segments not in ``keep`` until ``size``
        more bytes fit within ``limit``; False if they cannot."""
        if self.loaded_bytes + size <= limit:
            return True
        kept = set(keep)
        loaded = sorted(
            (s for s in self._segments.values() if s.records is not None and s.key not in kept),
            key=lambda s: s.used,
        )
        for segment in loaded:
            self.evict(segment.key)
            if self.loaded_bytes + size <= limit:
                return True
        return False

    def advance(self) -> set[str]:
        """The wall clock moved: promote the jobs that fell due, and let the groups of
        segments whose window closed join the cursor heaps. Returns the queues that
        gained due jobs."""
        gained, closed = self.windows.advance()
        for segment in closed:
            self._version += 1
            for index in range(len(segment.ref.groups)):
                if segment.remaining[index] > 0:
                    self._push(segment, index)
        return gained

    # -- internals ---------------------------------------------------------------------

    def _add(
        self,
        ref: SegmentRef,
        seqs: Sequence[int] | None = None,
        jobs: Sequence[tuple[float | None, int, int]] | None = None,
        due: set[int] | None = None,
    ) -> Segment | None:
        self._version += 1
        segment = Segment(ref, self._next_slot)
        if segment.untouched == 0:
            return None  # every position left: the ref is dropped by the next write
        self._next_slot += 1
        if seqs is not None:
            segment.know_seqs(seqs)
        self._segments[ref.key] = self._by_slot[segment.slot] = segment
        if not segment.keys_indexed:
            self.unindexed[ref.key] = None
        self.total += segment.untouched
        for index, group in enumerate(ref.groups):
            remaining = segment.remaining[index]
            if remaining:
                self._untouched[group.queue] = self._untouched.get(group.queue, 0) + remaining
                self._live_groups[group.queue] = self._live_groups.get(group.queue, 0) + 1
        self.windows.add(segment, jobs, due or set())
        for index in range(len(ref.groups)):
            if segment.remaining[index]:
                self._push(segment, index)
        return segment

    def take_dropped(self) -> list[str]:
        """The segments dropped since the last call (the write being encoded now is the
        first state without them)."""
        dropped, self.dropped = self.dropped, []
        return dropped

    def _drop(self, segment: Segment) -> None:
        del self._segments[segment.key], self._by_slot[segment.slot]
        self.dropped.append(segment.key)
        self.demanded.pop(segment.key, None)
        self.windows.drop(segment)
        self.unindexed.pop(segment.key, None)
        self.evict(segment.key, segment)
        # The group whose last position just left still counts as live.
        for index, group in enumerate(segment.ref.groups):
            if segment.remaining[index] == 0 and segment.cursors[index] < segment.end(index):
                self._live_groups[group.queue] -= 1
                segment.cursors[index] = segment.end(index)

    def _index_pairs(self, segment: Segment, pairs: Iterable[KeyPair]) -> None:
        left, base = segment.left, location(segment.slot, 0)
        self.keys.add(
            (hashed, base | position)
            for hashed, position in pairs
            if not left[position >> 3] >> (position & 7) & 1  # untouched
        )
        self._indexed(segment)

    def _indexed(self, segment: Segment) -> None:
        segment.keys_indexed = True
        self.unindexed.pop(segment.key, None)

    def _live(self, segment: Segment, entry: Entry) -> bool:
        group = entry[4]
        return segment.remaining[group] > 0 and segment.heads[group] == entry[:3]

    def _set_head(self, segment: Segment, group: int, head: _Head) -> None:
        if segment.heads[group] != head:
            segment.heads[group] = head
            self._push(segment, group)

    def _push(self, segment: Segment, group: int) -> None:
        if segment.window is not None:
            return  # in its window: its jobs fall due one by one (promoted)
        queue = segment.ref.groups[group].queue
        heap = self._heaps.setdefault(queue, [])
        if len(heap) > 2 * self._live_groups.get(queue, 0) + 64:
            heap[:] = [
                e for e in heap if e[3] in self._by_slot and self._live(self._by_slot[e[3]], e)
            ]
            heapq.heapify(heap)
        head = segment.heads[group]
        heapq.heappush(heap, (head[0], head[1], head[2], segment.slot, group))

    def _touch(self, segment: Segment) -> None:
        self._uses += 1
        segment.used = self._uses


def _record_head(record: dict[str, object]) -> _Head:
    born = record["born"]
    assert isinstance(born, dict)
    seq = record["seq"]
    assert isinstance(seq, int)
    return (-born.get("priority", 0), seq, 0)


def _set_run(bits: bytearray, start: int, count: int) -> None:
    end = start + count
    while start < end and start & 7:
        bits[start >> 3] |= 1 << (start & 7)
        start += 1
    full = (end - start) >> 3
    if full:
        bits[start >> 3 : (start >> 3) + full] = b"\xff" * full
        start += full << 3
    while start < end:
        bits[start >> 3] |= 1 << (start & 7)
        start += 1


def _next_untouched(bits: bytearray, position: int, end: int) -> int:
    """The first position in ``[position, end)`` whose bit is clear (``end``: none)."""
    while position < end:
        byte = bits[position >> 3]
        if byte == 0xFF:
            position = (position | 7) + 1
        elif not byte >> (position & 7) & 1:
            return position
        else:
            position += 1
    return end


def _covered(runs: Iterable[tuple[int, int]], start: int, end: int) -> int:
    """How many positions of ``[start, end)`` the runs cover."""
    return sum(max(0, min(end, s + c) - max(start, s)) for s, c in runs)


def _runs(bits: bytearray, jobs: int) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    position = 0
    while position < jobs:
        byte = bits[position >> 3]
        if byte == 0 and not position & 7:
            position += 8
            continue
        if not byte >> (position & 7) & 1:
            position += 1
            continue
        start = position
        while position < jobs:
            byte = bits[position >> 3]
            if byte == 0xFF and not position & 7:
                position += 8
            elif byte >> (position & 7) & 1:
                position += 1
            else:
                break
        runs.append((start, min(position, jobs) - start))
    return runs


def _as_runs(positions: Sequence[int]) -> tuple[tuple[int, int], ...]:
    runs: list[tuple[int, int]] = []
    for position in positions:
        if runs and runs[-1][0] + runs[-1][1] == position:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((position, 1))
    return tuple(runs)
