"""The broker's in-memory copy of the jobs, with the indexes that keep operations cheap.

Every operation is O(log n) or better in the number of jobs, never a scan:

* due ready jobs sit in one heap per queue, ordered by (priority descending, ``seq``):
  a claim over k queues looks at k heap tops;
* jobs not yet due (a ``run_at`` or a retry's backoff) sit in one heap by due time and
  move to their queue's heap when the wall clock passes it (:meth:`promote_due`);
* leases sit in a heap by deadline, dead letters in death order, finished jobs in an
  index by archive key, idempotency keys in a dict;
* per-queue counters answer stats, and a per-queue heap by "ready since" gives the
  oldest ready job's age.

Each job's JSON fragment is cached and re-encoded only after the job changes
(:mod:`osqueue_core.fragments`), so encoding a state for a write costs what the batch
changed plus one ``bytes.join`` per chunk of jobs.

Heaps use lazy deletion: an entry is checked against the membership sets when it
reaches the top, and a heap is rebuilt when stale entries outnumber live ones.

Jobs spilled into segments and untouched since are not in this table: they are bits
and cursors in :attr:`JobTable.segments` (:mod:`osqueue_core.segments`). Claims merge
both (:meth:`best_ready`), and a segment job that is claimed or cancelled comes back
into the table first (it is *inline* from then on).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator

import attrs

from osqueue_core.clock import Clock
from osqueue_core.config import default_job_seq
from osqueue_core.fragments import Fragments
from osqueue_core.job import Job, JobStatus
from osqueue_core.segment_refs import SegmentRef
from osqueue_core.segments import Location, SegmentIndex


@attrs.frozen
class QueueCounts:
    """The jobs of one queue, by where they are (for stats)."""

    queue: str
    ready: int
    delayed: int
    claimed: int
    dead: int
    #: Wall time since which the oldest due job has waited (None: none is due): its
    #: push, or the run-at or retry time it waited for. A job released, or retried at
    #: once (a zero backoff), keeps the time it first became ready.
    oldest_ready_since: float | None


@attrs.frozen
class SegmentNeeded:
    """The answer needs segment ``key`` loaded first."""

    key: str


class _Queue:
    """One queue's indexes."""

    def __init__(self) -> None:
        #: Due jobs -> since when they are ready (what the ``oldest`` entries must match).
        self.ready_ids: dict[str, float] = {}
        self.ready: list[tuple[int, int, str]] = []  # (-priority, seq, id)
        self.oldest: list[tuple[float, int, str]] = []  # (ready since, seq, id)
        self.delayed = 0
        self.claimed = 0
        self.dead: dict[str, None] = {}  # death order

    def empty(self) -> bool:
        return not (self.ready_ids or self.delayed or self.claimed or self.dead)


def _ready_since(job: Job) -> float:
    at = job.ready_at
    return job.created_at if at is None else max(job.created_at, at)


class JobTable:
    """Jobs by id, in push (seq) order, plus the indexes above. ``clock.wall`` decides
    which READY jobs are due."""

    def __init__(
        self,
        clock: Clock,
        jobs: Iterable[Job] = (),
        next_seq: int = 0,
        refs: Iterable[SegmentRef] = (),
        *,
        spill: bool = False,
        seq_of: Callable[[str], int | None] = default_job_seq,
    ) -> None:
        self._clock = clock
        #: The untouched jobs, in segments.
        self.segments = SegmentIndex(refs, seq_of)
        # Inline ready jobs a spill may move (id -> payload bytes), if spilling: only
        # those whose id gives their seq back, so a lookup by id finds them.
        self._spill = spill
        self._seq_of = seq_of
        self._spillable: dict[str, int] = {}
        self.spillable_bytes = 0
        self.next_seq = next_seq
        self._jobs: dict[str, Job] = {}
        self._fragments = Fragments(self._jobs)
        self._queues: dict[str, _Queue] = {}
        self._delayed: list[tuple[float, int, str]] = []
        self._delayed_at: dict[str, float] = {}
        self._leases: dict[str, float] = {}
        self._lease_heap: list[tuple[float, str]] = []
        self._archive: dict[str, set[str]] = {}
        self._dead: dict[str, None] = {}  # every dead letter, in death order
        # Dead letters by (finished_at, seq): the one whose retention ends first.
        self._dead_heap: list[tuple[float, int, str]] = []
        self._keys: dict[tuple[str, str], str] = {}
        self._ready_total = 0
        self._claimed_total = 0
        # Loaded dead letters keep their death order.
        for job in sorted(jobs, key=lambda j: (j.finished_at or 0.0, j.seq)):
            self._insert(job)
        self._resort()

    # -- reading ---------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self) -> Iterator[Job]:
        return iter(self._jobs.values())

    @property
    def ready_count(self) -> int:
        """Due READY jobs in every queue (untouched segment jobs included)."""
        return self._ready_total + self.segments.total

    @property
    def spillable_count(self) -> int:
        return len(self._spillable)

    def spill_candidates(self, max_jobs: int, max_bytes: int) -> list[Job]:
        """Inline ready jobs a spill may move, oldest first, within the limits (at
        least one)."""
        picked: list[Job] = []
        total = 0
        for job_id, size in self._spillable.items():
            if picked and (len(picked) >= max_jobs or total + size > max_bytes):
                break
            picked.append(self._jobs[job_id])
            total += size
        return picked

    @property
    def delayed_count(self) -> int:
        return len(self._delayed_at)

    @property
    def claimed_count(self) -> int:
        return self._claimed_total

    @property
    def dead_count(self) -> int:
        return len(self._dead)

    @property
    def finished_count(self) -> int:
        """Jobs on their way to the archive."""
        return sum(len(ids) for ids in self._archive.values())

    def by_key(self, queue: str, key: str) -> Job | None:
        """The job in the state pushed to ``queue`` with idempotency key ``key``."""
        job_id = self._keys.get((queue, key))
        return None if job_id is None else self._jobs[job_id]

    def queue_counts(self) -> list[QueueCounts]:
        """Counts of every queue with jobs in the state, by name."""
        names = sorted(set(self._queues) | set(self.segments.queues()))
        return [self._counts(name, self._queues.get(name) or _Queue()) for name in names]

    def _counts(self, name: str, q: _Queue) -> QueueCounts:
        while q.oldest and q.ready_ids.get(q.oldest[0][2]) != q.oldest[0][0]:
            heapq.heappop(q.oldest)
        since = q.oldest[0][0] if q.oldest else None
        ready = len(q.ready_ids)
        untouched = self.segments.untouched_in(name)
        if untouched:
            ready += untouched
            spilled = self.segments.since(name)
            if spilled is not None:
                since = spilled if since is None else min(since, spilled)
        return QueueCounts(name, ready, q.delayed, q.claimed, len(q.dead), since)

    def dead_letters(self, queue: str | None = None) -> Iterator[Job]:
        """Dead letters (of ``queue``, or all), oldest death first."""
        if queue is None:
            ids: Iterable[str] = self._dead
        else:
            q = self._queues.get(queue)
            ids = q.dead if q is not None else ()
        return (self._jobs[i] for i in ids)

    def oldest_dead(self) -> Job | None:
        """The dead letter that died first by the wall clock (a clock stepped back can
        make it differ from the first in death order): the first to leave."""
        heap = self._dead_heap
        while heap and not self._live_dead(heap[0]):
            heapq.heappop(heap)
        return self._jobs[heap[0][2]] if heap else None

    def _live_dead(self, entry: tuple[float, int, str]) -> bool:
        job = self._jobs.get(entry[2]) if entry[2] in self._dead else None
        return job is not None and (job.finished_at or 0.0) == entry[0]

    def best_ready(self, queues: Iterable[str]) -> Job | SegmentNeeded | None:
        """The due job a claim on ``queues`` gets: highest priority, then lowest seq.
        Not removed: the caller replaces it with its claimed version. An untouched
        job comes inline first; ``SegmentNeeded`` when its segment must be read."""
        inline, spilled = self._best(tuple(queues))
        if spilled is None:
            return None if inline is None else self._jobs[inline[2]]
        segments = self.segments
        if not segments.ready_to_take(spilled):
            return SegmentNeeded(segments.segment_at(spilled).key)
        job = segments.take(spilled)
        self._restore(job)
        return job

    def peek_ready(self, queues: Iterable[str]) -> SegmentNeeded | None:
        """What :meth:`best_ready` would need loaded first (None: nothing)."""
        _, spilled = self._best(tuple(queues))
        if spilled is None or self.segments.ready_to_take(spilled):
            return None
        return SegmentNeeded(self.segments.segment_at(spilled).key)

    def _best(
        self, queues: tuple[str, ...]
    ) -> tuple[tuple[int, int, str] | None, tuple[int, int, int, int, int] | None]:
        """The best inline entry, and the best segment cursor if it beats it (an
        inline job wins a tie with a cursor's lower bound)."""
        best: tuple[int, int, str] | None = None
        for name in queues:
            q = self._queues.get(name)
            if q is None:
                continue
            heap = q.ready
            while heap and heap[0][2] not in q.ready_ids:
                heapq.heappop(heap)
            if heap and (best is None or heap[0] < best):
                best = heap[0]
        spilled = None
        if self.segments.total:
            for name in queues:
                entry = self.segments.best(name)
                if entry is not None and (spilled is None or entry < spilled):
                    spilled = entry
            if spilled is not None and best is not None and best[:2] <= spilled[:2]:
                spilled = None
        return best, spilled

    def has_ready(self, queue: str) -> bool:
        q = self._queues.get(queue)
        return (q is not None and bool(q.ready_ids)) or bool(self.segments.untouched_in(queue))

    def lookup(self, job_id: str) -> Job | None:
        """The job ``job_id``, inline or untouched in a loaded segment (then not
        inline: :meth:`bring_inline` it before changing it)."""
        job = self._jobs.get(job_id)
        if job is not None or not self.segments.total:
            return job
        where = self.segments.locate(job_id)
        assert not isinstance(where, str), "a command ran before its segment was loaded"
        return None if where is None else self.segments.materialise(where)

    def segment_for(self, job_id: str) -> SegmentNeeded | None:
        """The segment to load before ``job_id`` can be looked up (None: none)."""
        if job_id in self._jobs or not self.segments.total:
            return None
        where = self.segments.locate(job_id)
        return SegmentNeeded(where) if isinstance(where, str) else None

    def bring_inline(self, job: Job) -> None:
        """An untouched job from :meth:`lookup` becomes inline (its bit is set)."""
        if job.id in self._jobs:
            return
        where = self.segments.locate(job.id)
        assert isinstance(where, Location)
        self.segments.leave(where)
        self._restore(job)

    def next_due_at(self) -> float | None:
        """Wall time the next delayed job falls due (None: none is delayed)."""
        heap = self._delayed
        while heap and self._delayed_at.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def archive_keys(self) -> list[str]:
        return list(self._archive)

    def archived_under(self, key: str) -> list[Job]:
        """The finished jobs waiting to be archived under ``key``, in seq order."""
        return sorted((self._jobs[i] for i in self._archive.get(key, ())), key=lambda j: j.seq)

    def fragments(self, jobs: Iterable[Job]) -> Iterator[bytes]:
        """The encoded JSON of ``jobs``, encoding only those that changed."""
        return self._fragments.of(jobs)

    def encoded_chunks(self) -> Iterator[bytes]:
        """All jobs' JSON in seq order, as comma-joined chunks (join them with ",")."""
        return self._fragments.chunks()

    # -- changing --------------------------------------------------------------------

    def add(self, job: Job) -> None:
        """Add a new job; its seq must be the table's next_seq."""
        assert job.id not in self._jobs
        assert job.seq >= self.next_seq
        self.next_seq = job.seq + 1
        self._insert(job)

    def replace(self, job: Job) -> None:
        """Store a changed version of an existing job and update every index (a job
        that stays claimed keeps its lease)."""
        old = self._jobs[job.id]
        still_claimed = old.status is JobStatus.CLAIMED and job.status is JobStatus.CLAIMED
        lease = self._leases.get(job.id) if still_claimed else None
        self._unindex(old)
        self._jobs[job.id] = job
        self._fragments.stale(job)
        self._index(job)
        if lease is not None:
            self.set_lease(job.id, lease)

    def remove(self, job_id: str) -> None:
        job = self._jobs.pop(job_id)
        self._fragments.remove(job)
        self._unindex(job)

    def promote_due(self) -> set[str]:
        """Move the delayed jobs whose time has come (``clock.wall``) to their queues'
        ready heaps; returns the queues that gained jobs."""
        wall = self._clock.wall
        gained: set[str] = set()
        while (at := self.next_due_at()) is not None and at <= wall:
            _, _, job_id = heapq.heappop(self._delayed)
            del self._delayed_at[job_id]
            job = self._jobs[job_id]
            q = self._queues[job.queue]
            q.delayed -= 1
            self._make_due(job, q)
            gained.add(job.queue)
        return gained

    def set_lease(self, job_id: str, deadline: float) -> None:
        """Set the heartbeat deadline of a claimed job (kept in memory only)."""
        self._leases[job_id] = deadline
        heapq.heappush(self._lease_heap, (deadline, job_id))
        if len(self._lease_heap) > 2 * len(self._leases) + 64:
            self._lease_heap = [(d, i) for i, d in self._leases.items()]
            heapq.heapify(self._lease_heap)

    def lease_deadline(self, job_id: str) -> float | None:
        return self._leases.get(job_id)

    def next_lease_deadline(self) -> float | None:
        heap = self._lease_heap
        while heap and self._leases.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def expired_leases(self, now: float) -> list[str]:
        """Ids of claimed jobs whose deadline is at or before ``now``, earliest first."""
        expired = []
        while (deadline := self.next_lease_deadline()) is not None and deadline <= now:
            _, job_id = heapq.heappop(self._lease_heap)
            del self._leases[job_id]
            expired.append(job_id)
        return expired

    # -- internals -------------------------------------------------------------------

    def _insert(self, job: Job) -> None:
        self._jobs[job.id] = job
        self._fragments.stale(job)
        self._index(job)

    def _restore(self, job: Job) -> None:
        """Insert a job that left a segment (an old seq: kept in seq order)."""
        self._jobs[job.id] = job
        self._fragments.restored(job)
        self._index(job)

    def _queue(self, name: str) -> _Queue:
        q = self._queues.get(name)
        if q is None:
            q = self._queues[name] = _Queue()
        return q

    def _make_due(self, job: Job, q: _Queue) -> None:
        # Lazy deletion leaves stale entries behind; rebuild when they dominate.
        live = len(q.ready_ids)
        if len(q.ready) > 2 * live + 64 or len(q.oldest) > 2 * live + 64:
            self._rebuild(q)
        since = _ready_since(job)
        q.ready_ids[job.id] = since
        heapq.heappush(q.ready, (-job.priority, job.seq, job.id))
        heapq.heappush(q.oldest, (since, job.seq, job.id))
        self._ready_total += 1

    def _index(self, job: Job) -> None:
        if job.born.key is not None:
            self._keys[(job.queue, job.born.key)] = job.id
        if job.archive_key is not None:  # leaving: in no queue's index
            self._archive.setdefault(job.archive_key, set()).add(job.id)
            return
        q = self._queue(job.queue)
        if job.status is JobStatus.READY:
            at = job.ready_at
            if (
                at is None
                and self._spill
                and job.born.key is None
                and self._seq_of(job.id) == job.seq
            ):
                self._spillable[job.id] = len(job.payload)
                self.spillable_bytes += len(job.payload)
            if at is None or at <= self._clock.wall:
                self._make_due(job, q)
            else:
                if len(self._delayed) > 2 * len(self._delayed_at) + 64:
                    self._delayed = [(t, self._jobs[i].seq, i) for i, t in self._delayed_at.items()]
                    heapq.heapify(self._delayed)
                self._delayed_at[job.id] = at
                heapq.heappush(self._delayed, (at, job.seq, job.id))
                q.delayed += 1
        elif job.status is JobStatus.CLAIMED:
            q.claimed += 1
            self._claimed_total += 1
        elif job.status is JobStatus.DEAD:
            q.dead[job.id] = None
            self._dead[job.id] = None
            if len(self._dead_heap) > 2 * len(self._dead) + 64:
                self._dead_heap = [e for e in self._dead_heap if self._live_dead(e)]
                heapq.heapify(self._dead_heap)
            heapq.heappush(self._dead_heap, (job.finished_at or 0.0, job.seq, job.id))

    def _unindex(self, job: Job) -> None:
        if job.born.key is not None and self._keys.get((job.queue, job.born.key)) == job.id:
            del self._keys[(job.queue, job.born.key)]
        if job.archive_key is not None:
            ids = self._archive[job.archive_key]
            ids.discard(job.id)
            if not ids:
                del self._archive[job.archive_key]
            return
        q = self._queues[job.queue]
        if job.status is JobStatus.READY:
            size = self._spillable.pop(job.id, None)
            if size is not None:
                self.spillable_bytes -= size
            if job.id in q.ready_ids:
                del q.ready_ids[job.id]
                self._ready_total -= 1
            elif self._delayed_at.pop(job.id, None) is not None:
                q.delayed -= 1
        elif job.status is JobStatus.CLAIMED:
            q.claimed -= 1
            self._claimed_total -= 1
            self._leases.pop(job.id, None)
        elif job.status is JobStatus.DEAD:
            del q.dead[job.id], self._dead[job.id]
        if q.empty():  # (its heaps hold only stale entries then)
            del self._queues[job.queue]

    def _rebuild(self, q: _Queue) -> None:
        jobs = [self._jobs[i] for i in q.ready_ids]
        q.ready = [(-j.priority, j.seq, j.id) for j in jobs]
        q.oldest = [(q.ready_ids[j.id], j.seq, j.id) for j in jobs]
        heapq.heapify(q.ready)
        heapq.heapify(q.oldest)

    def _resort(self) -> None:
        """After loading: death order was fixed by the sort in ``__init__``; the
        fragment caches must iterate in seq order."""
        self._fragments.resort()
