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
    they reach the top (lazy deletion), so every operation is O(log n).
    """

    def __init__(self) -> None:
        self._waiting: dict[RequestId, Waiter] = {}
        self._deadlines: list[tuple[float, int, RequestId]] = []
        self._arrivals = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, waiter: Waiter) -> None:
        self._waiting[waiter.request_id] = waiter
        self._arrivals += 1  # breaks deadline ties by arrival, never comparing ids
        heapq.heappush(self._deadlines, (waiter.deadline, self._arrivals, waiter.request_id))

    def pop_first(self) -> Waiter | None:
        """The longest-waiting claim, removed; None if there is none."""
        if not self._waiting:
            return None
        return self._waiting.pop(next(iter(self._waiting)))

    def withdraw(self, request_id: RequestId) -> bool:
        """Remove a waiting claim; False if it was not waiting."""
        return self._waiting.pop(request_id, None) is not None

    def expire(self, now: float) -> list[RequestId]:
        """Remove and return the claims whose deadline is at or before ``now``."""
        expired = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, request_id = heapq.heappop(self._deadlines)
            if self._waiting.pop(request_id, None) is not None:
                expired.append(request_id)
        return expired

    def next_deadline(self) -> float | None:
        while self._deadlines and self._deadlines[0][2] not in self._waiting:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None

    def take_all(self) -> list[RequestId]:
        """Remove every waiting claim (on stop or failure), in arrival order."""
        request_ids = list(self._waiting)
        self._waiting.clear()
        self._deadlines.clear()
        return request_ids
