"""Leases: deadlines, heartbeats, reclaim on tick, and dead-lettering by attempts."""

from __future__ import annotations

from osqueue_core import BrokerConfig, JobStatus, LeaseLost, RetryPolicy, WriteObject, decode_state

from .harness import Harness


def stored_status(h: Harness, job_id: str) -> JobStatus:
    jobs = decode_state(h.store.get("state.json")).jobs  # type: ignore[arg-type]
    return next(j.status for j in jobs if j.id == job_id)


IMMEDIATE = RetryPolicy(base=0, max_attempts=None)


def test_missed_heartbeat_reclaims_on_tick() -> None:
    h = Harness.started(config=BrokerConfig(heartbeat_timeout=10, retry=IMMEDIATE))
    h.push()
    job = h.claim("w1").result.job_id  # type: ignore[union-attr]
    assert h.broker.next_deadline() == h.now + 10
    h.advance(9.999)
    assert stored_status(h, job) is JobStatus.CLAIMED
    h.advance(0.001)
    assert stored_status(h, job) is JobStatus.READY
    assert isinstance(h.heartbeat(job, "w1").error, LeaseLost)
    again = h.claim("w2").result
    assert again.job_id == job  # type: ignore[union-attr]
    assert again.attempts == 2  # type: ignore[union-attr]


def test_heartbeats_keep_a_slow_job() -> None:
    h = Harness.started(config=BrokerConfig(heartbeat_timeout=10))
    h.push()
    job = h.claim("w1").result.job_id  # type: ignore[union-attr]
    for _ in range(10):
        h.advance(6)
        assert h.heartbeat(job, "w1").ok
    assert stored_status(h, job) is JobStatus.CLAIMED


def test_heartbeat_after_the_deadline_is_lost_even_before_a_tick() -> None:
    h = Harness.started(config=BrokerConfig(heartbeat_timeout=10))
    h.push()
    job = h.claim("w1").result.job_id  # type: ignore[union-attr]
    h.now += 10  # no tick: the next input itself expires the lease first
    assert isinstance(h.heartbeat(job, "w1").error, LeaseLost)


def test_reclaimed_job_keeps_its_fifo_place() -> None:
    h = Harness.started(config=BrokerConfig(heartbeat_timeout=10, retry=IMMEDIATE))
    first = h.push(b"1").result.job_id  # type: ignore[union-attr]
    h.push(b"2")
    assert h.claim("w1").result.job_id == first  # type: ignore[union-attr]
    h.advance(10)
    assert h.claim("w2").result.job_id == first  # type: ignore[union-attr]


def test_out_of_attempts_is_dead_lettered() -> None:
    h = Harness.started(
        config=BrokerConfig(heartbeat_timeout=1, retry=RetryPolicy(base=0, max_attempts=2))
    )
    h.push()
    for _ in range(2):
        assert h.claim().ok
        h.advance(1)
    assert h.claim().result.__class__.__name__ == "NothingToClaim"  # type: ignore[union-attr]
    # A dead letter: kept in the state (listable, redrivable), not archived yet.
    assert h.store.keys("archive/") == []
    [dead] = decode_state(h.store.get("state.json")).jobs  # type: ignore[arg-type]
    assert dead.status is JobStatus.DEAD
    assert dead.archive_key is None
    assert dead.attempts == 2
    assert dead.last_error is not None
    assert "lease expired" in dead.last_error


def test_an_expired_lease_is_retried_after_the_backoff() -> None:
    policy = RetryPolicy(base=4, cap=100, max_attempts=None)
    h = Harness.started(config=BrokerConfig(heartbeat_timeout=10, retry=policy))
    job = h.push().result.job_id  # type: ignore[union-attr]
    assert h.claim("w1").ok
    h.advance(10)
    delay = policy.delay(job, 1)
    assert 2 <= delay < 4
    assert h.broker.next_deadline() == h.now + delay
    assert h.claim("w2").result.__class__.__name__ == "NothingToClaim"  # type: ignore[union-attr]
    h.advance(delay)
    assert h.claim("w2").result.job_id == job  # type: ignore[union-attr]


def test_idle_broker_with_no_leases_has_no_deadline_and_writes_nothing() -> None:
    h = Harness.started()
    writes = h.writes
    assert h.broker.next_deadline() is None
    h.advance(3600)
    assert h.writes == writes


def test_late_complete_or_fail_after_expiry_dead_letter_is_refused() -> None:
    from osqueue_core import Fail

    h = Harness.started(
        config=BrokerConfig(heartbeat_timeout=1, retry=RetryPolicy(base=0, max_attempts=1))
    )
    h.push()
    job = h.claim("w1").result.job_id  # type: ignore[union-attr]
    h.auto = False
    h.advance(1)  # expired on its only attempt: dead-lettered, still in the state
    h.deliver(h.pending_of(WriteObject, "state.json")[0])
    from osqueue_core import Complete, ReadVersion

    for command in (Complete(h.request_id(), job, "w1"), Fail(h.request_id(), job, "w1")):
        h.submit(command)
        # Held until a read confirms this broker still owns the state (the archive
        # write stays pending, so the dead job is still there for the second command).
        h.deliver(h.pending_of(ReadVersion)[0])
        assert isinstance(h.replies[command.request_id].error, LeaseLost)
