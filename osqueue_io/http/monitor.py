"""What the HTTP layer looks at: the broker runtime this process runs now, and the
counters of the runtimes it ran before.

A broker process runs one :class:`~osqueue_io.runtime.BrokerRuntime` at a time, but
not always the same one: a standby that was replaced stands by again with a fresh
runtime (docs/high-availability.md). Prometheus counters must never go down within a
process, so when a runtime ends its counters are carried over and added to the next
one's (:meth:`BrokerMonitor.counters`). Gauges (jobs, bytes, the phase) are the current
runtime's alone.

Everything here runs on the broker's event loop, like the runtime itself.
"""

from __future__ import annotations

import attrs

from osqueue_core import STATS_COUNTERS, BrokerConfig, BrokerStats, HistogramSnapshot, Phase
from osqueue_io.runtime import BrokerRuntime
from osqueue_io.storage import ObjectStore


@attrs.frozen
class Counters:
    """Counters summed over every runtime this process ran, and the commit histograms."""

    values: dict[str, int]
    commit_latency: HistogramSnapshot
    commit_operations: HistogramSnapshot

    def plus(self, stats: BrokerStats) -> Counters:
        """These counters with ``stats``'s added."""
        return Counters(
            {name: count + getattr(stats, name) for name, count in self.values.items()},
            _added(self.commit_latency, stats.commit_latency),
            _added(self.commit_operations, stats.commit_operations),
        )


def _added(one: HistogramSnapshot, other: HistogramSnapshot) -> HistogramSnapshot:
    counts = tuple(a + b for a, b in zip(one.counts, other.counts, strict=True))
    return HistogramSnapshot(one.bounds, counts, one.total + other.total)


#: Nothing counted yet.
_ZERO = BrokerStats(Phase.STOPPED, "", 0, 0, 0, 0, 0, 0)
NO_COUNTS = Counters(
    dict.fromkeys(STATS_COUNTERS, 0), _ZERO.commit_latency, _ZERO.commit_operations
)


class BrokerMonitor:
    """The broker as the HTTP layer sees it (see the module docstring).

    ``store`` is the queue's storage (the archive pages read it), ``config`` the
    broker's, ``address`` where clients reach its gRPC service. The server calls
    :meth:`attach` with each runtime it makes, before opening it, and :meth:`detach`
    once it is closed.
    """

    def __init__(
        self, store: ObjectStore, config: BrokerConfig, *, identity: str, address: str | None
    ) -> None:
        self.store = store
        self.config = config
        self.identity = identity
        self.address = address
        self.runtime: BrokerRuntime | None = None
        #: The counters of the runtimes that ended.
        self._carried = NO_COUNTS

    def attach(self, runtime: BrokerRuntime) -> None:
        if self.runtime is not None:
            self.detach(self.runtime)
        self.runtime = runtime

    def detach(self, runtime: BrokerRuntime) -> None:
        """``runtime`` ended: keep its counters (added to the next runtime's)."""
        if self.runtime is runtime:
            self.runtime = None
            self._carried = self._carried.plus(runtime.stats())

    def stats(self) -> BrokerStats | None:
        """The current runtime's snapshot (None: between runtimes)."""
        return None if self.runtime is None else self.runtime.stats()

    def counters(self, stats: BrokerStats | None = None) -> Counters:
        """The counters of this process: the runtimes that ended, plus ``stats`` (the
        current runtime's snapshot, if any)."""
        return self._carried if stats is None else self._carried.plus(stats)
