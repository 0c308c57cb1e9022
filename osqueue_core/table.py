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

Each job's JSON fragment is cached and re-encoded only after the job changes, so
encoding a state for a write costs what the batch changed plus one ``bytes.join``.
Fragments are grouped in chunks of ``CHUNK`` consecutive seqs whose joined bytes are
cached too, so assembling a state touches one Python object per chunk; a chunk that
changed is re-joined in one ``bytes.join`` over its fragments, after re-encoding only
the jobs it records as changed. Cached fragments are right-sized copies
(:func:`~osqueue_core.codec.encode_job`): they live as long as their job.

Heaps use lazy deletion: an entry is checked against the membership sets when it
reaches the top, and a heap is rebuilt when stale entries outnumber live ones.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator

import attrs

from osqueue_core.clock import Clock
from osqueue_core.codec import encode_job
from osqueue_core.job import Job, JobStatus

#: Jobs per cached chunk of the encoded job list.
CHUNK = 256


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

    def __init__(self, clock: Clock, jobs: Iterable[Job] = (), next_seq: int = 0) -> None:
        self._clock = clock
        self.next_seq = next_seq
        self._jobs: dict[str, Job] = {}
        # Chunk (seq // CHUNK) -> job id -> encoded job, None when it must be re-encoded.
        # Seqs only grow, so both dicts iterate in seq order: the order of the state.
        self._chunks: dict[int, dict[str, bytes | None]] = {}
        # Chunk -> its fragments joined with ",", None when a job in it changed.
        self._joined: dict[int, bytes | None] = {}
        # Chunk -> ids of its jobs whose fragment is None (changed since encoded).
        self._changed: dict[int, set[str]] = {}
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
        """Due READY jobs in every queue."""
        return self._ready_total

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
        return [self._counts(name, q) for name, q in sorted(self._queues.items())]

    def _counts(self, name: str, q: _Queue) -> QueueCounts:
        while q.oldest and q.ready_ids.get(q.oldest[0][2]) != q.oldest[0][0]:
            heapq.heappop(q.oldest)
        since = q.oldest[0][0] if q.oldest else None
        return QueueCounts(name, len(q.ready_ids), q.delayed, q.claimed, len(q.dead), since)

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

    def best_ready(self, queues: Iterable[str]) -> Job | None:
        """The due job a claim on ``queues`` gets: highest priority, then lowest seq.
        Not removed: the caller replaces it with its claimed version."""
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
        return None if best is None else self._jobs[best[2]]

    def has_ready(self, queue: str) -> bool:
        q = self._queues.get(queue)
        return q is not None and bool(q.ready_ids)

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
        for job in jobs:
            chunk = self._chunks[job.seq // CHUNK]
            fragment = chunk[job.id]
            if fragment is None:
                fragment = chunk[job.id] = encode_job(job)
            yield fragment

    def encoded_chunks(self) -> Iterator[bytes]:
        """All jobs' JSON in seq order, as comma-joined chunks (join them with ",")."""
        joined_chunks = self._joined
        for index, chunk in self._chunks.items():
            joined = joined_chunks[index]
            if joined is None:
                for job_id in self._changed.pop(index, ()):
                    if chunk.get(job_id, b"") is None:  # (a job removed since is skipped)
                        chunk[job_id] = encode_job(self._jobs[job_id])
                joined = joined_chunks[index] = b",".join(chunk.values())  # type: ignore[arg-type]
            yield joined

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
        self._stale(job)
        self._index(job)
        if lease is not None:
            self.set_lease(job.id, lease)

    def remove(self, job_id: str) -> None:
        job = self._jobs.pop(job_id)
        index = job.seq // CHUNK
        chunk = self._chunks[index]
        del chunk[job_id]
        if chunk:
            self._joined[index] = None
        else:
            del self._chunks[index], self._joined[index]
            self._changed.pop(index, None)
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
        self._stale(job)
        self._index(job)

    def _stale(self, job: Job) -> None:
        index = job.seq // CHUNK
        self._chunks.setdefault(index, {})[job.id] = None
        self._changed.setdefault(index, set()).add(job.id)
        self._joined[index] = None

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
        """After loading: death order was fixed by the sort in ``__init__``; the chunk
        caches must iterate in seq order."""
        self._chunks = dict(sorted(self._chunks.items()))
        for index, chunk in self._chunks.items():
            self._chunks[index] = dict(sorted(chunk.items(), key=lambda kv: self._jobs[kv[0]].seq))
