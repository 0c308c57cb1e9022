"""When a failed job runs again: exponential backoff with deterministic jitter.

The delay before attempt ``n + 1``, after ``n`` attempts failed, is::

    raw   = min(cap, base * 2 ** (n - 1))
    delay = raw * (0.5 + 0.5 * h(job_id, n))      # h in [0, 1)

``h`` is a hash of the job id and the attempt number (BLAKE2b), not a random draw: the
core holds no entropy, a replayed input gives the same schedule, and jobs that failed
together still spread out. docs/lifecycle.md has an example schedule.
"""

from __future__ import annotations

import hashlib
import math

import attrs


def _non_negative(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{attribute.name} must be a number of seconds")
    if not (0 <= value <= MAX_SECONDS and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be finite, not negative, at most a year")


#: The longest base or cap a policy may have (a year).
MAX_SECONDS = 366 * 86400.0


@attrs.frozen
class RetryPolicy:
    """How a queue retries failed jobs. ``base`` 0 retries at once."""

    #: The delay after the first failed attempt (before jitter), in seconds.
    base: float = attrs.field(default=1.0, validator=_non_negative)
    #: The longest delay (before jitter), in seconds.
    cap: float = attrs.field(default=300.0, validator=_non_negative)
    #: Claims a job gets before it is dead (None: unlimited). A lease that expires
    #: counts as a claim, so a job that kills its workers ends dead too.
    max_attempts: int | None = 5

    def __attrs_post_init__(self) -> None:
        if self.cap < self.base:
            raise ValueError("a retry policy's cap must be at least its base")
        if self.max_attempts is not None and not 1 <= self.max_attempts <= MAX_ATTEMPTS:
            raise ValueError(f"max_attempts must be between 1 and {MAX_ATTEMPTS} (or None)")

    def delay(self, job_id: str, attempts: int) -> float:
        """Seconds before a job that failed its ``attempts``-th attempt runs again."""
        if self.base == 0:
            return 0.0
        # 2 ** 1100 would overflow a float: past 2 ** 64 the cap has long applied.
        raw = min(self.cap, self.base * 2.0 ** min(max(0, attempts - 1), 64))
        return raw * (0.5 + 0.5 * jitter(job_id, attempts))


#: The most attempts a job or policy may allow.
MAX_ATTEMPTS = 10_000


def jitter(job_id: str, attempts: int) -> float:
    """A number in [0, 1) fixed by (job id, attempt): the jitter without randomness."""
    digest = hashlib.blake2b(f"{attempts}:{job_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
