"""Claims waiting for a job: first come, first served, each until its own deadline."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable

import attrs

from osqueue_core.commands import RequestId


@attrs.frozen
class Waiter:
    """A claim waiting for a job in any of ``queues`` (up to ``count`` jobs)."""

    request_id: RequestId
    worker_id: str
    deadline: float
    queues: tuple[str, ...] = ("default",)
    count: int = 1


class WaitingClaims:
    """Waiting claims in arrival order, per queue, with their deadlines in a heap.

    Withdrawn or served claims leave stale entries behind in the per-queue lines and the
    deadline heap; they are skipped when they reach the front (lazy deletion), and the
    heap is rebuilt when stale entries dominate, so every operation is O(log n)
    amortised and memory stays proportional to the claims actually waiting. Entries
    carry the claim's arrival number, so a request id reused after its claim was
    answered is never served or expired by the old entry.
    """

    def __init__(self) -> None:
        self._waiting: dict[RequestId, tuple[int, Waiter]] = {}
        self._lines: dict[str, deque[tuple[int, RequestId]]] = {}
        self._deadlines: list[tuple[float, int, RequestId]] = []
        self._arrivals = 0
        # Entries in all lines, and those of them that belong to waiting claims.
        self._entries = 0
        self._live = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, waiter: Waiter) -> None:
        self._arrivals += 1  # breaks deadline ties by arrival, never comparing ids
        arrival = self._arrivals
        self._waiting[waiter.request_id] = (arrival, waiter)
        for queue in dict.fromkeys(waiter.queues):
            self._lines.setdefault(queue, deque()).append((arrival, waiter.request_id))
        lines = _lines_of(waiter)
        self._entries += lines
        self._live += lines
        heapq.heappush(self._deadlines, (waiter.deadline, arrival, waiter.request_id))
        if len(self._deadlines) > 2 * len(self._waiting) + 64:
            self._deadlines = [
                (w.deadline, arrival, rid) for rid, (arrival, w) in self._waiting.items()
            ]
            heapq.heapify(self._deadlines)

    def _is_live(self, arrival: int, request_id: RequestId) -> bool:
        current = self._waiting.get(request_id)
        return current is not None and current[0] == arrival

    def pop_earliest(self, queues: Iterable[str]) -> Waiter | None:
        """The longest-waiting claim on any of ``queues``, removed; None if none."""
        best: tuple[int, str] | None = None
        for queue in queues:
            line = self._lines.get(queue)
            while line and not self._is_live(*line[0]):
                line.popleft()
                self._entries -= 1
            if not line:
                self._lines.pop(queue, None)
                continue
            if best is None or line[0][0] < best[0]:
                best = (line[0][0], queue)
        if best is None:
            return None
        line = self._lines[best[1]]
        _, request_id = line.popleft()
        self._entries -= 1
        if not line:
            del self._lines[best[1]]
        waiter = self._waiting.pop(request_id)[1]
        self._gone(waiter)
        return waiter

    def withdraw(self, request_id: RequestId) -> bool:
        """Remove a waiting claim; False if it was not waiting."""
        entry = self._waiting.pop(request_id, None)
        if entry is None:
            return False
        self._gone(entry[1])
        return True

    def expire(self, now: float) -> list[Waiter]:
        """Remove and return the claims whose deadline is at or before ``now``."""
        expired = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, arrival, request_id = heapq.heappop(self._deadlines)
            if self._is_live(arrival, request_id):
                waiter = self._waiting.pop(request_id)[1]
                self._gone(waiter)
                expired.append(waiter)
        return expired

    def next_deadline(self) -> float | None:
        while self._deadlines and not self._is_live(*self._deadlines[0][1:]):
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None

    def take_all(self) -> list[RequestId]:
        """Remove every waiting claim (on stop or failure), in arrival order."""
        request_ids = list(self._waiting)
        self._waiting.clear()
        self._lines.clear()
        self._deadlines.clear()
        self._entries = self._live = 0
        return request_ids

    def _gone(self, waiter: Waiter) -> None:
        """``waiter`` left (served, withdrawn, expired): its other line entries are
        stale now. Drop every stale entry once they outnumber the live ones, so memory
        and work track the claims actually waiting."""
        self._live -= _lines_of(waiter)
        if self._entries - self._live > 2 * self._live + 64:
            for queue in list(self._lines):
                line = deque(e for e in self._lines[queue] if self._is_live(*e))
                if line:
                    self._lines[queue] = line
                else:
                    del self._lines[queue]
            self._entries = self._live


def _lines_of(waiter: Waiter) -> int:
    """How many lines (distinct queues) ``waiter`` stands in."""
    return len(set(waiter.queues))
