"""The broker's Prometheus metrics: ``GET /metrics`` in the text exposition format.

Nothing is counted on the request path for them. At each scrape the collector reads one
:class:`~osqueue_core.BrokerStats` snapshot (the core keeps its counters and commit
histograms as it goes: :mod:`osqueue_core.histogram`, :mod:`osqueue_core.tally`) and
the counters this process carried over from earlier runtimes
(:class:`~osqueue_io.http.monitor.Monitor`), and turns them into metric
families. Each server gets its own :class:`~prometheus_client.CollectorRegistry`
(:func:`broker_registry`), never the process-global one, so two brokers in one process
(tests, an embedding program) never mix.

Every metric is documented in docs/operations.md, "Metrics", with example alerts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from osqueue_core import BrokerStats, HistogramSnapshot, Phase
from osqueue_io.http.monitor import Monitor

#: The content type of the text exposition format served at ``/metrics``.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: (metric name without ``osqueue_`` and ``_total``, BrokerStats counter, help text)
_COUNTERS = (
    (
        "state_writes",
        "writes",
        "State object writes issued (batches, lease renewals, the release).",
    ),
    (
        "state_write_conflicts",
        "conflicts",
        "State writes refused because the object had changed (resolved by reading it back).",
    ),
    (
        "state_write_unknown_outcomes",
        "unknown_outcomes",
        "State writes whose outcome storage could not tell (resolved by reading the state back).",
    ),
    (
        "state_write_resolves",
        "resolves",
        "State reads made to resolve a conflicted or unknown write.",
    ),
    (
        "ownership_checks",
        "confirms",
        "Version checks (HEADs) made to confirm ownership when there was nothing to write.",
    ),
    ("lease_renewals", "renewals", "Empty writes that renewed the owner lease of an idle broker."),
    (
        "storage_stalls",
        "stalls",
        "Times storage failed for the stall timeout (requests were answered StorageUnavailable).",
    ),
    ("takeovers", "takeovers", "Takeovers of the state object this process made."),
    ("takeover_conflicts", "takeover_conflicts", "Takeover writes lost to another writer."),
    ("takeover_yields", "yields", "Pauses this owner granted to brokers asking to take over."),
    (
        "fenced",
        "fenced",
        "Times this broker found it had been replaced by another (fenced: it never wrote again).",
    ),
    ("standby_checks", "standby_checks", "Version checks a standby made while watching the owner."),
    ("expired_leases", "expired_leases", "Claimed jobs whose worker sent no heartbeat in time."),
    ("retries", "retries", "Failed attempts (fails and expired leases) scheduled to run again."),
    ("dead_letters", "dead_letters", "Jobs that became dead letters."),
    (
        "archive_collisions",
        "archive_collisions",
        "Archive keys found holding other jobs (archived under fresh keys).",
    ),
    ("segment_spills", "spills", "Segments spilled and attached."),
    ("segment_spilled_jobs", "spilled_jobs", "Jobs moved into segments."),
    ("segment_reads", "segment_reads", "Segment reads issued."),
)

#: (metric name without ``osqueue_``, BrokerStats field, help text)
_GAUGES = (
    ("state_bytes", "state_bytes", "Size of the last state object written."),
    ("state_revision", "revision", "Revision of the last state object written or read."),
    ("epoch", "epoch", "This broker's epoch (0 until it owns the queue)."),
    (
        "archive_backlog_jobs",
        "finished_pending_archive",
        "Finished jobs waiting in the state for their archive object.",
    ),
    ("waiting_claims", "waiting_claims", "Claims waiting for a job (long polls)."),
    ("queued_requests", "queued_commands", "Requests waiting for room in a batch (backpressure)."),
    ("segments", "segments", "Segment objects the state references."),
    ("segment_jobs", "untouched", "Ready jobs waiting in segments (counted in osqueue_jobs too)."),
    ("segments_loaded", "segments_loaded", "Segments held in memory."),
    ("segment_cache_bytes", "segment_cache_bytes", "Stored bytes of the segments held in memory."),
)


def _histogram(name: str, doc: str, snapshot: HistogramSnapshot) -> HistogramMetricFamily:
    buckets = [
        ("+Inf" if bound == float("inf") else repr(float(bound)), float(count))
        for bound, count in snapshot.cumulative()
    ]
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=snapshot.total)


class BrokerCollector(Collector):
    """Reads ``monitor`` at every scrape (see the module docstring).

    A group member's monitor gives one snapshot per queue runtime: counters are summed
    over them, ``osqueue_broker_phase`` counts them by phase, and every other gauge
    comes from each queue it serves, labelled ``queue`` (docs/operations.md,
    "A group member's metrics")."""

    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor

    def collect(self) -> Iterator[Metric]:
        monitor = self._monitor
        current = monitor.runtime_stats()
        counters = monitor.counters(current)
        for name, field, doc in _COUNTERS:
            yield CounterMetricFamily(f"osqueue_{name}", doc, value=counters.values[field])
        yield _histogram(
            "osqueue_commit_latency_seconds",
            "Seconds from a batch's state write being issued to it landing.",
            counters.commit_latency,
        )
        yield _histogram(
            "osqueue_commit_operations",
            "Requests acknowledged by each landed state write (group commit).",
            counters.commit_operations,
        )
        phase = GaugeMetricFamily(
            "osqueue_broker_phase",
            "1 for the phase the broker is in (a group member: its queue brokers in each).",
            labels=["phase"],
        )
        for each in Phase:
            phase.add_metric([each.value], float(sum(s.phase is each for s in current)))
        yield phase
        served = monitor.queues_served()
        if served is not None:
            yield GaugeMetricFamily(
                "osqueue_group_queues_served", "Queues this group member serves.", value=served
            )
        gauged = monitor.gauged()
        if not gauged:
            return
        yield from _runtime_gauges(gauged)
        jobs = GaugeMetricFamily(
            "osqueue_jobs",
            "Jobs in the queue by queue and status (ready: due now; delayed: waiting for "
            "a run-at or a retry's backoff; dead: dead letters).",
            labels=["queue", "status"],
        )
        oldest = GaugeMetricFamily(
            "osqueue_oldest_ready_age_seconds",
            "How long the oldest due job of each queue has waited (0: none is due).",
            labels=["queue"],
        )
        wall = time.time()
        for _, stats in gauged:
            for queue in stats.queues:
                for status in ("ready", "delayed", "claimed", "dead"):
                    jobs.add_metric([queue.queue, status], getattr(queue, status))
                since = queue.oldest_ready_since
                oldest.add_metric([queue.queue], 0.0 if since is None else max(0.0, wall - since))
        yield jobs
        yield oldest


def _runtime_gauges(gauged: list[tuple[str | None, BrokerStats]]) -> Iterator[Metric]:
    """The gauges of each runtime: unlabelled for a single broker's, labelled with the
    queue for a group member's."""
    labels = [] if gauged[0][0] is None else ["queue"]
    rows = [([] if queue is None else [queue], stats) for queue, stats in gauged]
    for name, field, doc in _GAUGES:
        family = GaugeMetricFamily(f"osqueue_{name}", doc, labels=labels)
        for values, stats in rows:
            family.add_metric(values, getattr(stats, field))
        yield family
    stalled = GaugeMetricFamily(
        "osqueue_storage_stalled",
        "1 while storage is stalled (requests are answered StorageUnavailable).",
        labels=labels,
    )
    for values, stats in rows:
        stalled.add_metric(values, 1.0 if stats.stalled else 0.0)
    yield stalled


def broker_registry(monitor: Monitor) -> CollectorRegistry:
    """A registry of its own holding the broker's metrics (and nothing else)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(monitor))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition of ``registry``."""
    return generate_latest(registry)
