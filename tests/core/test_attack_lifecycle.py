"""Attacks on the job lifecycle's rules and indexes (issue 9), each the smallest
reproduction of something that broke, kept as a regression test.

Memory is measured with tracemalloc, filtered to the file that allocates it, so the
harness's own growth (replies, archive objects) does not count.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from osqueue_core import (
    Cancel,
    Claim,
    Claimed,
    Complete,
    Fail,
    InvalidArgument,
    JobStatus,
    NewJob,
    NothingToClaim,
    Push,
    PushBatch,
    RetryPolicy,
)

from .harness import Harness
from .test_lifecycle import claim, ok, push, started


def allocated_by(path_glob: str, action: Callable[[], None]) -> int:
    """Bytes still allocated by code in files matching ``path_glob`` after ``action``."""
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, path_glob)])
        action()
        after = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, path_glob)])
    finally:
        tracemalloc.stop()
    return sum(stat.size_diff for stat in after.compare_to(before, "filename"))


# -- huge integers where seconds are expected ----------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda rid: Push(rid, b"x", delay=10**400),
        lambda rid: Push(rid, b"x", run_at=10**400),
        lambda rid: PushBatch(rid, (NewJob(b"x", delay=10**400),)),
        lambda rid: Claim(rid, "w1", wait=10**400),
    ],
    ids=["push-delay", "push-run_at", "batch-delay", "claim-wait"],
)
def test_a_huge_integer_of_seconds_is_invalid_argument(make: Callable[[int], Any]) -> None:
    h = started()
    reply = h.submit(make(h.request_id()))
    assert reply is not None
    assert isinstance(reply.error, InvalidArgument), reply
    assert h.broker.stats().ready == 0


# -- waiting claims on many queue names -----------------------------------------------


def _expired_claims_on_fresh_queues(h: Harness, claims: int) -> None:
    for i in range(claims):
        names = tuple(f"q{i}-{k}" for k in range(64))
        h.submit(Claim(h.request_id(), "w2", wait=0.5, queues=names))
        h.advance(1)  # its wait runs out: answered NothingToClaim


def test_expired_claims_leave_no_lines_behind_while_another_claim_waits() -> None:
    h = started()
    h.submit(Claim(h.request_id(), "patient", wait=3600))  # keeps one claim waiting
    _expired_claims_on_fresh_queues(h, 10)  # warm up: allocations that stay anyway
    grown = allocated_by(
        "*/osqueue_core/waiters.py", lambda: _expired_claims_on_fresh_queues(h, 500)
    )
    # 500 expired claims over 32,000 fresh queue names; one claim is waiting.
    assert grown < 200_000, f"waiters.py holds {grown} more bytes after 500 expired claims"


# -- the "oldest ready" heap ----------------------------------------------------------


def test_the_oldest_ready_index_does_not_grow_with_every_claim() -> None:
    h = started()
    push(h, b"anchor", delay=10**6)  # the queue never empties (a backlog would do too)

    def cycles(n: int) -> None:
        for _ in range(n):
            push(h, b"x")
            job_id = claim(h).job_id
            ok(h.submit(Complete(h.request_id(), job_id, "w1")))
            h.replies.clear()

    cycles(100)
    grown = allocated_by("*/osqueue_core/table.py", lambda: cycles(3000))
    assert grown < 100_000, f"table.py holds {grown} more bytes after 3000 push/claim/complete"


def test_a_retried_jobs_ready_age_counts_from_its_retry() -> None:
    h = started(retry=RetryPolicy(base=10, cap=10, max_attempts=5))
    job_id = push(h, b"a")
    push(h, b"b", delay=10**6)  # keeps the queue's indexes alive
    h.advance(100)
    claim(h)
    ok(h.submit(Fail(h.request_id(), job_id, "w1", "boom", True)))
    retry_at = h.broker.job(job_id).retry_at  # type: ignore[union-attr]
    assert retry_at is not None
    h.advance(1000)
    [counts] = h.broker.stats().queues
    assert counts.ready == 1
    assert counts.oldest_ready_since == retry_at, (
        f"oldest ready since {counts.oldest_ready_since}, but the job became due at {retry_at} "
        f"(created {h.broker.job(job_id).created_at})"  # type: ignore[union-attr]
    )


# -- serving waiting claims -----------------------------------------------------------


def test_a_batch_serves_the_earliest_claim_on_each_queue() -> None:
    h = started()
    first = Claim(h.request_id(), "w1", wait=60, queues=("b",))
    second = Claim(h.request_id(), "w2", wait=60, queues=("a", "b"))
    h.submit(first)
    h.submit(second)
    batch = (NewJob(b"A", queue="a"), NewJob(b"B", queue="b", priority=5))
    ok(h.submit(PushBatch(h.request_id(), batch)))
    served = h.replies.get(first.request_id)
    assert served is not None, (
        "the claim waiting first on b is still waiting; "
        f"the later one got {h.replies[second.request_id].result}"
    )
    assert isinstance(served.result, Claimed)


# -- cancel racing a claim ------------------------------------------------------------


def test_a_job_cancelled_under_a_withdrawn_claim_is_not_left_held() -> None:
    h = started()
    job_id = push(h, b"a")
    h.auto = False
    h.submit(Push(h.request_id(), b"b"))  # a write in flight: the grant waits for it
    grant = Claim(h.request_id(), "w1")
    h.submit(grant)  # grants a in the open batch
    cancel = Cancel(h.request_id(), job_id)
    h.submit(cancel)  # cancelled while the grant is not durable
    h.broker.cancel_claim(grant.request_id, h.now)  # the claimer leaves
    h.flush()
    h.auto = True
    h.deliver_all()
    assert h.replies[grant.request_id].result == NothingToClaim()
    job = h.broker.job(job_id)
    assert job is None or job.status is not JobStatus.CLAIMED, (
        f"held by {job.claimed_by!r} (attempts {job.attempts}) after its claim was answered "
        f"NothingToClaim; cancel answered {h.replies[cancel.request_id].result}"
    )
