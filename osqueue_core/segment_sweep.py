"""The orphan sweep: after a takeover lands, delete the segments no state can reference.

Orphans are segments that were written but are referenced by no current state: a crash
or a replacement between a segment's create and the write attaching it, the spills of a
fenced broker, a dropped segment whose delete never ran (a crash, or ``stop()``, right
after the drop). Nothing records them, so they are found by listing
``segment_prefix``. A listed key is an **orphan** when

* it is exactly a segment key, ``<segment_prefix><epoch:06d>-<n:010d>.json`` (anything
  else under the prefix is left alone);
* its epoch lies in ``[segment_floor, e]``, ``e`` being the epoch of the owner the
  state was taken over from;
* the state this broker took over does not reference it.

Safe because a reference is only ever added for a segment its writer has just created
under its own epoch: every epoch up to ``e`` is fenced now, and this broker, the only
writer, adds only keys of its own epoch. The range is closed on both sides on purpose:
keys above ``e`` may belong to states written after the one this was restored from (a
newer backup may need them), keys below ``segment_floor`` to an earlier life of the
queue (before a ``recreate``), whose state someone may restore by hand.

The listing goes ``SWEEP_PAGE`` keys at a time, each page starting after the last key of
the one before, and the next page is asked for only once the deleter has fewer than a
page of deletes left, so memory stays bounded whatever the bucket holds. A listing that
fails is retried after a backoff, ``LIST_ATTEMPTS`` times in a row at most; then this
sweep ends unfinished and the next takeover's sweep does the rest.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from osqueue_core.clock import Clock
from osqueue_core.config import BrokerConfig, backoff
from osqueue_core.effects import ListKeys
from osqueue_core.events import KeysListed, StorageResult
from osqueue_core.outbox import Outbox
from osqueue_core.segment_deletes import SegmentDeleter
from osqueue_core.segment_refs import own_segment_epoch

#: Keys asked for by one listing.
SWEEP_PAGE = 1000
#: Failed listings in a row after which the sweep is left to the next takeover.
LIST_ATTEMPTS = 10


def orphan(prefix: str, key: str, floor: int, predecessor: int, referenced: frozenset[str]) -> bool:
    """Whether the sweep after a takeover from the owner of epoch ``predecessor``, in a
    queue whose life began at epoch ``floor``, deletes ``key`` (``referenced``: the keys
    the taken-over state references)."""
    epoch = own_segment_epoch(prefix, key)
    return epoch is not None and floor <= epoch <= predecessor and key not in referenced


@attrs.define
class SweepCounters:
    """What sweeps have done, for monitoring."""

    #: Sweeps that listed the whole prefix.
    sweeps: int = 0
    #: Orphans they found (and handed to the deleter).
    swept: int = 0


class SegmentSweep:
    """The sweep under way (at most one: one per takeover), handing orphans to
    ``deleter``."""

    def __init__(
        self, config: BrokerConfig, clock: Clock, outbox: Outbox, deleter: SegmentDeleter
    ) -> None:
        self._config = config
        self._clock = clock
        self._out = outbox
        self._deleter = deleter
        #: ``(segment_floor, predecessor's epoch)`` while a sweep is under way.
        self._range: tuple[int, int] | None = None
        self._referenced: frozenset[str] = frozenset()
        #: The last key listed so far (the next page starts after it).
        self._after: str | None = None
        self._listing = False
        self._retry_at: float | None = None
        self._failures = 0
        self.counters = SweepCounters()

    def begin(self, floor: int, predecessor: int, referenced: Iterable[str]) -> None:
        """A takeover from the owner of epoch ``predecessor`` landed, carrying the
        references ``referenced``: sweep this queue's segments of epochs ``floor`` ..
        ``predecessor``."""
        self._range = (floor, predecessor)
        self._referenced = frozenset(referenced)
        self._after = None
        self._failures = 0
        self._retry_at = None

    def pump(self) -> None:
        """List the next page, if a sweep is under way and may go on now."""
        if self._range is None or self._listing:
            return
        if self._retry_at is not None and self._clock.now < self._retry_at:
            return
        if self._deleter.backlog >= SWEEP_PAGE:
            return  # the orphans of the pages before go first (asked again on their results)
        self._listing = True
        self._retry_at = None
        prefix, after = self._config.segment_prefix, self._after
        self._out.issue(lambda op_id: ListKeys(op_id, prefix, SWEEP_PAGE, after), self._on_listed)

    def next_deadline(self) -> float | None:
        return self._retry_at if self._range is not None and not self._listing else None

    def stop(self) -> None:
        """No more listing (the broker failed)."""
        self._range = None
        self._retry_at = None

    def _on_listed(self, result: StorageResult) -> None:
        self._listing = False
        if self._range is None:
            return
        if not isinstance(result, KeysListed):
            self._failures += 1
            if self._failures >= LIST_ATTEMPTS:
                self._finish()  # unfinished: the next takeover's sweep does the rest
            else:
                self._retry_at = self._clock.now + backoff(self._config, self._failures)
            return
        self._failures = 0
        after = self._after
        # Only keys past the last one: a store that ignored ``start_after`` cannot make
        # the sweep go round in circles.
        keys = [key for key in result.keys if after is None or key > after]
        if not keys:
            self.counters.sweeps += 1
            self._finish()
            return
        floor, predecessor = self._range
        prefix = self._config.segment_prefix
        for key in keys:
            if orphan(prefix, key, floor, predecessor, self._referenced):
                self.counters.swept += 1
                self._deleter.delete(key)
        self._after = max(keys)

    def _finish(self) -> None:
        self._range = None
        self._referenced = frozenset()
        self._retry_at = None
