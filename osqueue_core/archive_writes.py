"""Bookkeeping of archive writes: which are in flight, which wait to be retried."""

from __future__ import annotations

from collections.abc import Callable


class ArchiveWrites:
    """Archive objects being written (by ``op_id``) and failed ones awaiting a retry.

    At most one write per key is in flight; a failed key is retried after a backoff
    that grows with its consecutive failures.
    """

    def __init__(self) -> None:
        self._in_flight: dict[int, str] = {}
        self._keys_in_flight: set[str] = set()
        self._retry_at: dict[str, float] = {}
        self._failures: dict[str, int] = {}

    def owns(self, op_id: int) -> bool:
        return op_id in self._in_flight

    def in_flight(self, key: str) -> bool:
        return key in self._keys_in_flight

    def started(self, op_id: int, key: str) -> None:
        self._in_flight[op_id] = key
        self._keys_in_flight.add(key)
        self._retry_at.pop(key, None)

    def finished(self, op_id: int) -> str:
        """The key the answered write was for; it is no longer in flight."""
        key = self._in_flight.pop(op_id)
        self._keys_in_flight.discard(key)
        return key

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

    def failed(self, key: str, now: float, backoff: Callable[[int], float]) -> None:
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        self._retry_at[key] = now + backoff(failures)

    def due(self, now: float) -> list[str]:
        """Keys whose retry time has come."""
        return [key for key, at in self._retry_at.items() if at <= now]

    def next_retry(self) -> float | None:
        return min(self._retry_at.values(), default=None)

    def drop_retries(self) -> None:
        self._retry_at.clear()
