"""Idempotency keys of jobs that have left the state, remembered for a while.

A push with a key returns the job already pushed with that (queue, key) instead of
creating another. While that job is in the state its key is found through the job
table; once it has been archived and dropped, its key moves here, in the same state
write that drops the job, and stays ``idempotency_retention`` seconds (at most
``max_remembered_keys`` of them, the oldest forgotten first). They live in the state
object, so a successor broker honours them too.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

import attrs


@attrs.frozen
class RememberedKey:
    """A key of a job that left the state, and until when (wall time) it holds."""

    queue: str
    key: str
    job_id: str
    until: float


class RememberedKeys:
    """(queue, key) -> the job id it was given, in the order they were remembered."""

    def __init__(self, size: int, entries: Iterable[RememberedKey] = ()) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[str, str], RememberedKey] = OrderedDict()
        for entry in sorted(entries, key=lambda e: e.until):
            self._entries[(entry.queue, entry.key)] = entry
        self._trim()

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, entry: RememberedKey) -> None:
        self._entries.pop((entry.queue, entry.key), None)
        self._entries[(entry.queue, entry.key)] = entry
        self._trim()

    def recall(self, queue: str, key: str, wall: float) -> str | None:
        """The job id ``key`` was given in ``queue``, if still remembered at ``wall``."""
        self.forget_expired(wall)
        entry = self._entries.get((queue, key))
        return None if entry is None or entry.until <= wall else entry.job_id

    def forget_expired(self, wall: float) -> None:
        entries = self._entries
        while entries and next(iter(entries.values())).until <= wall:
            entries.popitem(last=False)

    def entries(self) -> tuple[RememberedKey, ...]:
        return tuple(self._entries.values())

    def _trim(self) -> None:
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
