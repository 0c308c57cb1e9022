"""Due windows: untouched jobs that are not due yet, and how they fall due.

A spill puts the jobs that have a due time (a run-at, or a retry's backoff) into a
segment of their own, whose reference carries their **due range** ``[min, max]``
(docs/architecture.md, "Delayed jobs"). While ``wall < max`` the segment is **in its
window**: some of its jobs may not be due, so its groups stay out of the cursor heaps
(:mod:`osqueue_core.segments`) and its jobs fall due one by one instead:

* before ``wall`` reaches ``min`` none of them is due, whatever the clock did before:
  the reference alone says so, nothing is read (``min - READ_AHEAD_SECONDS`` on, with
  read-ahead on, the segment is read ahead);
* once the segment is **scanned** (read, or attached by this broker, which knows the
  jobs it picked) its not-yet-due positions wait in arrays sorted by due time, 24
  bytes a job, kept when the records are evicted; every input **promotes** those whose
  time has come into their queue's heap of promoted jobs, one packed int each;
* a window that has begun (``wall >= min``) and is not scanned yet must be read before
  its queues are served: a claim whose best candidate could be in it waits for that
  read (its groups' first keys are lower bounds), and the read is issued at once;
* once ``wall >= max`` every untouched job of the segment is due: the window closes,
  its promoted entries are dropped and its groups join the cursor heaps.

What has fallen due stays due, and a window that closed stays closed, when the wall
clock steps back: the same as for an inline job (a promoted job is never demoted).
A successor starts from its own wall clock: a window is a pure function of ``wall``
and the records, so nothing about it is stored, and one whose clock is behind treats a
segment as in its window: exact, never early.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from osqueue_core.clock import Clock
from osqueue_core.limits import MAX_PRIORITY
from osqueue_core.segment_codec import record_due

if TYPE_CHECKING:
    from osqueue_core.segments import Entry, Segment

#: With read-ahead on, a segment is read this long before its window begins.
READ_AHEAD_SECONDS = 2.0

_POSITION = 32
_SLOT = 64
_SEQ = 64
_MASK_POSITION = (1 << _POSITION) - 1
_MASK_SLOT = (1 << _SLOT) - 1
_MASK_SEQ = (1 << _SEQ) - 1

#: A position as a scan sees it: (due time, position, priority, seq, due inline).
_Scanned = tuple[float | None, int, int, int, bool]


def pack(priority: int, seq: int, slot: int, position: int) -> int:
    """A promoted job as one int that sorts like its claim key ``(-priority, seq)``."""
    head = ((MAX_PRIORITY - priority) << _SEQ) | seq
    return (((head << _SLOT) | slot) << _POSITION) | position


def unpack(key: int) -> tuple[int, int, int, int]:
    """``(priority, seq, slot, position)`` of a packed promoted job."""
    position = key & _MASK_POSITION
    slot = (key >> _POSITION) & _MASK_SLOT
    seq = (key >> (_POSITION + _SLOT)) & _MASK_SEQ
    priority = MAX_PRIORITY - (key >> (_POSITION + _SLOT + _SEQ))
    return priority, seq, slot, position


class Window:
    """One segment's window, while it is open."""

    def __init__(self, segment: Segment) -> None:
        self.segment = segment
        self.scanned = False
        #: Positions promoted and still untouched are set here (1 bit a job).
        self.promoted = bytearray((segment.ref.jobs + 7) // 8)
        #: Per group: its untouched positions that are promoted.
        self.promoted_in = [0] * len(segment.ref.groups)
        # Positions not due when scanned, sorted by (due time, position), with their
        # claim keys (the records may be evicted by the time they fall due).
        self.due_at: array[float] = array("d")
        self.positions: array[int] = array("I")
        self.priorities: array[int] = array("i")
        self.seqs: array[int] = array("q")
        self.next = 0

    def is_promoted(self, position: int) -> bool:
        return bool(self.promoted[position >> 3] >> (position & 7) & 1)


class DueWindows:
    """Every open window, the promoted jobs per queue, and the untouched jobs not due.

    ``lead``: how long before a window begins its segment is read ahead (0: not)."""

    def __init__(self, clock: Clock, lead: float) -> None:
        self._clock = clock
        self._lead = lead
        #: Open windows by segment slot.
        self.open: dict[int, Window] = {}
        #: Begun, not scanned: read at once; and read ahead (by key).
        self.urgent: dict[str, Window] = {}
        self.ahead: dict[str, Window] = {}
        # (time, 0: read ahead from / 1: begins, slot) of windows not scanned.
        self._starts: list[tuple[float, int, int]] = []
        # (next due time, slot) of scanned windows with positions to promote.
        self._pending: list[tuple[float, int]] = []
        self._closes: list[tuple[float, int]] = []
        self._heaps: dict[str, list[int]] = {}
        self._promoted: dict[str, int] = {}
        self._delayed: dict[str, int] = {}
        self.delayed_total = 0
        #: Bumped whenever what should be read changes.
        self.version = 0

    # -- reading -----------------------------------------------------------------------

    def delayed_in(self, queue: str) -> int:
        """Untouched jobs of ``queue`` not due yet (in an open window, not promoted)."""
        return self._delayed.get(queue, 0)

    def best(self, queue: str) -> Entry | None:
        """The best promoted job of ``queue``, or a lower bound from a window that has
        begun but is not scanned (whichever is better), as a cursor entry: a promoted
        job's group field is ``-1 - position``."""
        best: Entry | None = None
        heap = self._heaps.get(queue)
        while heap:
            priority, seq, slot, position = unpack(heap[0])
            window = self.open.get(slot)
            if window is not None and window.is_promoted(position):
                best = (-priority, seq, 0, slot, -1 - position)
                break
            heapq.heappop(heap)
        for window in self.urgent.values():
            segment = window.segment
            for index, group in enumerate(segment.ref.groups):
                if group.queue == queue and segment.remaining[index] > 0:
                    bound = (-group.top_priority, group.first_seq, 1, segment.slot, index)
                    if best is None or bound < best:
                        best = bound
        return best

    def has_due(self, segment: Segment, group: int) -> bool:
        """Whether ``group`` holds a due untouched job, so that its ``since`` counts
        for stats: always outside a window; in one, once a job of it was promoted
        (promotion goes in due order, so the group's oldest ready-since is the first
        promoted job's, exact until that job leaves, then an over-estimate of the age)."""
        window = segment.window
        return window is None or window.promoted_in[group] > 0

    def wanted(self, read_ahead: bool) -> list[str]:
        """Segments to read: begun windows not scanned, then (with read-ahead) those
        about to begin, and those holding the best promoted job of a queue."""
        keys = dict.fromkeys(self.urgent)
        if read_ahead:
            keys.update(dict.fromkeys(self.ahead))
            for queue in list(self._heaps):
                entry = self.best(queue)
                if entry is not None and entry[2] == 0:
                    segment = self.open[entry[3]].segment
                    if segment.records is None:
                        keys[segment.key] = None
        return list(keys)

    def next_due_at(self) -> float | None:
        """The next wall time something happens here: a promotion, a window that begins
        or is read ahead, one that closes."""
        found: list[float] = []
        while self._starts and not self._waits(self._starts[0][2]):
            heapq.heappop(self._starts)
        while self._pending and self._pending[0][1] not in self.open:
            heapq.heappop(self._pending)
        while self._closes and self._closes[0][1] not in self.open:
            heapq.heappop(self._closes)
        for heap in (self._starts, self._pending, self._closes):
            if heap:
                found.append(heap[0][0])
        return min(found, default=None)

    # -- changing ----------------------------------------------------------------------

    def add(
        self, segment: Segment, jobs: Iterable[tuple[float | None, int, int]] | None, due: set[int]
    ) -> bool:
        """A segment joins the index: open its window if it has one at this wall time.
        ``jobs``: each position's (due time, priority, seq), known when this broker
        attaches what it wrote; positions in ``due`` were due inline (they stay due).
        Returns whether the window is open (its groups stay out of the cursor heaps)."""
        ref = segment.ref
        if ref.due is None or self._clock.wall >= ref.due[1]:
            return False
        window = segment.window = Window(segment)
        self.open[segment.slot] = window
        for index, group in enumerate(ref.groups):
            self._count(self._delayed, group.queue, segment.remaining[index])
        heapq.heappush(self._closes, (ref.due[1], segment.slot))
        if jobs is not None:
            entries = [(at, p, prio, seq, p in due) for p, (at, prio, seq) in enumerate(jobs)]
            self._scan(window, entries)
            return True
        wall, begins = self._clock.wall, ref.due[0]
        self.version += 1
        if wall >= begins:
            self.urgent[segment.key] = window
            return True
        heapq.heappush(self._starts, (begins, 1, segment.slot))
        if self._lead > 0 and wall >= begins - self._lead:
            self.ahead[segment.key] = window
        elif self._lead > 0:
            heapq.heappush(self._starts, (begins - self._lead, 0, segment.slot))
        return True

    def scan(self, segment: Segment, records: list[dict[str, Any]]) -> None:
        """A segment in its window was loaded: learn each position's due time."""
        window = segment.window
        if window is None or window.scanned:
            return
        entries = []
        for position, record in enumerate(records):
            if not segment.is_left(position):
                born = record["born"]
                priority, seq = born.get("priority", 0), record["seq"]
                entries.append((record_due(record, segment.key), position, priority, seq, False))
        self._scan(window, entries)

    def advance(self) -> tuple[set[str], list[Segment]]:
        """Take the wall clock in: windows that begin, jobs that fall due, windows that
        close. Returns the queues that gained due jobs, and the segments whose window
        closed (their groups join the cursor heaps)."""
        wall = self._clock.wall
        gained: set[str] = set()
        closed: list[Segment] = []
        while self._closes and self._closes[0][0] <= wall:
            _, slot = heapq.heappop(self._closes)
            window = self.open.get(slot)
            if window is not None:
                closed.append(window.segment)
                gained.update(self._close(window))
        while self._starts and self._starts[0][0] <= wall:
            _, begins, slot = heapq.heappop(self._starts)
            if self._waits(slot):
                window = self.open[slot]
                key = window.segment.key
                self.version += 1
                if begins:
                    self.urgent[key] = window
                    self.ahead.pop(key, None)
                else:
                    self.ahead[key] = window
        while self._pending and self._pending[0][0] <= wall:
            _, slot = heapq.heappop(self._pending)
            window = self.open.get(slot)
            if window is not None:
                gained.update(self._promote_due(window, wall))
        return gained, closed

    def left(self, segment: Segment, position: int, group: int) -> None:
        """An untouched position of ``segment`` left (claimed, cancelled...)."""
        window = segment.window
        if window is None:
            return
        queue = segment.ref.groups[group].queue
        if window.is_promoted(position):
            window.promoted[position >> 3] &= ~(1 << (position & 7)) & 0xFF
            window.promoted_in[group] -= 1
            self._count(self._promoted, queue, -1)
        else:
            self._count(self._delayed, queue, -1)

    def drop(self, segment: Segment) -> None:
        """Every position of ``segment`` left: forget its window."""
        window = segment.window
        if window is not None:
            self._forget(window)

    # -- internals ---------------------------------------------------------------------

    def _waits(self, slot: int) -> bool:
        """Whether the window at ``slot`` is open and not scanned."""
        window = self.open.get(slot)
        return window is not None and not window.scanned

    def _scan(self, window: Window, entries: list[_Scanned]) -> None:
        """Each untouched position's (due time, position, priority, seq, due inline):
        promote what is due, keep the rest sorted."""
        wall = self._clock.wall
        segment = window.segment
        later = []
        for at, position, priority, seq, due in entries:
            if segment.is_left(position):
                continue
            if at is None or at <= wall or due:
                self._promote(window, position, priority, seq)
            else:
                later.append((at, position, priority, seq))
        later.sort()
        window.due_at = array("d", (entry[0] for entry in later))
        window.positions = array("I", (entry[1] for entry in later))
        window.priorities = array("i", (entry[2] for entry in later))
        window.seqs = array("q", (entry[3] for entry in later))
        window.scanned = True
        self.urgent.pop(segment.key, None)
        self.ahead.pop(segment.key, None)
        self.version += 1
        if later:
            heapq.heappush(self._pending, (later[0][0], segment.slot))

    def _promote_due(self, window: Window, wall: float) -> set[str]:
        segment = window.segment
        gained: set[str] = set()
        while window.next < len(window.due_at) and window.due_at[window.next] <= wall:
            at = window.next
            window.next += 1
            position = window.positions[at]
            if not segment.is_left(position):
                self._promote(window, position, window.priorities[at], window.seqs[at])
                gained.add(segment.ref.groups[segment.group_of(position)].queue)
        if window.next < len(window.due_at):
            heapq.heappush(self._pending, (window.due_at[window.next], segment.slot))
        else:
            # Nothing left to promote: free the arrays (the window closes at ``max``).
            window.due_at, window.seqs = array("d"), array("q")
            window.positions, window.priorities = array("I"), array("i")
            window.next = 0
        return gained

    def _promote(self, window: Window, position: int, priority: int, seq: int) -> None:
        segment = window.segment
        group = segment.group_of(position)
        queue = segment.ref.groups[group].queue
        window.promoted[position >> 3] |= 1 << (position & 7)
        window.promoted_in[group] += 1
        self._count(self._delayed, queue, -1)
        self._count(self._promoted, queue, 1)
        heap = self._heaps.setdefault(queue, [])
        if len(heap) > 2 * self._promoted[queue] + 64:
            heap[:] = [key for key in heap if self._live(key)]
            heapq.heapify(heap)
        heapq.heappush(heap, pack(priority, seq, segment.slot, position))
        self.version += 1

    def _live(self, key: int) -> bool:
        _, _, slot, position = unpack(key)
        window = self.open.get(slot)
        return window is not None and window.is_promoted(position)

    def _close(self, window: Window) -> set[str]:
        """``wall >= max``: every untouched job of the segment is due."""
        segment = window.segment
        gained = set()
        for index, group in enumerate(segment.ref.groups):
            not_due = segment.remaining[index] - window.promoted_in[index]
            if not_due:
                gained.add(group.queue)
            self._count(self._delayed, group.queue, -not_due)
            self._count(self._promoted, group.queue, -window.promoted_in[index])
        self._forget(window)
        return gained

    def _forget(self, window: Window) -> None:
        segment = window.segment
        del self.open[segment.slot]
        segment.window = None
        self.urgent.pop(segment.key, None)
        self.ahead.pop(segment.key, None)
        self.version += 1

    def _count(self, counts: dict[str, int], queue: str, change: int) -> None:
        if counts is self._delayed:
            self.delayed_total += change
        value = counts.get(queue, 0) + change
        if value:
            counts[queue] = value
        else:
            counts.pop(queue, None)
