"""The two times every input carries, as the core's parts see them.

``now`` drives every timer (leases, waits, retries, linger, stall detection): any clock
that never jumps, such as ``time.monotonic()``. ``wall`` (UNIX seconds) only stamps jobs
(``created_at``, ``claimed_at``, ``finished_at``) and picks archive buckets, so a wall
clock stepped by NTP or by hand can move stamps but never expires a lease early or
stalls a retry. A runtime that passes no ``wall`` gets ``wall = now`` (fine when ``now``
is wall-clock time and nothing else is available).
"""

from __future__ import annotations

import math


class Clock:
    """The latest ``now`` and ``wall`` given to the broker."""

    def __init__(self) -> None:
        self.now = -math.inf
        self.wall = 0.0

    def advance(self, now: float, wall: float | None) -> None:
        # ``now`` should never go back; if a runtime's clock does, nothing un-expires.
        self.now = max(self.now, float(now))
        self.wall = float(now if wall is None else wall)
