"""What the model test checks of each broker's monitoring counters (``BrokerStats``,
exported as Prometheus metrics: docs/operations.md, "Metrics").

The model delivers every storage result itself, so it knows exactly how many of a
broker's state writes (after its takeover) were answered with a conflict or an
unknown outcome; it knows which acknowledged fails ended an attempt the broker held;
and it sees every broker's failure. Checked after every step, for every broker:

* no counter ever goes down (Prometheus reads a drop as a restart);
* ``conflicts`` and ``unknown_outcomes`` are exactly the results the model delivered
  to the broker's state writes while it was running;
* ``takeovers`` is 1 once its takeover landed (else 0); ``fenced`` is 1 exactly when it
  failed with ``BrokerReplaced``;
* ``retries + dead_letters`` is at least the attempts it acknowledged as failed (the
  acknowledgement is released once the write carrying the change landed: counted);
* each commit histogram has one observation per landed write of a batch (the two agree)
  and no more than the writes it issued.
"""

from __future__ import annotations

import attrs

from osqueue_core import (
    STATS_COUNTERS,
    Broker,
    BrokerReplaced,
    BrokerStats,
    Effect,
    Fail,
    Failed,
    JobStatus,
    Phase,
    Reply,
    StorageFailed,
    StorageResult,
    WriteConflicted,
    WriteObject,
)

#: Phases in which a broker no longer listens to storage results.
_GONE = (Phase.STOPPED, Phase.FAILED)


@attrs.define
class Monitored:
    """What the model knows one broker's counters must show."""

    #: Its state writes issued while serving, by identity: ``id(effect)`` -> the effect,
    #: kept alive here so that no later effect can be given the same id (a set of bare
    #: ids once took an archive write for a freed state write, where memory allowed).
    batch_writes: dict[int, Effect] = attrs.Factory(dict)
    conflicts: int = 0
    unknown_outcomes: int = 0
    #: Fails sent to it for a job its head state showed claimed by that worker: request
    #: id -> (job id, attempts then).
    fails_on_held: dict[int, tuple[str, int]] = attrs.Factory(dict)
    #: (job id, attempt) of every such fail it acknowledged as a retry or a death.
    failed_attempts: set[tuple[str, int]] = attrs.Factory(set)
    last: BrokerStats | None = None


@attrs.define
class MonitoringCheck:
    """The model's side of the checks in the module docstring, per broker."""

    state_key: str
    brokers: dict[str, Monitored] = attrs.Factory(dict)

    def of(self, broker: Broker) -> Monitored:
        return self.brokers.setdefault(broker.incarnation, Monitored())

    def submitted(self, broker: Broker, rid: int, command: object) -> None:
        """Before ``command`` reaches ``broker``: note a fail of a job it holds."""
        if isinstance(command, Fail):
            job = broker.job(command.job_id)
            if (
                job is not None
                and job.status is JobStatus.CLAIMED
                and job.claimed_by == command.worker_id
            ):
                self.of(broker).fails_on_held[rid] = (job.id, job.attempts)

    def emitted(self, broker: Broker, effect: Effect) -> None:
        """``broker`` emitted ``effect`` (a reply, or a storage effect to deliver)."""
        seen = self.of(broker)
        if isinstance(effect, Reply):
            held = seen.fails_on_held.pop(effect.request_id, None)
            result = effect.result
            if held is not None and isinstance(result, Failed) and not result.cancelled:
                seen.failed_attempts.add(held)
        elif (
            isinstance(effect, WriteObject)
            and effect.key == self.state_key
            and broker.owner is not None  # its takeover landed: not a takeover write
        ):
            seen.batch_writes[id(effect)] = effect

    def delivered(self, broker: Broker, effect: Effect, result: StorageResult) -> None:
        """``result`` of ``effect`` is about to reach ``broker``."""
        seen = self.of(broker)
        if id(effect) not in seen.batch_writes or broker.phase in _GONE:
            return
        if isinstance(result, WriteConflicted):
            seen.conflicts += 1
        elif isinstance(result, StorageFailed) and result.outcome_unknown:
            seen.unknown_outcomes += 1

    def check(self, broker: Broker) -> None:
        seen = self.of(broker)
        stats = broker.stats()
        name = f"broker {broker.identity}"
        if seen.last is not None:
            for counter in STATS_COUNTERS:
                before, now = getattr(seen.last, counter), getattr(stats, counter)
                assert now >= before, f"{name}: counter {counter} went down ({before} -> {now})"
        seen.last = stats
        exact = broker.phase is not Phase.FAILED
        for counter in ("conflicts", "unknown_outcomes"):
            counted, delivered = getattr(stats, counter), getattr(seen, counter)
            assert counted == delivered if exact else counted <= delivered, (
                f"{name} counts {counted} {counter}; the model delivered {delivered}"
            )
        assert stats.takeovers == (0 if broker.owner is None else 1), (
            f"{name} counts {stats.takeovers} takeovers (owner: {broker.owner})"
        )
        replaced = isinstance(broker.failure, BrokerReplaced)
        assert stats.fenced == int(replaced), (
            f"{name} counts {stats.fenced} fencings; its failure: {broker.failure!r}"
        )
        ended = stats.retries + stats.dead_letters
        assert ended >= len(seen.failed_attempts), (
            f"{name} counts {stats.retries} retries and {stats.dead_letters} dead letters, "
            f"but acknowledged {len(seen.failed_attempts)} failed attempts"
        )
        latency, operations = stats.commit_latency, stats.commit_operations
        assert latency.count == operations.count <= stats.writes - stats.renewals, (
            f"{name}: {latency.count} latencies, {operations.count} batch sizes observed "
            f"for {stats.writes} writes ({stats.renewals} renewals)"
        )
        assert min(latency.counts) >= 0
        assert latency.total >= 0
