"""A claim whose caller left gives its job back without counting an attempt
(hardening item 10), and ``Release`` hands a held job back on purpose.

Before: a claim granted in a batch not yet written, whose caller was cancelled or
disconnected, kept its job until the lease expired and used up an attempt.
"""

from __future__ import annotations

from osqueue_core import (
    BrokerConfig,
    Claim,
    Claimed,
    JobStatus,
    LeaseLost,
    NothingToClaim,
    Released,
    WriteObject,
)

from .harness import Harness


def test_a_claim_cancelled_before_its_batch_is_written_is_undone() -> None:
    h = Harness.started(config=BrokerConfig(heartbeat_timeout=30))
    first = h.push(b"a").result.job_id  # type: ignore[union-attr]
    h.push(b"b")
    h.auto = False
    h.push(b"c")  # a write in flight: the claim below joins the next, unwritten batch
    claim = Claim(h.request_id(), "w1")
    h.submit(claim)
    assert h.broker.job(first).status is JobStatus.CLAIMED  # type: ignore[union-attr]
    h.broker.cancel_claim(claim.request_id, h.now)
    h.flush()
    assert h.replies[claim.request_id].result == NothingToClaim()
    job = h.broker.job(first)
    assert job.status is JobStatus.READY  # type: ignore[union-attr]
    assert job.attempts == 0  # type: ignore[union-attr]
    h.auto = True
    h.flush()
    again = h.claim("w2").result
    assert isinstance(again, Claimed)
    assert (again.job_id, again.attempts) == (first, 1), "its old place, its first attempt"


def test_a_claim_cancelled_while_its_write_is_in_flight_is_handed_back_after_it_lands() -> None:
    h = Harness.started(config=BrokerConfig(heartbeat_timeout=30))
    first = h.push(b"a").result.job_id  # type: ignore[union-attr]
    h.auto = False
    claim = Claim(h.request_id(), "w1")
    h.submit(claim)  # its write goes out at once
    [write] = h.pending_of(WriteObject, "state.json")
    h.broker.cancel_claim(claim.request_id, h.now)
    h.flush()
    assert h.replies[claim.request_id].result == NothingToClaim()
    h.deliver(write)  # the grant lands, claimed by w1 ...
    assert h.broker.job(first).status is JobStatus.READY  # ... and is handed back at once
    h.auto = True
    h.flush()
    again = h.claim("w2").result
    assert isinstance(again, Claimed)
    assert (again.job_id, again.attempts) == (first, 1)
    assert len(h.replies) == len(set(h.replies)), "one reply per request"


def test_cancelling_a_waiting_or_already_answered_claim() -> None:
    h = Harness.started()
    waiting = Claim(h.request_id(), "w1", wait=30)
    h.submit(waiting)
    h.broker.cancel_claim(waiting.request_id, h.now)
    h.flush()
    assert h.replies[waiting.request_id].result == NothingToClaim()
    h.push()
    granted = h.claim("w2")
    before = len(h.replies)
    h.broker.cancel_claim(granted.request_id, h.now)  # type: ignore[union-attr]
    h.flush()
    assert len(h.replies) == before, "an answered claim is not answered again"
    assert h.broker.job(granted.result.job_id).status is JobStatus.CLAIMED  # type: ignore[union-attr]


def test_release_hands_a_job_back_unstarted() -> None:
    h = Harness.started()
    job = h.push(b"a").result.job_id  # type: ignore[union-attr]
    h.push(b"b")
    assert h.claim("w1").result.attempts == 1  # type: ignore[union-attr]
    assert isinstance(h.release(job, "w2").error, LeaseLost), "only by its holder"  # type: ignore[union-attr]
    assert h.release(job, "w1").result == Released(job)  # type: ignore[union-attr]
    again = h.claim("w3").result
    assert (again.job_id, again.attempts) == (job, 1)  # type: ignore[union-attr]
    assert isinstance(h.release(job, "w1").error, LeaseLost)  # type: ignore[union-attr]
