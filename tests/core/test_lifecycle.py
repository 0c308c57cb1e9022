"""The job lifecycle rules, one at a time: queues, priority, delays, keys, retries,
dead letters, release, cancel, results, get, claim many, and bad input."""

from __future__ import annotations

from typing import Any

import attrs
import orjson
import pytest

from osqueue_core import (
    BrokerConfig,
    Cancel,
    Cancelled,
    Claim,
    Claimed,
    ClaimedBatch,
    Complete,
    DeadLetters,
    Fail,
    Failed,
    GetJob,
    Heartbeat,
    InvalidArgument,
    JobAlreadyFinished,
    JobInfo,
    JobNotDead,
    JobNotFound,
    JobStatus,
    LeaseExtended,
    ListDead,
    NewJob,
    NothingToClaim,
    PayloadTooLarge,
    Purge,
    Purged,
    Push,
    PushBatch,
    Pushed,
    PushedBatch,
    Redrive,
    Redriven,
    Release,
    RetryPolicy,
    decode_state,
)

from .harness import Harness, archived_ids

IMMEDIATE = RetryPolicy(base=0, max_attempts=3)


def started(**config: Any) -> Harness:
    config.setdefault("retry", IMMEDIATE)
    h = Harness.started(config=BrokerConfig(**config))
    h.wall = 1_000_000.0  # UNIX seconds, apart from ``now`` (monotonic)
    return h


def ok(reply: Any) -> Any:
    assert reply is not None
    assert reply.error is None, reply.error
    return reply.result


def error(reply: Any) -> Exception:
    assert reply is not None
    assert reply.error is not None, reply.result
    return reply.error  # type: ignore[no-any-return]


def push(h: Harness, payload: bytes = b"x", **options: Any) -> str:
    return ok(h.submit(Push(h.request_id(), payload, **options))).job_id  # type: ignore[no-any-return]


def claim(h: Harness, *queues: str, worker: str = "w1", **options: Any) -> Any:
    return ok(h.submit(Claim(h.request_id(), worker, queues=queues or ("default",), **options)))


def stored(h: Harness) -> dict[str, Any]:
    return {j.id: j for j in decode_state(h.store.get("state.json")).jobs}  # type: ignore[arg-type]


# -- queues and priority ----------------------------------------------------------------


def test_claims_take_only_from_the_named_queues() -> None:
    h = started()
    mail = push(h, queue="mail")
    push(h, queue="video")
    assert isinstance(claim(h), NothingToClaim)
    assert claim(h, "mail").job_id == mail
    assert isinstance(claim(h, "mail"), NothingToClaim)


def test_higher_priority_first_then_fifo_across_named_queues() -> None:
    h = started()
    low = push(h, queue="a", priority=-1)
    first = push(h, queue="b")
    urgent = push(h, queue="a", priority=7)
    second = push(h, queue="a")
    order = [claim(h, "a", "b").job_id for _ in range(4)]
    assert order == [urgent, first, second, low]


def test_a_retried_job_keeps_its_place_among_equal_priorities() -> None:
    h = started()
    old = push(h)
    assert claim(h).job_id == old
    newer = push(h)
    assert ok(h.fail(old)).dead is False
    assert [claim(h).job_id, claim(h).job_id] == [old, newer]


# -- delays ----------------------------------------------------------------------------


def test_a_delayed_job_is_not_claimable_before_its_time_and_wakes_a_waiting_claim() -> None:
    h = started()
    job = push(h, delay=5.0)
    assert isinstance(claim(h), NothingToClaim)
    info = ok(h.submit(GetJob(h.request_id(), job)))
    assert info.run_at == h.wall + 5.0
    assert h.broker.stats().delayed == 1
    waiting = Claim(h.request_id(), "w1", wait=60)
    assert h.submit(waiting) is None  # waits
    assert h.broker.next_deadline() == h.now + 5.0
    h.advance(4.9)
    assert waiting.request_id not in h.replies
    h.advance(0.1)
    assert ok(h.replies[waiting.request_id]).job_id == job


def test_run_at_is_unix_time_and_a_past_run_at_is_no_constraint() -> None:
    h = started()
    later = push(h, run_at=h.wall + 2)
    now = push(h, run_at=h.wall - 100)
    assert stored(h)[now].born.run_at is None
    assert claim(h).job_id == now
    h.advance(2)
    assert claim(h).job_id == later


def test_a_wall_clock_stepped_back_delays_but_never_spins() -> None:
    h = started()
    push(h, delay=10.0)
    h.wall -= 3600  # NTP steps the clock back an hour
    h.advance(10)
    assert isinstance(claim(h), NothingToClaim)
    deadline = h.broker.next_deadline()
    assert deadline is not None
    assert deadline > h.now


# -- idempotency keys --------------------------------------------------------------------


def test_a_push_with_a_known_key_creates_nothing_and_returns_the_first_id() -> None:
    h = started()
    first = ok(h.submit(Push(h.request_id(), b"a", key="order-1")))
    again = ok(h.submit(Push(h.request_id(), b"b", key="order-1")))
    assert again == Pushed(first.job_id, existing=True)
    other_queue = push(h, b"c", queue="q2", key="order-1")
    assert other_queue != first.job_id, "keys are per queue"
    assert len(stored(h)) == 2


def test_duplicate_keys_inside_one_batch_make_one_job() -> None:
    h = started()
    batch = PushBatch(
        h.request_id(),
        (NewJob(b"1", key="k"), NewJob(b"2"), NewJob(b"3", key="k"), b"4"),
    )
    result = ok(h.submit(batch))
    assert isinstance(result, PushedBatch)
    ids = result.job_ids
    assert ids[0] == ids[2]
    assert len(set(ids)) == 3
    assert result.existing == (False, False, True, False)
    assert len(stored(h)) == 3


def test_a_finished_jobs_key_is_remembered_for_the_retention_then_forgotten() -> None:
    h = started(idempotency_retention=100.0)
    job = push(h, key="k")
    assert claim(h).job_id == job
    ok(h.complete(job))
    assert job not in stored(h), "archived and dropped"
    assert push(h, key="k") == job
    # The key lives in the state object: a successor honours it.
    state = orjson.loads(h.store.get("state.json"))  # type: ignore[arg-type]
    assert state["keys"][0]["job_id"] == job
    h.advance(101)
    assert push(h, key="k") != job


def test_remembered_keys_are_capped_oldest_first() -> None:
    h = started(max_remembered_keys=2)
    ids = []
    for key in ("a", "b", "c"):
        ids.append(push(h, key=key))
        assert claim(h).job_id == ids[-1]
        ok(h.complete(ids[-1]))
    assert push(h, key="a") not in ids, "the oldest was forgotten"
    assert push(h, key="c") == ids[2]


# -- retries, attempts, dead letters -----------------------------------------------------


def test_fail_retries_after_the_policy_backoff_with_deterministic_jitter() -> None:
    policy = RetryPolicy(base=2, cap=5, max_attempts=None)
    h = started(retry=policy)
    job = push(h)
    for attempt in (1, 2, 3):
        assert claim(h).attempts == attempt
        failed = ok(h.fail(job))
        delay = policy.delay(job, attempt)
        assert failed.retry_at == pytest.approx(h.wall + delay)
        assert min(5, 2 * 2 ** (attempt - 1)) / 2 <= delay <= min(5, 2 * 2 ** (attempt - 1))
        assert isinstance(claim(h), NothingToClaim)
        h.advance(delay)
    assert claim(h).attempts == 4


def test_a_queue_policy_and_a_jobs_own_max_attempts_override_the_default() -> None:
    h = started(queue_retry={"fragile": RetryPolicy(base=0, max_attempts=1)})
    fragile = push(h, queue="fragile")
    sturdy = push(h, max_attempts=2)
    assert claim(h, "fragile").max_attempts == 1
    assert ok(h.fail(fragile)).dead is True
    assert claim(h).max_attempts == 2
    assert ok(h.fail(sturdy)).dead is False
    claim(h)
    assert ok(h.fail(sturdy)).dead is True


def test_attempts_never_exceed_the_maximum_even_by_lease_expiry() -> None:
    h = started(heartbeat_timeout=1.0)
    job = push(h)
    for attempt in (1, 2, 3):
        assert claim(h).attempts == attempt
        h.advance(1.0)
    assert isinstance(claim(h), NothingToClaim)
    dead = stored(h)[job]
    assert (dead.status, dead.attempts) == (JobStatus.DEAD, 3)


def test_dead_letters_are_listed_paged_redriven_and_purged() -> None:
    h = started()
    ids = [push(h, bytes([i]), queue="q" if i % 2 else "default") for i in range(4)]
    for job in ids:
        claim(h, "q", "default")
        ok(h.submit(Fail(h.request_id(), job, "w1", f"bad {job}", False)))
    page = ok(h.submit(ListDead(h.request_id(), limit=3)))
    assert isinstance(page, DeadLetters)
    assert [j.id for j in page.jobs] == ids[:3]
    assert page.more is True
    assert page.jobs[0].last_error == f"bad {ids[0]}"
    assert page.jobs[0].attempts == 1
    rest = ok(h.submit(ListDead(h.request_id(), after=ids[2])))
    assert [j.id for j in rest.jobs] == [ids[3]]
    assert rest.more is False
    in_q = ok(h.submit(ListDead(h.request_id(), queue="q")))
    assert [j.id for j in in_q.jobs] == [ids[1], ids[3]]

    assert ok(h.submit(Redrive(h.request_id(), (ids[0],)))) == Redriven((ids[0],))
    again = claim(h)
    assert (again.job_id, again.attempts) == (ids[0], 1), "fresh attempts"
    assert ok(h.submit(Purge(h.request_id(), queue="q"))) == Purged((ids[1], ids[3]))
    left = stored(h)
    assert left[ids[2]].dead_letter, "purge kept every other job"
    assert left[ids[0]].status is JobStatus.CLAIMED
    assert sorted(archived_ids(h.store)) == sorted([ids[1], ids[3]])
    assert h.broker.stats().dead == 1


def test_redrive_or_purge_of_a_job_that_is_not_dead_changes_nothing() -> None:
    h = started()
    ready = push(h)
    dead = push(h)
    claim(h)
    claim(h)
    ok(h.submit(Fail(h.request_id(), dead, "w1", "x", False)))
    ok(h.release(ready))
    before = h.store.get("state.json")
    writes = h.writes
    for command in (Redrive, Purge):
        assert isinstance(error(h.submit(command(h.request_id(), (dead, ready)))), JobNotDead)
        assert isinstance(error(h.submit(command(h.request_id(), ("nope",)))), JobNotFound)
    assert h.store.get("state.json") == before
    assert h.writes == writes


def test_dead_letters_expire_into_the_archive_and_are_capped() -> None:
    h = started(dead_retention=60.0, max_dead=2)
    ids = [push(h) for _ in range(3)]
    for job in ids:
        claim(h)
        ok(h.submit(Fail(h.request_id(), job, "w1", "x", False)))
    assert archived_ids(h.store) == [ids[0]], "beyond the cap the oldest leaves"
    assert h.broker.next_deadline() == pytest.approx(h.now + 60.0)
    h.advance(60.0)
    assert sorted(archived_ids(h.store)) == sorted(ids)
    records = [orjson.loads(h.store.get(k)) for k in h.store.keys("archive/")]  # type: ignore[arg-type]
    assert {job["status"] for r in records for job in r["jobs"]} == {"dead"}


# -- release, cancel, results, get -------------------------------------------------------


def test_release_never_counts_an_attempt_and_keeps_the_place() -> None:
    h = started()
    first = push(h)
    push(h)
    assert claim(h).attempts == 1
    ok(h.release(first))
    again = claim(h)
    assert (again.job_id, again.attempts) == (first, 1)


def test_cancel_a_ready_job_at_once_and_it_is_never_claimed() -> None:
    h = started()
    job = push(h, delay=10)
    assert ok(h.submit(Cancel(h.request_id(), job))) == Cancelled(job, at_once=True)
    h.advance(10)
    assert isinstance(claim(h), NothingToClaim)
    records = [orjson.loads(h.store.get(k)) for k in h.store.keys("archive/")]  # type: ignore[arg-type]
    assert [(j["id"], j["status"]) for r in records for j in r["jobs"]] == [(job, "cancelled")]
    assert isinstance(error(h.submit(Cancel(h.request_id(), job))), JobNotFound)


def test_cancel_a_claimed_job_is_seen_at_the_heartbeat_and_ends_it_cancelled() -> None:
    h = started()
    job = push(h)
    claim(h)
    assert ok(h.submit(Cancel(h.request_id(), job))) == Cancelled(job, at_once=False)
    assert stored(h)[job].cancel_requested, "written, so a successor knows"
    beat = ok(h.heartbeat(job))
    assert isinstance(beat, LeaseExtended)
    assert beat.cancel_requested
    failed = ok(h.fail(job))  # retry=True is ignored: a cancelled job never runs again
    assert failed == Failed(job, True, None, cancelled=True)
    records = [orjson.loads(h.store.get(k)) for k in h.store.keys("archive/")]  # type: ignore[arg-type]
    assert [(j["id"], j["status"]) for r in records for j in r["jobs"]] == [(job, "cancelled")]


def test_a_cancelled_claim_still_completes_and_an_expired_one_ends_cancelled() -> None:
    h = started(heartbeat_timeout=1.0)
    done, lost = push(h), push(h)
    claim(h)
    claim(h)
    for job in (done, lost):
        ok(h.submit(Cancel(h.request_id(), job)))
    ok(h.complete(done))
    h.advance(1.0)
    records = [orjson.loads(h.store.get(k)) for k in h.store.keys("archive/")]  # type: ignore[arg-type]
    statuses = {j["id"]: j["status"] for r in records for j in r["jobs"]}
    assert statuses == {done: "completed", lost: "cancelled"}


def test_cancelling_a_finished_job_is_refused() -> None:
    h = started()
    job = push(h)
    claim(h)
    ok(h.submit(Fail(h.request_id(), job, "w1", "x", False)))
    assert isinstance(error(h.submit(Cancel(h.request_id(), job))), JobAlreadyFinished)


def test_a_result_is_kept_in_the_archive_record() -> None:
    h = started()
    job = push(h)
    claim(h)
    ok(h.submit(Complete(h.request_id(), job, "w1", b"\x00answer")))
    [key] = h.store.keys("archive/")
    [record] = orjson.loads(h.store.get(key))["jobs"]  # type: ignore[arg-type]
    assert record["result"] == "AGFuc3dlcg=="


def test_get_describes_a_live_job() -> None:
    h = started()
    job = push(h, queue="mail", priority=3, key="k", max_attempts=2)
    claim(h, "mail", worker="w9")
    info = ok(h.submit(GetJob(h.request_id(), job)))
    assert info == JobInfo(
        id=job,
        queue="mail",
        priority=3,
        status="claimed",
        attempts=1,
        max_attempts=2,
        created_at=h.wall,
        run_at=None,
        last_error=None,
        holder="w9",
        key="k",
    )
    assert isinstance(error(h.submit(GetJob(h.request_id(), "nope"))), JobNotFound)


def test_claim_many_takes_up_to_count_best_first_and_a_waiter_gets_what_is_due() -> None:
    h = started()
    ids = [push(h, priority=p) for p in (0, 5, 1)]
    batch = claim(h, count=2)
    assert isinstance(batch, ClaimedBatch)
    assert [c.job_id for c in batch.jobs] == [ids[1], ids[2]]
    rest = claim(h, count=5)
    assert [c.job_id for c in rest.jobs] == [ids[0]]
    waiting = Claim(h.request_id(), "w1", wait=10, count=3)
    assert h.submit(waiting) is None
    late = push(h)
    result = ok(h.replies[waiting.request_id])
    assert [c.job_id for c in result.jobs] == [late]


def test_a_cancelled_claim_many_hands_every_job_back() -> None:
    h = started()
    ids = [push(h) for _ in range(2)]
    h.auto = False
    waiting = Claim(h.request_id(), "w1", count=2)
    h.broker.submit(waiting, h.now)
    h.broker.cancel_claim(waiting.request_id, h.now)
    h.flush()
    h.deliver_all()
    assert isinstance(h.replies[waiting.request_id].result, NothingToClaim)
    h.auto = True
    again = claim(h, count=2)
    assert [(c.job_id, c.attempts) for c in again.jobs] == [(i, 1) for i in ids]


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "kind", "text"),
    [
        (Push(1, b"x", delay=-1), InvalidArgument, "delay"),
        (Push(1, b"x", delay=float("nan")), InvalidArgument, "delay"),
        (Push(1, b"x", delay=1, run_at=5), InvalidArgument, "not both"),
        (Push(1, b"x", queue="bad name"), InvalidArgument, "characters"),
        (Push(1, b"x", queue=""), InvalidArgument, "queue name"),
        (Push(1, b"x", queue="q" * 65), InvalidArgument, "queue name"),
        (Push(1, b"x", key="k" * 257), InvalidArgument, "key"),
        (Push(1, b"x", key=""), InvalidArgument, "key"),
        (Push(1, b"x", priority=2**31), InvalidArgument, "priority"),
        (Push(1, b"x", priority=True), InvalidArgument, "priority"),
        (Push(1, b"x", max_attempts=0), InvalidArgument, "max_attempts"),
        (PushBatch(1, (NewJob(b"x", queue="ok"), NewJob(b"y", queue="n/o"))), InvalidArgument, ""),
        (Claim(1, "w", queues=()), InvalidArgument, "queues"),
        (Claim(1, "w", queues=("a",) * 65), InvalidArgument, "queues"),
        (Claim(1, "w", count=0), InvalidArgument, "count"),
        (Claim(1, "w", count=1001), InvalidArgument, "count"),
        (Complete(1, "j", "w", b"r" * (64 * 1024 + 1)), PayloadTooLarge, "result"),
        (ListDead(1, limit=0), InvalidArgument, "limit"),
        (Redrive(1), InvalidArgument, "not both"),
        (Redrive(1, ("a",), "q"), InvalidArgument, "not both"),
        (Purge(1, ("j",) * 1001), InvalidArgument, "limit"),
    ],
)
def test_bad_input_is_a_typed_error_and_changes_nothing(
    command: Any, kind: type[Exception], text: str
) -> None:
    h = started()
    push(h)
    before, writes = h.store.get("state.json"), h.writes
    command = attrs.evolve(command, request_id=h.request_id())
    reply = h.submit(command)
    assert isinstance(error(reply), kind)
    assert text in str(error(reply))
    assert (h.store.get("state.json"), h.writes) == (before, writes)


def test_heartbeat_and_release_of_a_job_held_by_someone_else_are_refused() -> None:
    h = started()
    job = push(h)
    claim(h, worker="w1")
    for command in (Heartbeat(h.request_id(), job, "w2"), Release(h.request_id(), job, "w2")):
        assert type(error(h.submit(command))).__name__ == "LeaseLost"
    assert claim(h, worker="w2").__class__ is NothingToClaim
    assert ok(h.heartbeat(job, "w1")).job_id == job
    _ = Claimed  # imported for the readers of this file: the single-claim result


def test_a_successor_honours_keys_cancel_requests_and_dead_letters() -> None:
    h = started(idempotency_retention=3600.0)
    keyed = push(h, key="k")
    claim(h)
    ok(h.complete(keyed))
    held = push(h)
    dead = push(h)
    claim(h)
    claim(h)
    ok(h.submit(Cancel(h.request_id(), held)))
    ok(h.submit(Fail(h.request_id(), dead, "w1", "poison", False)))
    successor = Harness.started(
        h.store, BrokerConfig(retry=IMMEDIATE), identity="broker-b", now=h.now
    )
    successor.wall = h.wall
    assert ok(successor.submit(Push(successor.request_id(), b"y", key="k"))).job_id == keyed
    beat = ok(successor.heartbeat(held))
    assert beat.cancel_requested
    [letter] = ok(successor.submit(ListDead(successor.request_id()))).jobs
    assert (letter.id, letter.last_error) == (dead, "poison")


def test_a_successor_with_a_lower_dead_letter_cap_archives_the_oldest() -> None:
    h = started(max_dead=10)
    ids = [push(h) for _ in range(3)]
    for job in ids:
        claim(h)
        ok(h.submit(Fail(h.request_id(), job, "w1", "x", False)))
    successor = Harness.started(
        h.store, BrokerConfig(retry=IMMEDIATE, max_dead=1), identity="broker-b", now=h.now
    )
    successor.wall = h.wall
    successor.advance(0.001)
    assert sorted(archived_ids(h.store)) == sorted(ids[:2])
    [letter] = ok(successor.submit(ListDead(successor.request_id()))).jobs
    assert letter.id == ids[2]


def test_a_takeover_does_at_once_what_is_already_due() -> None:
    """Found by the model test: a successor loading a dead letter past its retention
    (or a delayed job past its run-at) left it for the next input, so next_deadline()
    was ``now`` itself."""
    config = BrokerConfig(retry=RetryPolicy(base=0, max_attempts=1), dead_retention=60.0)
    first = Harness.started(config=config)
    dead = push(first)
    later = push(first, delay=30.0)
    claim(first)
    ok(first.fail(dead, requeue=False))
    first.broker.stop(first.now)
    first.flush()
    successor = Harness.started(first.store, config, identity="broker-b", now=first.now + 61)
    assert successor.broker.stats().dead == 0
    assert archived_ids(first.store) == [dead]
    assert successor.broker.stats().ready == 1
    deadline = successor.broker.next_deadline()
    assert deadline is None or deadline > successor.now
    assert claim(successor).job_id == later


@pytest.mark.parametrize("give_back", ["release", "fail"])
def test_a_job_given_back_is_answered_before_the_claim_it_serves(give_back: str) -> None:
    """Found by the model test: a release (or a retried fail with no backoff) served a
    waiting claim before its own reply was held, so the new holder heard of the job
    before the old one heard it was given back."""
    h = started()
    job_id = push(h)
    claim(h)
    waiting = Claim(h.request_id(), "w2", wait=5.0)
    assert h.submit(waiting) is None
    give = Release if give_back == "release" else Fail
    command = give(h.request_id(), job_id, "w1")
    ok(h.submit(command))
    assert ok(h.replies[waiting.request_id]).job_id == job_id
    order = list(h.replies)
    assert order.index(command.request_id) < order.index(waiting.request_id)


def test_get_reports_a_run_at_only_while_it_is_ahead() -> None:
    h = started()
    job = push(h, delay=2.0)
    assert ok(h.submit(GetJob(h.request_id(), job))).run_at == h.wall + 2.0
    h.advance(2.0)
    assert ok(h.submit(GetJob(h.request_id(), job))).run_at is None
