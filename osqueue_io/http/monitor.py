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

from osqueue_core import BrokerConfig, BrokerStats, HistogramSnapshot, Phase
from osqueue_io.runtime import BrokerRuntime
from osqueue_io.storage import ObjectStore

#: The counters of :class:`~osqueue_core.BrokerStats` that only grow during a runtime.
COUNTERS = (
    "writes",
    "confirms",
    "resolves",
    "stalls",
    "takeover_conflicts",
    "yields",
    "archive_collisions",
    "renewals",
    "standby_checks",
    "standby_reads",
    "spills",
    "spilled_jobs",
    "spills_abandoned",
    "segment_reads",
    "conflicts",
    "unknown_outcomes",
    "takeovers",
    "fenced",
    "expired_leases",
    "retries",
    "dead_letters",
)


@attrs.frozen
class Counters:
    """Counters summed over every runtime this process ran, and the commit histograms."""

    values: dict[str, int]
    commit_latency: HistogramSnapshot
    commit_operations: HistogramSnapshot


def _added(one: HistogramSnapshot, other: HistogramSnapshot) -> HistogramSnapshot:
    counts = tuple(a + b for a, b in zip(one.counts, other.counts, strict=True))
    return HistogramSnapshot(one.bounds, counts, one.total + other.total)


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
        self._carried: BrokerStats | None = None

    def attach(self, runtime: BrokerRuntime) -> None:
        if self.runtime is not None:
            self.detach(self.runtime)
        self.runtime = runtime

    def detach(self, runtime: BrokerRuntime) -> None:
        """``runtime`` ended: keep its counters (added to the next runtime's)."""
        if self.runtime is not runtime:
            return
        self.runtime = None
        final = runtime.stats()
        carried = self._carried
        if carried is None:
            self._carried = final
            return
        self._carried = attrs.evolve(
            final,
            commit_latency=_added(carried.commit_latency, final.commit_latency),
            commit_operations=_added(carried.commit_operations, final.commit_operations),
            **{name: getattr(carried, name) + getattr(final, name) for name in COUNTERS},
        )

    def stats(self) -> BrokerStats | None:
        """The current runtime's snapshot (None: between runtimes)."""
        return None if self.runtime is None else self.runtime.stats()

    def counters(self, stats: BrokerStats | None = None) -> Counters:
        """The counters of this process: the runtimes that ended, plus ``stats`` (the
        current runtime's snapshot, if any)."""
        parts = [part for part in (self._carried, stats) if part is not None]
        if not parts:
            parts = [BrokerStats(Phase.STOPPED, self.identity, 0, 0, 0, 0, 0, 0)]
        values = {name: sum(getattr(part, name) for part in parts) for name in COUNTERS}
        latency, operations = parts[0].commit_latency, parts[0].commit_operations
        for part in parts[1:]:
            latency = _added(latency, part.commit_latency)
            operations = _added(operations, part.commit_operations)
        return Counters(values, latency, operations)
