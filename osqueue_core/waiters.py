"""Claims waiting for a job: first come, first served, each until its own deadline."""

from __future__ import annotations

import heapq

import attrs

from osqueue_core.commands import RequestId


@attrs.frozen
class Waiter:
    """A claim waiting for a job to become ready."""

    request_id: RequestId
    worker_id: str
    deadline: float


class WaitingClaims:
    """Waiting claims in arrival order, with their deadlines in a heap.

    Withdrawn or served claims leave stale heap entries behind; they are skipped when
    they reach the top (lazy deletion), and the heap is rebuilt when stale entries
    dominate, so every operation is O(log n) amortised and memory stays proportional to
    the claims actually waiting. Entries carry the claim's arrival number, so a request
    id reused after its claim was answered is never expired by the old entry.
    """

    def __init__(self) -> None:
        self._waiting: dict[RequestId, tuple[int, Waiter]] = {}
        self._deadlines: list[tuple[float, int, RequestId]] = []
        self._arrivals = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, waiter: Waiter) -> None:
        self._arrivals += 1  # breaks deadline ties by arrival, never comparing ids
        self._waiting[waiter.request_id] = (self._arrivals, waiter)
        heapq.heappush(self._deadlines, (waiter.deadline, self._arrivals, waiter.request_id))
        if len(self._deadlines) > 2 * len(self._waiting) + 64:
            self._deadlines = [
                (w.deadline, arrival, rid) for rid, (arrival, w) in self._waiting.items()
            ]
            heapq.heapify(self._deadlines)

    def pop_first(self) -> Waiter | None:
        """The longest-waiting claim, removed; None if there is none."""
        if not self._waiting:
            return None
        return self._waiting.pop(next(iter(self._waiting)))[1]

    def withdraw(self, request_id: RequestId) -> bool:
        """Remove a waiting claim; False if it was not waiting."""
        return self._waiting.pop(request_id, None) is not None

    def _live(self, entry: tuple[float, int, RequestId]) -> bool:
        current = self._waiting.get(entry[2])
        return current is not None and current[0] == entry[1]

    def expire(self, now: float) -> list[RequestId]:
        """Remove and return the claims whose deadline is at or before ``now``."""
        expired = []
        while self._deadlines and self._deadlines[0][0] <= now:
            entry = heapq.heappop(self._deadlines)
            if self._live(entry):
                del self._waiting[entry[2]]
                expired.append(entry[2])
        return expired

    def next_deadline(self) -> float | None:
        while self._deadlines and not self._live(self._deadlines[0]):
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None

    def take_all(self) -> list[RequestId]:
        """Remove every waiting claim (on stop or failure), in arrival order."""
        request_ids = list(self._waiting)
        self._waiting.clear()
        self._deadlines.clear()
        return request_ids
