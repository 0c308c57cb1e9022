"""Attack: a stall takes back a claim granted in the open batch; taking it back serves a
waiting claim in that same batch, and the stall then wipes the batch's replies, so the
waiting claim is never answered (and its grant is later committed with no reply)."""

from __future__ import annotations

from osqueue_core import BrokerConfig, Claim, JobStatus

from .harness import Harness

CONFIG = BrokerConfig(stall_timeout=5, retry_initial=1, retry_max=1, heartbeat_timeout=60)


def test_a_waiting_claim_served_by_a_stall_take_back_is_answered() -> None:
    h = Harness.started(config=CONFIG)
    h.push(b"a")
    h.push(b"b")
    h.auto = False
    first = Claim(h.request_id(), "w0")
    h.submit(first)  # grants a; its write goes out and hangs
    second = Claim(h.request_id(), "w1")
    h.submit(second)  # grants b in the open, unwritten batch
    waiting = Claim(h.request_id(), "w2", wait=30)
    h.submit(waiting)  # nothing ready: waits
    assert h.broker.stats().waiting_claims == 1
    h.advance(5)  # the write has hung for stall_timeout: stalled
    assert h.broker.stats().stalled
    assert h.replies[first.request_id].error is not None
    assert h.replies[second.request_id].error is not None
    # The waiting claim must get an answer now (StorageUnavailable or NothingToClaim) ...
    assert waiting.request_id in h.replies, "the waiting claim was served, then dropped"


def test_after_recovery_the_job_is_not_left_claimed_by_a_caller_that_never_heard() -> None:
    h = Harness.started(config=CONFIG)
    h.push(b"a")
    b = h.push(b"b").result.job_id  # type: ignore[union-attr]
    h.auto = False
    h.submit(Claim(h.request_id(), "w0"))
    h.submit(Claim(h.request_id(), "w1"))
    waiting = Claim(h.request_id(), "w2", wait=30)
    h.submit(waiting)
    h.advance(5)
    h.auto = True
    h.flush()  # storage recovers: everything is written
    h.advance(40)  # long past the wait
    job = h.broker.job(b)
    answered = waiting.request_id in h.replies
    assert answered or job.status is not JobStatus.CLAIMED, (  # type: ignore[union-attr]
        f"{b} is {job.status} by {job.claimed_by} and the claim was never answered"  # type: ignore[union-attr]
    )
