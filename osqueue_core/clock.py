"""The two times every input carries, as the core's parts see them.

``now`` drives every timer (leases, waits, storage retries, linger, stall detection):
any clock that never jumps, such as ``time.monotonic()``. ``wall`` (UNIX seconds) stamps
jobs (``created_at``, ``claimed_at``, ``finished_at``), picks archive buckets, and
judges the due times a successor must read alike (a job's run-at, a retry's backoff, a
dead letter's retention), so a wall clock stepped by NTP or by hand can move those but
never expires a lease early or stalls a storage retry. A runtime that passes no
``wall`` gets ``wall = now`` (fine when ``now`` is wall-clock time and nothing else is
available).
"""

from __future__ import annotations

import math

from osqueue_core.errors import InvalidArgument

#: The latest wall time accepted (about year 5138): beyond it no UTC bucket exists.
MAX_WALL = 1e11


def check_time(now: object, wall: object) -> None:
    """Refuse times no clock gives: not a number, not finite, or (``wall``) outside
    ``[0, MAX_WALL]``. Checked before an input does anything."""
    for name, value in (("now", now), ("wall", wall)):
        if value is None and name == "wall":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidArgument(f"{name} must be a number of seconds, got {type(value).__name__}")
        if isinstance(value, int) and abs(value) > MAX_WALL:
            raise InvalidArgument(f"{name} must be a number of seconds below {MAX_WALL:g}")
        if not math.isfinite(value):
            raise InvalidArgument(f"{name} must be finite, got {value!r}")
    if wall is not None and not 0 <= wall <= MAX_WALL:  # type: ignore[operator]
        raise InvalidArgument(f"wall must be UNIX seconds between 0 and {MAX_WALL:g}")


class Clock:
    """The latest ``now`` and ``wall`` given to the broker."""

    def __init__(self) -> None:
        self.now = -math.inf
        self.wall = 0.0

    def advance(self, now: float, wall: float | None) -> None:
        # ``now`` should never go back; if a runtime's clock does, nothing un-expires.
        self.now = max(self.now, float(now))
        self.wall = float(now if wall is None else wall)
