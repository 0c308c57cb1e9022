"""Answers to remember for a while after a job has left the state.

A worker whose Complete (or Fail) got no answer (a timeout, a dropped connection) sends
it again. If the first one landed and the job has since been archived and dropped from
the state, the broker no longer knows the job, and "not found" would leave the worker
unable to tell "done" from "never existed". So the broker remembers, per (job, worker),
the answer it gave, for ``reply_memory`` seconds and at most ``reply_memory_size``
entries (oldest forgotten first). Memory only: a successor broker does not know them.
"""

from __future__ import annotations

from collections import OrderedDict

from osqueue_core.results import Completed, Failed

Outcome = Completed | Failed


class RecentOutcomes:
    """(job id, worker id) -> the answer given, with the time it was remembered."""

    def __init__(self, lifetime: float, size: int) -> None:
        self._lifetime = lifetime
        self._size = size
        self._entries: OrderedDict[tuple[str, str], tuple[float, Outcome]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, job_id: str, worker_id: str, outcome: Outcome, now: float) -> None:
        key = (job_id, worker_id)
        self._entries.pop(key, None)
        self._entries[key] = (now, outcome)
        self._forget_old(now)

    def recall(self, job_id: str, worker_id: str, now: float) -> Outcome | None:
        self._forget_old(now)
        entry = self._entries.get((job_id, worker_id))
        return None if entry is None else entry[1]

    def _forget_old(self, now: float) -> None:
        entries = self._entries
        while entries and (
            len(entries) > self._size or next(iter(entries.values()))[0] + self._lifetime <= now
        ):
            entries.popitem(last=False)
