"""What the HTTP layer looks at: the broker runtime this process runs now, and the
counters of the runtimes it ran before.

A broker process runs one :class:`~osqueue_io.runtime.BrokerRuntime` at a time, but
not always the same one: a standby that was replaced stands by again with a fresh
runtime (docs/high-availability.md). Prometheus counters must never go down within a
process, so when a runtime ends its counters are carried over and added to the next
one's (:meth:`BrokerMonitor.counters`). Gauges (jobs, bytes, the phase) are the current
runtime's alone.

A group member runs one runtime per queue of its group; its view
(:class:`~osqueue_io.http.group_monitor.GroupMonitor`) holds one :class:`BrokerMonitor`
per queue and answers the same questions (:class:`Monitor`), so the metrics and the
dashboard serve either.

Everything here runs on the broker's event loop, like the runtime itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs

from osqueue_core import STATS_COUNTERS, BrokerConfig, BrokerStats, HistogramSnapshot, Phase
from osqueue_io.http.params import BadRequest
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

    def add(self, other: Counters) -> Counters:
        """These counters and ``other``'s, summed."""
        return Counters(
            {name: count + other.values[name] for name, count in self.values.items()},
            _added(self.commit_latency, other.commit_latency),
            _added(self.commit_operations, other.commit_operations),
        )


def _added(one: HistogramSnapshot, other: HistogramSnapshot) -> HistogramSnapshot:
    counts = tuple(a + b for a, b in zip(one.counts, other.counts, strict=True))
    return HistogramSnapshot(one.bounds, counts, one.total + other.total)


#: Nothing counted yet.
_ZERO = BrokerStats(Phase.STOPPED, "", 0, 0, 0, 0, 0, 0)
NO_COUNTS = Counters(
    dict.fromkeys(STATS_COUNTERS, 0), _ZERO.commit_latency, _ZERO.commit_operations
)


class Monitor(Protocol):
    """What the metrics and the dashboard read: a single broker (:class:`BrokerMonitor`)
    or a group member (:class:`~osqueue_io.http.group_monitor.GroupMonitor`)."""

    store: ObjectStore
    config: BrokerConfig
    identity: str
    address: str | None

    def stats(self) -> BrokerStats | None:
        """What the pages show: the queues served here (None: none now)."""

    def runtime_stats(self) -> list[BrokerStats]:
        """A snapshot of every runtime this process runs now (standbys too)."""

    def gauged(self) -> list[tuple[str | None, BrokerStats]]:
        """The snapshots whose gauges are exported, each with the ``queue`` label it
        gets (None: a single broker's, unlabelled)."""

    def counters(self, current: Sequence[BrokerStats]) -> Counters:
        """The process's counters: runtimes that ended, plus ``current``'s."""

    def queues_served(self) -> int | None:
        """Queues this group member serves now (None: not a group member)."""

    def home_queue(self) -> str | None:
        """The queue the jobs and dead-letter pages show when none is named (None:
        every queue of the runtime)."""

    async def runtime_for(self, queue: str | None) -> BrokerRuntime:
        """The runtime serving ``queue`` (None: the home queue's); BadRequest saying
        why there is none."""


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

    def runtime_stats(self) -> list[BrokerStats]:
        stats = self.stats()
        return [] if stats is None else [stats]

    def gauged(self) -> list[tuple[str | None, BrokerStats]]:
        return [(None, stats) for stats in self.runtime_stats()]

    def counters(self, current: Sequence[BrokerStats] = ()) -> Counters:
        """The counters of this process: the runtimes that ended, plus ``current`` (the
        current runtime's snapshot, if any)."""
        counters = self._carried
        for stats in current:
            counters = counters.plus(stats)
        return counters

    def queues_served(self) -> int | None:
        return None

    def home_queue(self) -> str | None:
        return None

    async def runtime_for(self, queue: str | None) -> BrokerRuntime:
        """The runtime (one broker serves every queue of its state)."""
        if self.runtime is None:
            raise BadRequest("the broker is not running (starting, or between runs)", 503)
        return self.runtime
