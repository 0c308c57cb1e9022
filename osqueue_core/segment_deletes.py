"""Deleting segments that no state can reference any more, off the acknowledgement path.

A reference is only ever added for a segment its writer has just created under its own
epoch, so a segment that a *landed* state no longer references is never referenced
again (docs/architecture.md, "Dropping and deleting"). Three kinds are deleted:

* a **dropped** segment (every position left): once the first state write without it
  is known landed (``ObjectWritten``, or a read-back that found it). A write that never
  lands (the broker was replaced first, failed, crashed) deletes nothing: the
  successor's sweep finds the object;
* a spill of this broker's that was **never attached** (every picked job changed before
  its create was known): at once, since no state ever referenced it;
* the **orphans** a sweep finds after a takeover (:mod:`osqueue_core.segment_sweep`).

A spill abandoned because its key held somebody else's object is never handed here: the
object is not ours.

At most ``MAX_DELETES`` deletes are in flight; an absent object counts as deleted. A
failed delete is retried after a backoff, ``DELETE_ATTEMPTS`` times in a row at most,
then left in storage for the next takeover's sweep, and so is every key beyond
``MAX_WAITING``: what this broker owes storage stays bounded. With nothing to delete,
nothing is issued and no timer runs.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from osqueue_core.backoffs import KeyBackoffs
from osqueue_core.clock import Clock
from osqueue_core.config import BrokerConfig
from osqueue_core.effects import DeleteObject
from osqueue_core.events import ObjectDeleted, StorageResult
from osqueue_core.outbox import Outbox

#: Segment deletes in flight at once, at most.
MAX_DELETES = 8
#: Failures in a row after which a key is left for the next takeover's sweep.
DELETE_ATTEMPTS = 10
#: Keys waiting to be deleted (for a write to land, a slot, a retry), at most.
MAX_WAITING = 10_000


@attrs.define
class DeleteCounters:
    """What deleting has done, for monitoring."""

    #: Segment objects deleted (or found absent already).
    deleted: int = 0
    #: Keys given up (failed ``DELETE_ATTEMPTS`` times, or beyond ``MAX_WAITING``):
    #: left in storage for the next takeover's sweep.
    abandoned: int = 0


class SegmentDeleter:
    """Segment keys waiting to be deleted, being deleted, or waiting for a retry."""

    def __init__(self, config: BrokerConfig, clock: Clock, outbox: Outbox) -> None:
        self._out = outbox
        #: State revision -> the keys its write dropped, until that write lands.
        self._after_write: dict[int, list[str]] = {}
        self._waiting_writes = 0
        #: Keys to delete as soon as a slot is free, oldest first.
        self._queue: dict[str, None] = {}
        self._in_flight: set[str] = set()
        self._backoffs = KeyBackoffs(config, clock)
        self._active = True
        self.counters = DeleteCounters()

    @property
    def backlog(self) -> int:
        """Keys that may be deleted now: queued, in flight, or waiting out a backoff."""
        return len(self._queue) + len(self._in_flight) + len(self._backoffs)

    @property
    def pending(self) -> int:
        """Every key still to be deleted, those waiting for their drop to land too."""
        return self.backlog + self._waiting_writes

    def dropped(self, keys: Iterable[str], revision: int) -> None:
        """The state write of ``revision`` is the first without ``keys``: delete them
        once it is known landed."""
        kept = self._room(keys)
        if kept:
            self._after_write.setdefault(revision, []).extend(kept)
            self._waiting_writes += len(kept)

    def landed(self, revision: int) -> None:
        """The state write of ``revision`` landed: what it, or a write before it,
        dropped may go."""
        for written in [r for r in self._after_write if r <= revision]:
            keys = self._after_write.pop(written)
            self._waiting_writes -= len(keys)
            self._queue.update(dict.fromkeys(keys))

    def delete(self, key: str) -> None:
        """Delete ``key`` as soon as a slot is free: nothing can reference it any more."""
        if self._room([key]):
            self._queue[key] = None

    def pump(self) -> None:
        """Issue the deletes that may go now: retries whose backoff passed, then the
        queue, while fewer than ``MAX_DELETES`` are in flight."""
        if not self._active:
            return
        for key in self._backoffs.due():
            # Back in the queue (and no longer timed): waiting for a slot never keeps
            # next_deadline() in the past.
            self._backoffs.trying(key)
            self._queue[key] = None
        while self._queue and len(self._in_flight) < MAX_DELETES:
            key = next(iter(self._queue))
            del self._queue[key]
            if key not in self._in_flight:
                self._issue(key)

    def next_deadline(self) -> float | None:
        return self._backoffs.next_deadline() if self._active else None

    def stop(self) -> None:
        """No more deletes (the broker failed): the successor's sweep finds what is
        left."""
        self._active = False
        self._after_write.clear()
        self._waiting_writes = 0
        self._queue.clear()
        self._backoffs.clear()

    def _room(self, keys: Iterable[str]) -> list[str]:
        """Those of ``keys`` there is room to remember (none once stopped)."""
        if not self._active:
            return []
        kept: list[str] = []
        for key in keys:
            if self.pending + len(kept) >= MAX_WAITING:
                self.counters.abandoned += 1
            else:
                kept.append(key)
        return kept

    def _issue(self, key: str) -> None:
        self._in_flight.add(key)
        self._out.issue(
            lambda op_id: DeleteObject(op_id, key), lambda result: self._on_delete(key, result)
        )

    def _on_delete(self, key: str, result: StorageResult) -> None:
        self._in_flight.discard(key)
        if not self._active:
            return
        if isinstance(result, ObjectDeleted):
            self._backoffs.succeeded(key)
            self.counters.deleted += 1
        elif self._backoffs.failures(key) + 1 >= DELETE_ATTEMPTS:
            self._backoffs.succeeded(key)  # forget it: the next takeover's sweep finds it
            self.counters.abandoned += 1
        else:
            self._backoffs.failed(key)
