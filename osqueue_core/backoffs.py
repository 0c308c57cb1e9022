"""Operations that failed, per key, each waiting out its own backoff.

Archive writes, segment reads and segment deletes run beside the state operation, one
per key; a key whose operation failed is tried again after ``backoff(config, n)`` for
its n-th failure in a row. This keeps the count and the due time of each key.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from osqueue_core.clock import Clock
from osqueue_core.config import BrokerConfig, backoff


class KeyBackoffs:
    """Failures in a row, and when to try again, per key."""

    def __init__(self, config: BrokerConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._retry_at: dict[str, float] = {}
        self._failures: dict[str, int] = {}

    def __len__(self) -> int:
        """How many keys wait out a backoff."""
        return len(self._retry_at)

    def failed(self, key: str) -> None:
        """``key``'s operation failed once more: wait longer before the next try."""
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        self._retry_at[key] = self._clock.now + backoff(self._config, failures)

    def succeeded(self, key: str) -> None:
        """``key`` is done with (or nobody needs it any more): forget it."""
        self._retry_at.pop(key, None)
        self._failures.pop(key, None)

    def trying(self, key: str) -> None:
        """``key`` is tried again now (its count of failures stays)."""
        self._retry_at.pop(key, None)

    def failures(self, key: str) -> int:
        """How many times in a row ``key``'s operation has failed."""
        return self._failures.get(key, 0)

    def waiting(self, key: str) -> bool:
        """Whether ``key`` still waits out its backoff."""
        return self._retry_at.get(key, -math.inf) > self._clock.now

    def due(self) -> list[str]:
        """The keys whose backoff has passed."""
        now = self._clock.now
        return [key for key, at in self._retry_at.items() if at <= now]

    def keep_only(self, keys: Iterable[str]) -> None:
        """Forget every key not in ``keys``."""
        kept = set(keys)
        for key in [key for key in self._retry_at if key not in kept]:
            self.succeeded(key)

    def next_deadline(self) -> float | None:
        return min(self._retry_at.values(), default=None)

    def clear(self) -> None:
        """No more tries (stopped or failed)."""
        self._retry_at.clear()
