"""Which commands must wait for a segment read before they are applied.

A command that needs a job of a segment that is not loaded is not applied half-way
and finished later: it waits, before anything is changed, at the head of the broker's
queue of commands (everything behind it waits too, so commands still apply in arrival
order), and is applied to the head state as it is once the read has landed. The
commands that wait: a claim whose best job is in an unloaded segment (its cursor's key
may be only a lower bound), any command naming a job that is not inline but may be
untouched in a segment (its seq, parsed from the id, lies in the segment's range), and
a push with an idempotency key that is not inline, while the key index is still being
read (after a takeover) or when an untouched job's key has the same hash (its segment
tells whether the key is the same).
"""

from __future__ import annotations

from osqueue_core.commands import (
    Cancel,
    Claim,
    Command,
    Complete,
    Fail,
    GetJob,
    Heartbeat,
    NewJob,
    Purge,
    Push,
    PushBatch,
    Redrive,
    Release,
)
from osqueue_core.table import JobTable, SegmentNeeded


def segment_needed(table: JobTable, command: Command) -> str | None:
    """The key of the segment ``command`` needs read first (asked for: added to
    ``table.segments.demanded``, unless only its key index is needed, which is read
    anyway), or None when it can be applied now."""
    if not table.segments.total:
        return None
    needed: SegmentNeeded | None = None
    match command:
        case Claim():
            needed = table.peek_ready(command.queues)
        case Heartbeat() | Complete() | Fail() | Release() | Cancel() | GetJob():
            needed = table.segment_for(command.job_id)
        case Redrive() | Purge() if command.queue is None:
            for job_id in command.job_ids:
                needed = needed or table.segment_for(job_id)
        case Push() if command.key is not None:
            needed = table.key_segment_for(command.queue, command.key)
        case PushBatch():
            for item in command.payloads:
                if isinstance(item, NewJob) and item.key is not None:
                    needed = needed or table.key_segment_for(item.queue, item.key)
    if needed is None:
        return None
    if needed.header_only:
        return needed.key  # its key index is being read; nothing to load
    table.segments.demanded[needed.key] = None
    table.segments.pinned.add(needed.key)
    return needed.key
