"""Gather after release: when a dirty batch that is not full goes out.

Group commit alone fills only half of each write under a closed loop: the next write
leaves the moment the previous one lands, so the callers that write just released come
back one write later, every time. A batch therefore waits, after a write has landed,
until as many requests have arrived as that write released (the callers it freed have
had their chance to come back), or until a share of the measured write latency has
passed, whichever is first. It adds nothing to an idle queue: a batch opened when no
write landed recently, or once the wait is over, goes out at once; and a full batch
never waits.
"""

from __future__ import annotations

import math

import attrs

#: Weight of the newest sample in the moving average of write latency.
_SMOOTHING = 0.2


@attrs.define
class Gather:
    """How long the open batch waits for the callers the last write released.

    ``fraction`` of the smoothed write latency, at most ``cap`` seconds (0 turns it off).
    Times are on the broker's ``now`` clock.
    """

    fraction: float
    cap: float
    #: Smoothed seconds from issuing a state write to learning that it landed.
    latency: float | None = None
    #: Requests the last landed write released, and how many the open batch held then.
    expected: int = 0
    base: int = 0
    until: float = -math.inf

    def landed(self, issued_at: float, now: float, released: int, held: int) -> None:
        """A write issued at ``issued_at`` landed at ``now`` and released ``released``
        replies; the open batch holds ``held`` replies already (they did not come back:
        they arrived while the write was in flight)."""
        sample = max(0.0, now - issued_at)
        if self.latency is None:
            self.latency = sample
        else:
            self.latency += _SMOOTHING * (sample - self.latency)
        self.expected = released
        self.base = held
        self.until = now + min(self.cap, self.fraction * self.latency)

    def waiting_for(self, held: int) -> bool:
        """Some of the callers the last write released have not come back yet."""
        return held - self.base < self.expected

    def holds(self, now: float, held: int) -> bool:
        """The open batch, holding ``held`` replies, should wait a little longer."""
        return now < self.until and self.waiting_for(held)

    def deadline(self, held: int) -> float:
        """When the wait ends for certain (``-inf`` if nothing is awaited)."""
        return self.until if self.waiting_for(held) else -math.inf
