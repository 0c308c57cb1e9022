"""The counters and histograms the broker keeps for monitoring (docs/operations.md,
"Metrics"), and the page of jobs a dashboard lists: counted only once durable, exact,
and bounded."""

from __future__ import annotations

import attrs
import pytest

from osqueue_core import (
    MAX_JOBS_PAGE,
    Broker,
    BrokerConfig,
    BrokerReplaced,
    Claimed,
    InvalidArgument,
    Phase,
    Push,
    Pushed,
    RetryPolicy,
    WriteObject,
)
from osqueue_core.histogram import Histogram, HistogramSnapshot

from .harness import Harness, SimStore

CONFIG = BrokerConfig(
    heartbeat_timeout=10.0,
    retry=RetryPolicy(base=0.0, cap=0.0, max_attempts=2),
    spill_jobs=None,
)


def started(**changes: object) -> Harness:
    return Harness.started(config=attrs.evolve(CONFIG, **changes))


def push_and_claim(h: Harness) -> str:
    pushed = h.push()
    assert pushed is not None
    assert isinstance(pushed.result, Pushed)
    claimed = h.claim()
    assert claimed is not None
    assert isinstance(claimed.result, Claimed)
    return claimed.result.job_id


def test_a_histogram_counts_each_value_into_the_bucket_of_its_upper_bound() -> None:
    histogram = Histogram((1.0, 2.0, 4.0))
    for value in (0.5, 1.0, 1.5, 4.0, 9.0):
        histogram.observe(value)
    snapshot = histogram.snapshot()
    assert snapshot.counts == (2, 1, 1, 1)
    assert snapshot.count == 5
    assert snapshot.total == pytest.approx(16.0)
    assert snapshot.cumulative() == [(1.0, 2), (2.0, 3), (4.0, 4), (float("inf"), 5)]
    assert HistogramSnapshot.empty((1.0, 2.0)).counts == (0, 0, 0)


@pytest.mark.parametrize("bounds", [(), (2.0, 1.0), (1.0, 1.0)])
def test_histogram_bounds_must_increase(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="increasing"):
        Histogram(bounds)


def test_retries_and_dead_letters_count_once_their_write_lands() -> None:
    h = started()
    job = push_and_claim(h)
    h.auto = False
    h.fail(job)  # attempt 1 of 2: retried at once (zero backoff)
    assert h.broker.stats().retries == 0, "counted before the write landed"
    h.deliver_all()
    stats = h.broker.stats()
    assert (stats.retries, stats.dead_letters, stats.expired_leases) == (1, 0, 0)
    h.auto = True
    h.claim()
    h.fail(job)  # attempt 2 of 2: dead
    stats = h.broker.stats()
    assert (stats.retries, stats.dead_letters) == (1, 1)


def test_an_expired_lease_counts_as_one_expiry_and_its_retry() -> None:
    h = started()
    push_and_claim(h)
    h.advance(11.0)
    stats = h.broker.stats()
    assert (stats.expired_leases, stats.retries, stats.dead_letters) == (1, 1, 0)


def test_a_batch_lost_with_its_broker_counts_nowhere() -> None:
    store = SimStore()
    first = Harness.started(store, CONFIG, identity="a")
    job = push_and_claim(first)
    first.auto = False
    first.fail(job, requeue=False)
    Harness.started(store, CONFIG, identity="b")  # takes over while the write waits
    first.deliver_all()  # conflicts, reads back, finds itself replaced
    stats = first.broker.stats()
    assert isinstance(first.broker.failure, BrokerReplaced)
    assert (stats.dead_letters, stats.fenced, stats.conflicts) == (0, 1, 1)


def test_unknown_outcomes_and_conflicts_of_state_writes_are_counted() -> None:
    h = started()
    h.auto = False
    h.push()
    [write] = h.pending_of(WriteObject)
    h.deliver(write, "unknown_landed")
    h.deliver_all()
    h.push()
    [write] = h.pending_of(WriteObject)
    h.deliver(write, "conflict")
    h.deliver_all()
    stats = h.broker.stats()
    assert (stats.unknown_outcomes, stats.conflicts, stats.fenced) == (1, 1, 0)
    assert stats.takeovers == 1


def test_commit_histograms_observe_each_landed_write_of_a_batch() -> None:
    h = started(linger=0.5)
    for _ in range(3):
        h.broker.submit(Push(h.request_id(), b"x"), h.now)
    h.flush()
    h.advance(0.5)  # the linger ends: one write carries all three
    stats = h.broker.stats()
    assert stats.commit_operations.count == 1
    assert stats.commit_operations.total == 3
    assert stats.commit_latency.count == 1
    assert stats.commit_latency.total == pytest.approx(0.0)  # landed the instant it left
    assert stats.state_bytes == len(h.store.get("state.json") or b"")


def test_lease_renewals_are_not_commits_of_a_batch() -> None:
    h = started(owner_lease=3.0)
    before = h.broker.stats()
    h.advance(1.5)
    stats = h.broker.stats()
    assert stats.renewals == before.renewals + 1
    assert stats.commit_operations.count == before.commit_operations.count


def test_the_jobs_page_filters_by_queue_and_status_and_pages_in_push_order() -> None:
    h = started()
    for index in range(5):
        h.submit(Push(h.request_id(), b"x", queue="mail" if index % 2 else "web"))
    h.submit(Push(h.request_id(), b"x", queue="web", delay=60.0))
    job = push_and_claim(h)  # a "default" job... claimed
    wall = h.now
    everything = h.broker.jobs(wall, limit=3)
    assert [j.queue for j in everything.jobs] == ["web", "mail", "web"]
    assert everything.next_after is not None
    rest = h.broker.jobs(wall, after=everything.next_after, limit=10)
    assert len(rest.jobs) == 4
    assert rest.next_after is None
    assert [j.id for j in h.broker.jobs(wall, status="claimed").jobs] == [job]
    delayed = h.broker.jobs(wall, queue="web", status="delayed").jobs
    assert len(delayed) == 1
    assert delayed[0].run_at is not None
    assert len(h.broker.jobs(wall, queue="web", status="ready").jobs) == 3
    assert h.broker.jobs(wall, status="dead").jobs == ()


@pytest.mark.parametrize(
    "arguments",
    [
        {"status": "sleeping"},
        {"queue": "no spaces"},
        {"limit": 0},
        {"limit": MAX_JOBS_PAGE + 1},
        {"after": -1},
    ],
)
def test_the_jobs_page_refuses_filters_out_of_range(arguments: dict[str, object]) -> None:
    h = started()
    with pytest.raises(InvalidArgument):
        h.broker.jobs(h.now, **arguments)  # type: ignore[arg-type]


def test_a_takeover_write_that_conflicts_is_a_takeover_conflict_even_when_stopping() -> None:
    """(Found by the long model run, in the model's check: a broker stopped while it
    takes over is STOPPING when its takeover write goes out; that write is still a
    takeover write, counted in ``takeover_conflicts``, not in ``conflicts``.)"""
    store = SimStore()
    first = Harness.started(store, CONFIG, identity="a")
    second = Harness(
        Broker(CONFIG, identity="b", incarnation="b-1"), store, now=first.now, auto=False
    )
    second.broker.start(second.now)
    second.flush()
    second.broker.stop(second.now)
    for _ in range(20):  # read the state, reserve the epoch: up to its takeover write
        if second.pending_of(WriteObject, "state.json"):
            break
        second.deliver(0)
    [takeover] = second.pending_of(WriteObject, "state.json")
    assert second.broker.phase is Phase.STOPPING
    first.push()  # the owner writes first: the takeover write conflicts
    second.deliver(takeover)
    stats = second.broker.stats()
    assert (stats.takeover_conflicts, stats.conflicts) == (1, 0)
