"""Timers run on ``now`` (a clock that never jumps); the wall clock only stamps jobs and
picks archive buckets (hardening item 7).

Before: the runtime fed ``time.time()`` as the only clock. After an NTP step back of an
hour, a failed write's retry waited 3,600 s with its push unacknowledged; a step forward
expired every lease at once.
"""

from __future__ import annotations

from osqueue_core import BrokerConfig, JobStatus, WriteObject, archive_bucket, decode_state

from .harness import Harness, SimStore

WALL = 1_795_000_000.0
HOUR = 3600.0


def test_wall_clock_steps_neither_expire_leases_nor_delay_them() -> None:
    h = Harness.started(config=BrokerConfig(heartbeat_timeout=10))
    h.wall = WALL
    h.push()
    job = h.claim().result.job_id  # type: ignore[union-attr]
    h.wall += 86_400  # a day forward
    h.advance(9)
    assert h.broker.job(job).status is JobStatus.CLAIMED  # type: ignore[union-attr]
    h.wall -= 2 * 86_400  # two days back
    h.advance(1)
    assert h.broker.job(job).status is JobStatus.READY, "expired on time, by `now`"


def test_a_retry_after_a_failed_write_waits_its_backoff_whatever_the_wall_clock_does() -> None:
    h = Harness.started(config=BrokerConfig(retry_initial=0.5))
    h.wall = WALL
    h.auto = False
    h.push()
    h.deliver(0, "failed")
    h.wall -= HOUR  # NTP steps the clock back an hour
    assert h.broker.next_deadline() == h.now + 0.5
    h.advance(0.5)
    assert h.pending_of(WriteObject, "state.json")
    h.deliver_all()
    assert h.replies[1].ok


def test_stamps_and_archive_buckets_follow_the_wall_clock() -> None:
    h = Harness.started(now=5.0)  # a monotonic clock's small numbers
    h.wall = WALL
    h.push()
    job = h.claim().result.job_id  # type: ignore[union-attr]
    h.wall = WALL + 2 * HOUR
    h.complete(job)
    [key] = h.store.keys("archive/")
    assert key.split("/")[1] == archive_bucket(WALL + 2 * HOUR, "%Y-%m-%dT%H")
    h2 = Harness.started(SimStore(), now=5.0)
    h2.wall = WALL
    h2.push()
    stored = decode_state(h2.store.get("state.json")).jobs[0]  # type: ignore[arg-type]
    assert stored.created_at == WALL


def test_a_now_that_goes_back_is_ignored() -> None:
    h = Harness.started(config=BrokerConfig(heartbeat_timeout=10))
    h.push()
    job = h.claim().result.job_id  # type: ignore[union-attr]
    h.advance(-100)  # a buggy runtime's clock goes back: nothing moves
    assert h.broker.next_deadline() == 1010.0
    assert h.broker.job(job).status is JobStatus.CLAIMED
    h.advance(110)
    assert h.broker.job(job).status is JobStatus.READY
