"""``osqueue stats``: counts of the state object's jobs per queue, read from the state
and, only where the state cannot tell, from a few segments.

Inline jobs are counted by status. Untouched segment jobs are counted in ``untouched``
and, as the broker's own stats count them, in ``ready`` when due or ``delayed`` when
not: a reference says how many of its jobs each queue has, and a reference with a due
range ``[min, max]`` (architecture.md, "Delayed jobs") says none is due before ``min``
and all are from ``max`` on. Only a segment in its window (``min <= now < max``) is
read, to judge its jobs one by one. A queue's oldest ready job is the longest-waiting
due job, or the oldest ready-since a segment recorded for that queue's group (written
with the segment: the job it names may have left since, so for segments it is a lower
bound).
"""

from __future__ import annotations

from typing import Any

import attrs

from osqueue_core import Job, JobStatus, SegmentRef
from osqueue_io.cli.snapshot import Snapshot

__all__ = ["QueueLine", "queue_lines", "state_summary"]


@attrs.define
class QueueLine:
    """One queue's jobs in the state, by where they are."""

    queue: str
    ready: int = 0
    delayed: int = 0
    claimed: int = 0
    dead: int = 0
    #: Completed, cancelled or purged jobs whose archive object is being written.
    finishing: int = 0
    #: Ready jobs untouched in segments (counted in ``ready`` too).
    untouched: int = 0
    oldest_ready_since: float | None = None

    def waited(self, since: float) -> None:
        if self.oldest_ready_since is None or since < self.oldest_ready_since:
            self.oldest_ready_since = since


async def queue_lines(snapshot: Snapshot, now: float) -> list[QueueLine]:
    """Per queue, sorted by name: the counts described in the module docstring."""
    lines: dict[str, QueueLine] = {}

    def line(queue: str) -> QueueLine:
        return lines.setdefault(queue, QueueLine(queue))

    def count_ready(job: Job) -> None:
        counts = line(job.queue)
        ready_at = job.ready_at
        if ready_at is not None and ready_at > now:
            counts.delayed += 1
        else:
            counts.ready += 1
            counts.waited(job.created_at if ready_at is None else max(job.created_at, ready_at))

    for job in snapshot.inline():
        counts = line(job.queue)
        if job.leaving:
            counts.finishing += 1
        elif job.status is JobStatus.READY:
            count_ready(job)
        elif job.status is JobStatus.CLAIMED:
            counts.claimed += 1
        elif job.dead_letter:
            counts.dead += 1
    for ref in snapshot.refs:
        if ref.due is not None and ref.due[0] <= now < ref.due[1]:
            # In its window: only the records say which of its jobs are due.
            for job in await snapshot.untouched(ref):
                count_ready(job)
                line(job.queue).untouched += 1
            continue
        delayed = ref.due is not None and now < ref.due[0]
        for queue, untouched, since in _untouched_by_group(ref):
            if untouched:
                counts = line(queue)
                counts.untouched += untouched
                if delayed:
                    counts.delayed += untouched
                else:
                    counts.ready += untouched
                    counts.waited(since)
    return [lines[name] for name in sorted(lines)]


def _untouched_by_group(ref: SegmentRef) -> list[tuple[str, int, float]]:
    """(queue, untouched positions, ready-since) for each group of ``ref``."""
    found: list[tuple[str, int, float]] = []
    start = 0
    for group in ref.groups:
        end = start + group.count
        gone = sum(max(0, min(end, left + count) - max(start, left)) for left, count in ref.left)
        found.append((group.queue, group.count - gone, group.since))
        start = end
    return found


async def state_summary(snapshot: Snapshot, now: float) -> dict[str, Any]:
    """The ``stats`` document (docs/operations.md): the owner, the counters of the
    state, totals and per-queue lines."""
    header = snapshot.state.header
    owner = header.owner
    lines = await queue_lines(snapshot, now)
    totals = {
        name: sum(getattr(line, name) for line in lines)
        for name in ("ready", "delayed", "claimed", "dead", "finishing", "untouched")
    }
    return {
        "storage": snapshot.store.url,
        "state_key": snapshot.state_key,
        "now": now,
        "schema_version": header.schema_version,
        "revision": header.revision,
        "owner": {
            "identity": owner.identity,
            "incarnation": owner.incarnation,
            "epoch": owner.epoch,
            "address": owner.address,
            "released": owner.released,
            "lease": owner.lease,
        },
        "next_seq": header.next_seq,
        "remembered_keys": len(header.keys),
        "inline_jobs": len(snapshot.inline()),
        "segments": len(snapshot.refs),
        **totals,
        "queues": [
            {
                **attrs.asdict(line),
                "oldest_ready_age": None
                if line.oldest_ready_since is None
                else max(0.0, now - line.oldest_ready_since),
            }
            for line in lines
        ],
    }
