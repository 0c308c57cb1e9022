"""Fixed-bucket histograms of what each landed state write carried and cost.

The broker observes every state write when it lands (not per request): one bisect and
two additions per write. Monitoring reads a :class:`HistogramSnapshot` from
:meth:`~osqueue_core.Broker.stats` and exports it as it is (Prometheus histograms have
the same shape: cumulative counts per upper bound, a sum and a count), so nothing is
lost between two scrapes however many writes land in between.
"""

from __future__ import annotations

import bisect

import attrs

#: Seconds from a state write's first issue to its landing (resolves and re-sends
#: included): from a fast local disk (~1 ms) to a store that is struggling.
COMMIT_LATENCY_BOUNDS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: Requests a landed write acknowledged: one (no group commit) to a full batch.
COMMIT_OPERATIONS_BOUNDS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000)


@attrs.frozen
class HistogramSnapshot:
    """A histogram at one moment: ``counts[i]`` observations were at most
    ``bounds[i]`` and above the bound before it; ``counts[-1]`` (one more than the
    bounds) were above the last bound. ``total`` is the sum of every observation."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    total: float = 0.0

    @classmethod
    def empty(cls, bounds: tuple[float, ...]) -> HistogramSnapshot:
        return cls(bounds, (0,) * (len(bounds) + 1))

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations at most that)`` for every bound and for
        ``inf`` (what a Prometheus histogram's ``le`` buckets hold)."""
        running = 0
        out: list[tuple[float, int]] = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


class Histogram:
    """Counts observations into the buckets ``bounds`` (increasing) name."""

    __slots__ = ("_bounds", "_counts", "_total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        if not bounds or list(bounds) != sorted(set(bounds)):
            raise ValueError("histogram bounds must be distinct and increasing")
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (``le``).
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._total += value

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(self._bounds, tuple(self._counts), self._total)
