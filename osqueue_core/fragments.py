"""Each inline job's encoded JSON, cached so that a write encodes only what changed.

Fragments are grouped in chunks of ``CHUNK`` consecutive seqs whose joined bytes are
cached too, so assembling a state touches one Python object per chunk; a chunk that
changed is re-joined in one ``bytes.join`` over its fragments, after re-encoding only
the jobs it records as changed. Cached fragments are right-sized copies
(:func:`~osqueue_core.job_json.encode_job`): they live as long as their job. Both levels
iterate in seq order (the state's order): new jobs have the highest seq, and a job that
comes back from a segment (an old seq) is sorted into place.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from osqueue_core.job import Job
from osqueue_core.job_json import encode_job

#: Jobs per cached chunk of the encoded job list.
CHUNK = 256


class Fragments:
    """The fragments of the jobs in ``jobs`` (the job table's dict, by id)."""

    def __init__(self, jobs: dict[str, Job]) -> None:
        self._jobs = jobs
        # Chunk (seq // CHUNK) -> job id -> encoded job, None when it must be re-encoded.
        self._chunks: dict[int, dict[str, bytes | None]] = {}
        # Chunk -> its fragments joined with ",", None when a job in it changed.
        self._joined: dict[int, bytes | None] = {}
        # Chunk -> ids of its jobs whose fragment is None (changed since encoded).
        self._changed: dict[int, set[str]] = {}

    def stale(self, job: Job) -> None:
        """``job`` is new or changed: encode it again before the next write."""
        index = job.seq // CHUNK
        chunk = self._chunks.get(index)
        if chunk is None:
            chunk = self._chunks[index] = {}
        chunk[job.id] = None
        changed = self._changed.get(index)
        if changed is None:
            changed = self._changed[index] = set()
        changed.add(job.id)
        self._joined[index] = None

    def restored(self, job: Job) -> None:
        """``job`` (an old seq, back from a segment) is new here: keep seq order."""
        index = job.seq // CHUNK
        chunk = self._chunks.get(index)
        if chunk is None:
            last = next(reversed(self._chunks), None)
            self.stale(job)
            if last is not None and last > index:
                self._chunks = dict(sorted(self._chunks.items()))
            return
        last_seq = self._jobs[next(reversed(chunk))].seq if chunk else None
        self.stale(job)
        if last_seq is not None and last_seq > job.seq:
            self._chunks[index] = self._sorted(self._chunks[index])

    def remove(self, job: Job) -> None:
        index = job.seq // CHUNK
        chunk = self._chunks[index]
        del chunk[job.id]
        if chunk:
            self._joined[index] = None
        else:
            del self._chunks[index], self._joined[index]
            self._changed.pop(index, None)

    def resort(self) -> None:
        """After loading jobs in another order: seq order again."""
        self._chunks = {index: self._sorted(chunk) for index, chunk in sorted(self._chunks.items())}

    def of(self, jobs: Iterable[Job]) -> Iterator[bytes]:
        """The encoded JSON of ``jobs``, encoding only those that changed."""
        for job in jobs:
            chunk = self._chunks[job.seq // CHUNK]
            fragment = chunk[job.id]
            if fragment is None:
                fragment = chunk[job.id] = encode_job(job)
            yield fragment

    def chunks(self) -> Iterator[bytes]:
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

    def _sorted(self, chunk: dict[str, bytes | None]) -> dict[str, bytes | None]:
        return dict(sorted(chunk.items(), key=lambda kv: self._jobs[kv[0]].seq))
