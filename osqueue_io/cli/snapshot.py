"""The queue's state as read from storage by a command: the state object, and its
segments read one at a time when a command needs their jobs.

Read-only: nothing here writes, and nothing waits for a broker. A job is in exactly one
place (docs/state-format.md, "Segments"): inline in the state's ``jobs``, or untouched at
a position of a referenced segment. :meth:`Snapshot.read` takes one state object;
:meth:`Snapshot.untouched` reads one segment, checked against its reference.

A segment can vanish between reading the state and reading the segment only because the
state moved on (stage 2 deletes a segment once a state without its reference has
landed). So an absent segment is judged against the state's version:
:class:`StateMoved` if the state changed (read again: :func:`with_snapshot` does, a few
times), ``SegmentMissing`` if it did not (the data is lost: exit 4).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import attrs

from osqueue_core import (
    DecodedState,
    Job,
    SegmentMissing,
    SegmentRef,
    decode_segment,
    decode_state,
    default_job_seq,
    quote,
    segment_job,
    untouched_positions,
)
from osqueue_io.cli.exits import EXIT_NOT_FOUND, CliError
from osqueue_io.storage import ObjectStore, ObjectVersion

__all__ = ["Located", "Snapshot", "StateMoved", "with_snapshot"]

T = TypeVar("T")

#: Reads of a fresh state after the one before moved on under a command.
STATE_READ_ATTEMPTS = 3


class StateMoved(Exception):
    """The state object changed while a command was reading its segments."""


@attrs.frozen
class Located:
    """A job and where it is: inline (``segment`` None) or untouched in ``segment``."""

    job: Job
    segment: str | None = None


@attrs.frozen
class Snapshot:
    """One version of the state object in ``store`` (at ``state_key``)."""

    store: ObjectStore
    state_key: str
    version: ObjectVersion
    state: DecodedState

    @classmethod
    async def read(cls, store: ObjectStore, state_key: str) -> Snapshot:
        """Read and fully validate the state object (``CorruptState``,
        ``UnsupportedSchema``); a missing one is a :class:`CliError` (exit 3)."""
        found = await store.read(state_key)
        if found is None:
            raise CliError(
                f"no state object {quote(state_key)} in {store.url}: check --data and "
                "--state-key (a broker creates it when it first starts)",
                EXIT_NOT_FOUND,
            )
        return cls(store, state_key, found.version, decode_state(found.data))

    @property
    def refs(self) -> list[SegmentRef]:
        return self.state.segments

    def inline(self) -> list[Job]:
        """The jobs in the state object itself, in ``seq`` order."""
        return self.state.jobs

    async def untouched(self, ref: SegmentRef) -> Iterator[Job]:
        """The untouched jobs of segment ``ref``, in position order (claim order per
        queue): one read of the segment, checked against ``ref``."""
        contents = decode_segment(await self._read_segment(ref), ref)
        records = contents.records
        return (segment_job(records[position], ref.key) for position in untouched_positions(ref))

    async def find(self, job_id: str) -> Located | None:
        """The job ``job_id`` in this state: inline, or untouched in a segment whose seq
        range holds the seq its id names (at most a few segment reads)."""
        for job in self.state.jobs:
            if job.id == job_id:
                return Located(job)
        # Only ids that name their seq are spilled (architecture.md, "Stage 1 as built"):
        # the default factory's, and a group queue's, which is "<queue>/" before one.
        seq = default_job_seq(job_id.rpartition("/")[2])
        if seq is None:
            return None  # not an id that names a seq: it is not in a segment
        for ref in self.refs:
            if ref.seqs[0] <= seq <= ref.seqs[1]:
                for job in await self.untouched(ref):
                    if job.id == job_id:
                        return Located(job, ref.key)
        return None

    async def _read_segment(self, ref: SegmentRef) -> bytes:
        found = await self.store.read(ref.key)
        if found is not None:
            return found.data
        now = await self.store.head(self.state_key)
        if now != self.version:
            raise StateMoved
        raise SegmentMissing(ref.key)


async def with_snapshot(
    store: ObjectStore, state_key: str, use: Callable[[Snapshot], Awaitable[T]]
) -> T:
    """``use`` a fresh :class:`Snapshot`, reading the state again (a few times) when
    it moved on while ``use`` read a segment."""
    for _ in range(STATE_READ_ATTEMPTS - 1):
        try:
            return await use(await Snapshot.read(store, state_key))
        except StateMoved:
            continue
    try:
        return await use(await Snapshot.read(store, state_key))
    except StateMoved:
        raise CliError(
            f"the state object {quote(state_key)} changed under {STATE_READ_ATTEMPTS} reads "
            "in a row while its segments were read (a busy broker): retry"
        ) from None
