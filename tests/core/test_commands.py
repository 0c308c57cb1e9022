"""Push, claim, heartbeat, complete, fail: answers and typed errors, with literal times."""

from __future__ import annotations

import pytest

from osqueue_core import (
    BrokerConfig,
    Claimed,
    Completed,
    Failed,
    InvalidArgument,
    JobNotFound,
    JobStatus,
    LeaseExtended,
    LeaseLost,
    NothingToClaim,
    PayloadTooLarge,
    Purge,
    Purged,
    Pushed,
    RetryPolicy,
    decode_state,
)

from .harness import Harness


def job_id_of(reply: object) -> str:
    return reply.result.job_id  # type: ignore[attr-defined, no-any-return]


def test_claims_come_in_fifo_order_and_payloads_survive() -> None:
    h = Harness.started()
    pushed = [job_id_of(h.push(bytes([i]))) for i in range(5)]
    claimed = [h.claim(f"w{i}").result for i in range(5)]  # type: ignore[union-attr]
    assert [c.job_id for c in claimed] == pushed  # type: ignore[union-attr]
    assert [c.payload for c in claimed] == [bytes([i]) for i in range(5)]  # type: ignore[union-attr]
    assert isinstance(h.claim().result, NothingToClaim)  # type: ignore[union-attr]


def test_claim_sets_deadline_and_attempts() -> None:
    h = Harness.started(config=BrokerConfig(heartbeat_timeout=10))
    h.push()
    reply = h.claim("w1")
    assert reply is not None
    assert reply.result == Claimed(job_id_of(reply), b"job", 1, h.now + 10, max_attempts=5)


def test_heartbeat_extends_and_wrong_worker_loses() -> None:
    h = Harness.started(config=BrokerConfig(heartbeat_timeout=10))
    h.push()
    job = job_id_of(h.claim("w1"))
    h.now += 5
    assert h.heartbeat(job, "w1").result == LeaseExtended(job, h.now + 10)  # type: ignore[union-attr]
    assert isinstance(h.heartbeat(job, "w2").error, LeaseLost)  # type: ignore[union-attr]
    assert isinstance(h.complete(job, "w2").error, LeaseLost)  # type: ignore[union-attr]
    assert isinstance(h.heartbeat("nope", "w1").error, JobNotFound)  # type: ignore[union-attr]


def test_complete_is_idempotent_for_the_same_worker_within_the_reply_memory() -> None:
    h = Harness.started(config=BrokerConfig(reply_memory=60, retry=RetryPolicy(base=0)))
    h.push()
    job = job_id_of(h.claim())
    assert h.complete(job).result == Completed(job)  # type: ignore[union-attr]
    # The archive write already ran (auto mode) and the job left the state, but a retry
    # after a lost answer is told "done", not "never existed".
    assert h.broker.job(job) is None
    assert h.complete(job).result == Completed(job)  # type: ignore[union-attr]
    # Only for the worker that finished it; and after the window the job is unknown.
    assert isinstance(h.complete(job, "w2").error, JobNotFound)  # type: ignore[union-attr]
    h.advance(60)
    assert isinstance(h.complete(job).error, JobNotFound)  # type: ignore[union-attr]


def test_repeated_complete_before_archive_is_answered_again() -> None:
    h = Harness.started()
    h.push()
    job = job_id_of(h.claim())
    h.auto = False
    h.complete(job)
    h.deliver(h.pending_of(type(h.pending[0]))[0])  # the state write lands
    assert h.replies  # first complete answered
    reply = h.complete(job)
    assert reply is None  # held until the next operation confirms ownership
    h.deliver(0)  # the archive write or the confirming read
    while h.pending:
        h.deliver(0)
    assert h.replies[max(h.replies)].result == Completed(job)  # type: ignore[type-var]


def test_fail_requeues_or_dead_letters() -> None:
    h = Harness.started(config=BrokerConfig(retry=RetryPolicy(base=0, max_attempts=2)))
    h.push(b"x")
    job = job_id_of(h.claim())
    assert h.fail(job).result == Failed(job, dead=False, retry_at=h.now)  # type: ignore[union-attr]
    again = h.claim("w1")
    assert job_id_of(again) == job
    assert again.result.attempts == 2  # type: ignore[union-attr]
    # Out of attempts: a requeue request dead-letters instead.
    assert h.fail(job).result == Failed(job, dead=True)  # type: ignore[union-attr]
    assert isinstance(h.claim().result, NothingToClaim)  # type: ignore[union-attr]
    # A dead letter stays in the state until purged (or expired); then it is archived.
    assert h.store.keys("archive/") == []
    assert h.submit(Purge(h.request_id(), (job,))).result == Purged((job,))  # type: ignore[union-attr]
    archived = [k for k in h.store.keys("archive/")]
    assert len(archived) == 1
    assert b'"status":"dead"' in h.store.get(archived[0])  # type: ignore[operator]


def test_fail_without_requeue_dead_letters_at_once() -> None:
    h = Harness.started()
    h.push()
    job = job_id_of(h.claim())
    assert h.fail(job, requeue=False).result == Failed(job, dead=True)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda h: h.claim(""), InvalidArgument),
        (lambda h: h.claim("w", wait=-1), InvalidArgument),
        (lambda h: h.claim("w", wait=float("nan")), InvalidArgument),
        (lambda h: h.heartbeat("", "w"), InvalidArgument),
        (lambda h: h.complete("x", ""), InvalidArgument),
        (lambda h: h.push(b"x" * 2000), PayloadTooLarge),
    ],
)
def test_bad_input_gets_a_typed_error_and_no_write(call, error) -> None:  # type: ignore[no-untyped-def]
    h = Harness.started(config=BrokerConfig(max_payload_bytes=1000))
    before = h.store.get("state.json")
    writes = h.writes
    reply = call(h)
    assert isinstance(reply.error, error)
    assert reply.error.grpc_status in {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}
    assert h.store.get("state.json") == before
    assert h.writes == writes


def test_waiting_claim_gets_the_next_pushed_job() -> None:
    h = Harness.started()
    rid = h.request_id()
    from osqueue_core import Claim

    assert h.submit(Claim(rid, "w1", wait=5.0)) is None
    assert h.broker.next_deadline() == h.now + 5.0
    pushed = h.push(b"late")
    claimed = h.replies[rid].result
    assert isinstance(claimed, Claimed)
    assert claimed.job_id == job_id_of(pushed)
    state = decode_state(h.store.get("state.json"))  # type: ignore[arg-type]
    assert state.jobs[0].status is JobStatus.CLAIMED


def test_waiting_claim_times_out_and_can_be_cancelled() -> None:
    from osqueue_core import Claim

    h = Harness.started()
    first, second = h.request_id(), h.request_id()
    h.submit(Claim(first, "w1", wait=5.0))
    h.submit(Claim(second, "w2", wait=50.0))
    h.advance(5.0)
    assert h.replies[first].result == NothingToClaim()
    assert second not in h.replies
    h.broker.cancel_claim(second, h.now)
    h.flush()
    assert h.replies[second].result == NothingToClaim()
    assert h.broker.next_deadline() is None


def test_ids_are_deterministic_and_injectable() -> None:
    h = Harness.started(config=BrokerConfig(job_id_factory=lambda epoch, seq: f"e{epoch}s{seq}"))
    assert h.push().result == Pushed("e1s0")  # type: ignore[union-attr]
    assert h.push().result == Pushed("e1s1")  # type: ignore[union-attr]


def test_cancel_withdraws_a_claim_still_waiting_for_the_takeover() -> None:
    from osqueue_core import Broker, Claim, Push

    from .harness import SimStore

    h = Harness(Broker(identity="a", incarnation="a-1"), SimStore())
    h.auto = False
    h.broker.start(h.now)
    waiting = h.request_id()
    h.broker.submit(Claim(waiting, "w1", wait=30), h.now)
    h.broker.cancel_claim(waiting, h.now)
    h.flush()
    assert h.replies[waiting].result == NothingToClaim()
    h.auto = True
    h.flush()
    pushed = h.submit(Push(h.request_id(), b"x"))
    assert h.claim("w2").result.job_id == pushed.result.job_id  # type: ignore[union-attr]


def test_push_batch_is_one_write_in_order_and_all_or_nothing() -> None:
    from osqueue_core import PushBatch, PushedBatch

    h = Harness.started(config=BrokerConfig(max_payload_bytes=10, max_batch_ops=3))
    writes = h.writes
    reply = h.submit(PushBatch(h.request_id(), (b"a", b"b", b"c")))
    assert isinstance(reply.result, PushedBatch)  # type: ignore[union-attr]
    assert h.writes == writes + 1
    assert [h.claim().result.job_id for _ in range(3)] == list(reply.result.job_ids)  # type: ignore[union-attr]
    writes = h.writes
    for bad in ((b"ok", b"x" * 11), (b"1", b"2", b"3", b"4")):
        refused = h.submit(PushBatch(h.request_id(), bad))
        assert isinstance(refused.error, PayloadTooLarge)  # type: ignore[union-attr]
        assert "nothing was pushed" in str(refused.error)  # type: ignore[union-attr]
    assert h.writes == writes
    assert isinstance(h.claim().result, NothingToClaim)  # type: ignore[union-attr]


def test_push_batch_of_the_wrong_type_is_a_typed_error() -> None:
    from osqueue_core import PushBatch

    h = Harness.started()
    reply = h.submit(PushBatch(h.request_id(), None))  # type: ignore[arg-type]
    assert isinstance(reply.error, InvalidArgument)  # type: ignore[union-attr]


def test_a_repeated_fail_is_answered_like_the_first_after_the_job_moved_on() -> None:
    """Before: a retried Fail (after a lost answer) was LeaseLost once the job was
    requeued, and NOT_FOUND once a dead job was archived."""
    h = Harness.started(config=BrokerConfig(reply_memory=60, retry=RetryPolicy(base=0)))
    h.push()
    job = job_id_of(h.claim("w1"))
    assert h.fail(job, "w1", requeue=True).result == Failed(job, False, h.now)  # type: ignore[union-attr]
    assert h.fail(job, "w1", requeue=True).result == Failed(job, False, h.now)  # type: ignore[union-attr]
    assert job_id_of(h.claim("w2")) == job
    assert h.fail(job, "w2", requeue=False).result == Failed(job, True)  # type: ignore[union-attr]
    assert h.submit(Purge(h.request_id(), (job,))).ok
    assert h.broker.job(job) is None  # archived and dropped
    assert h.fail(job, "w2", requeue=False).result == Failed(job, True)  # type: ignore[union-attr]
    assert isinstance(h.complete(job, "w2").error, LeaseLost)  # type: ignore[union-attr]
