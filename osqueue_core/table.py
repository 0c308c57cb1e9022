"""The broker's in-memory copy of the jobs, with the indexes that keep operations cheap.

Every operation is O(log n) or better in the number of jobs: ready jobs sit in a heap
ordered by ``seq`` (FIFO, and a requeued job returns to its original place), leases in
a heap ordered by deadline, finished jobs in an index by archive key. Each job's JSON
fragment is cached and re-encoded only after the job changes, so encoding a state for
a write costs what the batch changed plus one ``bytes.join``. Fragments are grouped in
chunks of ``CHUNK`` consecutive seqs whose joined bytes are cached too, so assembling
a state touches one Python object per chunk, not one per job.

Heaps use lazy deletion: an entry is checked against the table when it reaches the top,
and the heap is rebuilt when stale entries outnumber live ones.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator

from osqueue_core.codec import encode_job
from osqueue_core.job import FINISHED, Job, JobStatus

#: Jobs per cached chunk of the encoded job list.
CHUNK = 256


class JobTable:
    """Jobs by id, in insertion (push) order, plus ready/lease/archive indexes."""

    def __init__(self, jobs: Iterable[Job] = (), next_seq: int = 0) -> None:
        self.next_seq = next_seq
        self._jobs: dict[str, Job] = {}
        # Chunk (seq // CHUNK) -> job id -> encoded job, None when it must be re-encoded.
        # Seqs only grow, so both dicts iterate in seq order: the order of the state.
        self._chunks: dict[int, dict[str, bytes | None]] = {}
        # Chunk -> its fragments joined with ",", None when a job in it changed.
        self._joined: dict[int, bytes | None] = {}
        self._ready: list[tuple[int, str]] = []
        self._ready_count = 0
        self._leases: dict[str, float] = {}
        self._lease_heap: list[tuple[float, str]] = []
        self._archive: dict[str, set[str]] = {}
        self._claimed_count = 0
        for job in sorted(jobs, key=lambda j: j.seq):
            self._insert(job)

    # -- reading ---------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self) -> Iterator[Job]:
        return iter(self._jobs.values())

    @property
    def ready_count(self) -> int:
        return self._ready_count

    @property
    def claimed_count(self) -> int:
        return self._claimed_count

    @property
    def finished_count(self) -> int:
        return sum(len(ids) for ids in self._archive.values())

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
        for index, chunk in self._chunks.items():
            joined = self._joined[index]
            if joined is None:
                fragments = []
                for job_id, fragment in chunk.items():
                    if fragment is None:
                        fragment = chunk[job_id] = encode_job(self._jobs[job_id])
                    fragments.append(fragment)
                joined = self._joined[index] = b",".join(fragments)
            yield joined

    # -- changing --------------------------------------------------------------------

    def add(self, job: Job) -> None:
        """Add a new job; its seq must be the table's next_seq."""
        assert job.id not in self._jobs
        assert job.seq >= self.next_seq
        self.next_seq = job.seq + 1
        self._insert(job)

    def replace(self, job: Job) -> None:
        """Store a changed version of an existing job and update every index."""
        old = self._jobs[job.id]
        self._unindex(old)
        self._jobs[job.id] = job
        self._stale(job)
        self._index(job)

    def remove(self, job_id: str) -> None:
        job = self._jobs.pop(job_id)
        index = job.seq // CHUNK
        chunk = self._chunks[index]
        del chunk[job_id]
        if chunk:
            self._joined[index] = None
        else:
            del self._chunks[index], self._joined[index]
        self._unindex(job)

    def pop_ready(self) -> Job | None:
        """The ready job with the lowest seq, removed from the ready index (still READY:
        the caller replaces it with its claimed version)."""
        while self._ready:
            seq, job_id = heapq.heappop(self._ready)
            job = self._jobs.get(job_id)
            if job is not None and job.seq == seq and job.status is JobStatus.READY:
                return job
        return None

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
        self._joined[index] = None

    def _index(self, job: Job) -> None:
        if job.status is JobStatus.READY:
            # Lazy deletion leaves stale entries behind; rebuild when they dominate.
            if len(self._ready) > 2 * self._ready_count + 64:
                self._rebuild_ready()
            heapq.heappush(self._ready, (job.seq, job.id))
            self._ready_count += 1
        elif job.status is JobStatus.CLAIMED:
            self._claimed_count += 1
        elif job.status in FINISHED:
            assert job.archive_key is not None
            self._archive.setdefault(job.archive_key, set()).add(job.id)

    def _unindex(self, job: Job) -> None:
        if job.status is JobStatus.READY:
            self._ready_count -= 1
        elif job.status is JobStatus.CLAIMED:
            self._claimed_count -= 1
            self._leases.pop(job.id, None)
        elif job.status in FINISHED:
            assert job.archive_key is not None
            ids = self._archive[job.archive_key]
            ids.discard(job.id)
            if not ids:
                del self._archive[job.archive_key]

    def _rebuild_ready(self) -> None:
        self._ready = [(j.seq, j.id) for j in self._jobs.values() if j.status is JobStatus.READY]
        heapq.heapify(self._ready)
