"""``osqueue stats``: counts of the state object's jobs per queue, read from the state
alone (no segment is read: a reference says how many of its jobs each queue has).

Inline jobs are counted by status; an untouched segment job is ``ready`` (spilled jobs
are due: architecture.md, "Stage 1 as built"), counted in ``ready`` and in ``untouched``,
as the broker's own stats count them. A queue's oldest ready job is the longest-waiting
due inline job, or the oldest ready-since a segment recorded for that queue's group
(written with the segment: the job it names may have left since, so for segments it is
a lower bound).
"""

from __future__ import annotations

from typing import Any

import attrs

from osqueue_core import JobStatus, SegmentRef
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


def queue_lines(snapshot: Snapshot, now: float) -> list[QueueLine]:
    """Per queue, sorted by name: the counts described in the module docstring."""
    lines: dict[str, QueueLine] = {}

    def line(queue: str) -> QueueLine:
        return lines.setdefault(queue, QueueLine(queue))

    for job in snapshot.inline():
        counts = line(job.queue)
        if job.leaving:
            counts.finishing += 1
        elif job.status is JobStatus.READY:
            ready_at = job.ready_at
            if ready_at is not None and ready_at > now:
                counts.delayed += 1
            else:
                counts.ready += 1
                counts.waited(job.created_at if ready_at is None else max(job.created_at, ready_at))
        elif job.status is JobStatus.CLAIMED:
            counts.claimed += 1
        elif job.dead_letter:
            counts.dead += 1
    for ref in snapshot.refs:
        for queue, untouched, since in _untouched_by_group(ref):
            if untouched:
                counts = line(queue)
                counts.ready += untouched
                counts.untouched += untouched
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


def state_summary(snapshot: Snapshot, now: float) -> dict[str, Any]:
    """The ``stats`` document (docs/operations.md): the owner, the counters of the
    state, totals and per-queue lines."""
    header = snapshot.state.header
    owner = header.owner
    lines = queue_lines(snapshot, now)
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
