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
import orjson


@attrs.frozen
class RememberedKey:
    """A key of a job that left the state, and until when (wall time) it holds."""

    queue: str
    key: str
    job_id: str
    until: float


def encode_remembered(entry: RememberedKey) -> bytes:
    """One entry's JSON in the state's ``keys`` list: the canonical form cattrs would
    write (every field, in order)."""
    raw = {"queue": entry.queue, "key": entry.key, "job_id": entry.job_id, "until": entry.until}
    # A right-sized copy: orjson over-allocates small results (~4 KB each), and this
    # fragment is cached for as long as the key is remembered.
    return bytes(memoryview(orjson.dumps(raw)))


class RememberedKeys:
    """(queue, key) -> the job id it was given, in the order they were remembered.

    Each entry's JSON is encoded once, and the joined list is cached until an entry
    comes or goes, so a state write costs nothing per remembered key."""

    def __init__(self, size: int, entries: Iterable[RememberedKey] = ()) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[str, str], tuple[RememberedKey, bytes]] = OrderedDict()
        self._joined: bytes | None = None
        for entry in sorted(entries, key=lambda e: e.until):
            self._entries[(entry.queue, entry.key)] = (entry, encode_remembered(entry))
        self._trim()

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, entry: RememberedKey) -> None:
        self._entries.pop((entry.queue, entry.key), None)
        self._entries[(entry.queue, entry.key)] = (entry, encode_remembered(entry))
        self._joined = None
        self._trim()

    def recall(self, queue: str, key: str, wall: float) -> str | None:
        """The job id ``key`` was given in ``queue``, if still remembered at ``wall``."""
        self.forget_expired(wall)
        found = self._entries.get((queue, key))
        return None if found is None or found[0].until <= wall else found[0].job_id

    def forget_expired(self, wall: float) -> None:
        entries = self._entries
        while entries and next(iter(entries.values()))[0].until <= wall:
            entries.popitem(last=False)
            self._joined = None

    def entries(self) -> tuple[RememberedKey, ...]:
        return tuple(entry for entry, _ in self._entries.values())

    def encoded(self) -> bytes:
        """The entries' JSON, comma-joined (the inside of the state's ``keys`` list)."""
        if self._joined is None:
            self._joined = b",".join(fragment for _, fragment in self._entries.values())
        return self._joined

    def _trim(self) -> None:
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
            self._joined = None
