"""Attack: inputs a runtime can pass that make something other than an OsqueueError
escape a public method (docs/architecture.md: "nothing but OsqueueError is raised for
bad input"), some of them after the head state was half changed."""

from __future__ import annotations

import contextlib

import pytest

from osqueue_core import (
    Broker,
    Claim,
    Complete,
    JobStatus,
    OsqueueError,
    Push,
    Reply,
    RetryPolicy,
)

from .harness import Harness


def test_an_unhashable_request_id_is_refused_with_a_typed_error() -> None:
    h = Harness.started()
    job_id = h.push(b"a").result.job_id  # type: ignore[union-attr]
    broker: Broker = h.broker
    try:
        broker.submit(Claim([1], "w1"), h.now)  # type: ignore[arg-type]
    except OsqueueError:
        pass
    except Exception as exc:
        job = broker.job(job_id)
        pytest.fail(
            f"{type(exc).__name__} escaped submit(); the job was left "
            f"{job.status.value} by {job.claimed_by!r} with no grant and no reply"  # type: ignore[union-attr]
        )


def test_cancel_claim_with_an_unhashable_id_raises_a_typed_error() -> None:
    h = Harness.started()
    h.claim("w1", wait=30)  # a claim waits: the waiting dict is not empty
    with pytest.raises(OsqueueError):
        h.broker.cancel_claim({"not": "hashable"}, h.now)  # type: ignore[arg-type]


@pytest.mark.parametrize("wall", [float("nan"), float("inf"), 1e20])
def test_an_impossible_wall_clock_is_refused_with_a_typed_error(wall: float) -> None:
    h = Harness.started()
    h.push(b"a")
    job_id = h.claim("w1").result.job_id  # type: ignore[union-attr]
    try:
        h.broker.submit(Complete(h.request_id(), job_id, "w1"), h.now, wall)
    except OsqueueError:
        return
    except Exception as exc:
        pytest.fail(f"{type(exc).__name__}: {exc} escaped submit(wall={wall})")
    effects = h.broker.take_effects()
    assert any(isinstance(e, Reply) for e in effects) or h.broker.job(job_id).status is (  # type: ignore[union-attr]
        JobStatus.COMPLETED
    )


def test_a_non_number_now_is_refused_with_a_typed_error() -> None:
    h = Harness.started()
    with pytest.raises(OsqueueError):
        h.broker.submit(Push(h.request_id(), b"x"), "soon")  # type: ignore[arg-type]


@pytest.mark.parametrize("wall", [float("nan"), float("inf")])
def test_a_non_finite_wall_never_reaches_the_stored_state(wall: float) -> None:
    """orjson writes NaN and infinity as null: a push accepted with such a ``wall`` makes
    a state object whose ``created_at`` is null, which no broker can take over."""
    h = Harness.started()
    try:
        h.broker.submit(Push(h.request_id(), b"x"), h.now, wall)
    except OsqueueError:
        return
    h.flush()
    successor = Harness.started(h.store, identity="successor")
    assert successor.broker.failure is None, successor.broker.failure


def test_a_bad_wall_during_lease_expiry_does_not_strand_the_job() -> None:
    """Expiry removes the lease before dead-lettering the job; when picking the archive
    bucket raises, the job stays CLAIMED with no lease: it never expires again."""
    from osqueue_core import BrokerConfig

    h = Harness.started(
        config=BrokerConfig(heartbeat_timeout=10, retry=RetryPolicy(base=0, max_attempts=1))
    )
    h.push(b"a")
    job_id = h.claim("w1").result.job_id  # type: ignore[union-attr]
    h.now += 10
    with contextlib.suppress(Exception):
        h.broker.tick(h.now, float("nan"))
    h.advance(100)  # sane inputs again, long after the deadline
    job = h.broker.job(job_id)
    assert job is None or job.status is not JobStatus.CLAIMED, (
        f"{job_id} is still claimed by {job.claimed_by!r}, with no lease: "
        f"next_deadline={h.broker.next_deadline()}"
    )
