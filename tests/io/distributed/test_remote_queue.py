"""``RemoteQueue[T]`` against a broker process: every lifecycle feature over gRPC.

Each test starts its own broker with small retry delays (``--retry-base``), so
backoffs and delays take a fraction of a second. Nothing here sleeps to wait for
something: a job that must not be claimable yet is shown by a claim that answers
nothing, and a job that must become claimable is awaited with a waiting claim, whose
answer is checked against the job's run-at.
"""

from __future__ import annotations

import base64
import inspect
import time
from collections.abc import Callable
from typing import Any

import anyio
import attrs
import pytest

from osqueue_core import JobCancelled, JobInfo, JobNotFound
from osqueue_io import ClaimedJob, JobQueue, QueueInfo, RemoteQueue
from osqueue_io._proto.osqueue import v1 as pb
from osqueue_io.storage import open_store
from osqueue_io.sync import RemoteQueue as BlockingRemoteQueue
from osqueue_io.worker import Worker
from tests.io.archive import archived_records

from .conftest import BrokerProcess, Storage

pytestmark = pytest.mark.anyio

StartBroker = Callable[..., BrokerProcess]

#: Backoff: 50 ms doubling up to 200 ms (times 0.5..1 jitter); three attempts by
#: default; the queue "slow" waits 0.5 s (0.25..0.5 s with jitter) after a failure.
RETRY_FLAGS = (
    "--retry-base",
    "50ms",
    "--retry-cap",
    "200ms",
    "--max-attempts",
    "3",
    "--queue-retry",
    "slow=500ms,1s,0",
)


@attrs.frozen
class Task:
    name: str


@pytest.fixture
def broker(local_storage: Storage, start_broker: StartBroker) -> BrokerProcess:
    return start_broker(local_storage.data, "--heartbeat-timeout", "5s", *RETRY_FLAGS)


def remote(broker: BrokerProcess, **options: Any) -> RemoteQueue[Task]:
    return RemoteQueue(broker.address, Task, **options)


async def archive_of(storage: Storage) -> dict[str, dict[str, Any]]:
    """Every archived job record by id (call once the broker has stopped)."""
    store = open_store(storage.data, **storage.options)
    try:
        return {record["id"]: record for record in await archived_records(store)}
    finally:
        await store.aclose()


def names(jobs: list[ClaimedJob[Task]]) -> list[str]:
    return [job.item.name for job in jobs]


# -- the one client API ----------------------------------------------------------------


def _protocol_methods() -> list[str]:
    return [name for name in vars(JobQueue) if not name.startswith("_")]


def test_remote_queue_has_the_protocol_s_exact_signatures() -> None:
    # mypy checks the types (osqueue_io/remote.py); this checks names and defaults too.
    assert "push" in _protocol_methods()
    for name in _protocol_methods():
        expected, actual = getattr(JobQueue, name), getattr(RemoteQueue, name)
        if isinstance(expected, property):
            assert isinstance(actual, property), name
            continue
        assert inspect.signature(actual) == inspect.signature(expected), name


def test_the_blocking_twin_has_the_same_parameters() -> None:
    for name in _protocol_methods():
        expected = getattr(JobQueue, name)
        actual = getattr(BlockingRemoteQueue, name)
        if isinstance(expected, property):
            assert isinstance(actual, property), name
            continue
        assert list(inspect.signature(actual).parameters.values()) == list(
            inspect.signature(expected).parameters.values()
        ), name


async def test_a_typed_job_round_trips_with_its_handle(broker: BrokerProcess) -> None:
    async with remote(broker, worker_id="w-1") as queue:
        job_id = await queue.push(Task("index"), queue="jobs", priority=7, max_attempts=2)
        job = await queue.claim(queues=["jobs"])
        assert job is not None
        assert (job.id, job.item, job.worker_id, job.attempts) == (job_id, Task("index"), "w-1", 1)
        assert (job.queue, job.priority, job.max_attempts) == ("jobs", 7, 2)
        assert job.lease_timeout == 5.0
        assert 0 < job.expires_at - time.monotonic() <= 5.0
        assert job.payload == b'{"name":"index"}'  # JSON, as the embedded queue writes it
        assert await queue.heartbeat(job) == 5.0
        await queue.complete(job)
        assert await queue.claim(queues=["jobs"]) is None


# -- queues and priorities ---------------------------------------------------------------


async def test_claims_take_the_highest_priority_first_then_fifo_within_their_queues(
    broker: BrokerProcess,
) -> None:
    async with remote(broker) as queue:
        for name, priority in [("low", 0), ("high", 5), ("mid", 1), ("high-2", 5)]:
            await queue.push(Task(name), priority=priority)
        await queue.push(Task("email"), queue="emails", priority=9)
        await queue.push(Task("negative"), priority=-3)

        only_emails = await queue.claim(queues=["emails"])
        assert only_emails is not None
        assert (only_emails.item.name, only_emails.queue) == ("email", "emails")
        assert await queue.claim(queues=["emails"]) is None

        claimed = [await queue.claim() for _ in range(5)]
        assert [job.item.name for job in claimed if job] == [
            "high",
            "high-2",
            "mid",
            "low",
            "negative",
        ]
        assert [job.priority for job in claimed if job] == [5, 5, 1, 0, -3]


async def test_a_claim_on_several_queues_takes_the_best_of_all(broker: BrokerProcess) -> None:
    async with remote(broker) as queue:
        await queue.push(Task("a-old"), queue="a")
        await queue.push(Task("b-urgent"), queue="b", priority=2)
        await queue.push(Task("a-new"), queue="a")
        await queue.push(Task("c"), queue="c", priority=100)
        jobs = await queue.claim_many(10, queues=["a", "b"])
        assert [(job.item.name, job.queue) for job in jobs] == [
            ("b-urgent", "b"),
            ("a-old", "a"),
            ("a-new", "a"),
        ]


async def test_claim_many_takes_up_to_its_count_best_first(broker: BrokerProcess) -> None:
    async with remote(broker) as queue:
        await queue.push_many([Task(f"t{i}") for i in range(5)])
        await queue.push(Task("urgent"), priority=1)
        first = await queue.claim_many(3)
        assert names(first) == ["urgent", "t0", "t1"]
        assert all(job.attempts == 1 and job.lease_timeout == 5.0 for job in first)
        assert names(await queue.claim_many(10)) == ["t2", "t3", "t4"]
        assert await queue.claim_many(2) == []
        # A waiting claim_many is served by the next push.
        async with anyio.create_task_group() as tasks:
            got: list[list[ClaimedJob[Task]]] = []

            async def wait_for_jobs() -> None:
                got.append(await queue.claim_many(5, wait=10))

            tasks.start_soon(wait_for_jobs)
            while (await queue.stats()).waiting_claims != 1:
                pass
            await queue.push_many([Task("late-1"), Task("late-2")])
        assert [names(jobs) for jobs in got] == [["late-1", "late-2"]]


# -- delays ----------------------------------------------------------------------------


async def test_a_delayed_job_is_not_claimable_before_its_time_and_wakes_a_waiting_claim(
    broker: BrokerProcess,
) -> None:
    async with remote(broker) as queue:
        job_id = await queue.push(Task("later"), delay=0.3)
        info = await queue.get(job_id)
        assert info.status == "ready"
        assert info.run_at is not None
        assert info.run_at > info.created_at
        assert await queue.claim() is None, "claimable before its delay ran out"
        assert (await queue.stats()).delayed == 1

        # No other push: only the job falling due can wake this claim.
        started = time.monotonic()
        job = await queue.claim(wait=10)
        assert job is not None
        assert job.id == job_id
        assert time.time() >= info.run_at
        assert time.monotonic() - started < 10


async def test_run_at_is_a_unix_time(broker: BrokerProcess) -> None:
    async with remote(broker) as queue:
        far = time.time() + 3600  # far enough ahead to be reported however slow the machine
        later = await queue.push(Task("later"), run_at=far)
        assert (await queue.get(later)).run_at == pytest.approx(far, abs=0.001)
        past = await queue.push(Task("past"), run_at=time.time() - 60)
        assert (await queue.get(past)).run_at is None  # a time already past: at once
        at = time.time() + 0.3
        job_id = await queue.push(Task("at"), run_at=at)
        first = await queue.claim()
        assert first is not None
        assert first.id == past
        job = await queue.claim(wait=10)
        assert job is not None
        assert job.id == job_id
        assert time.time() >= at


# -- idempotency -----------------------------------------------------------------------


async def test_a_push_with_a_known_key_creates_nothing(broker: BrokerProcess) -> None:
    async with remote(broker) as queue:
        first = await queue.push(Task("once"), key="order-17")
        assert await queue.push(Task("twice"), key="order-17") == first
        # Keys are per queue.
        other = await queue.push(Task("elsewhere"), queue="other", key="order-17")
        assert other != first
        ids = await queue.push_many(
            [Task("a"), Task("b"), Task("c"), Task("d")], keys=["k1", "k1", "order-17", None]
        )
        assert ids[1] == ids[0]
        assert ids[2] == first
        assert len({ids[0], ids[3], first, other}) == 4
        assert (await queue.get(first)).key == "order-17"
        stats = await queue.stats()
        assert stats.ready == 4  # once, elsewhere, a, d
        job = await queue.claim()
        assert job is not None
        assert job.item == Task("once")


async def test_the_wire_says_which_pushes_matched_a_key(broker: BrokerProcess) -> None:
    async with remote(broker) as queue:
        call = queue.connection.call
        first = await call("Push", pb.PushRequest(data=b"{}", key="k"), pb.PushResponse)
        again = await call("Push", pb.PushRequest(data=b"{}", key="k"), pb.PushResponse)
        assert (first.existing, again.existing, again.job_id) == (False, True, first.job_id)
        items = [pb.PushItem(data=b"{}", key=key) for key in ("new", "new", "k", "")]
        batch = await call("PushBatch", pb.PushBatchRequest(items=items), pb.PushBatchResponse)
        assert batch.existing == [False, True, True, False]
        assert batch.job_ids[2] == first.job_id
        plain = await call(
            "PushBatch", pb.PushBatchRequest(data=[b"{}", b"{}"]), pb.PushBatchResponse
        )
        assert (len(plain.job_ids), plain.existing) == (2, [])


# -- failing, retrying, dead letters ---------------------------------------------------


async def test_a_failed_job_is_retried_after_its_backoff_then_dies(
    broker: BrokerProcess,
) -> None:
    async with remote(broker) as queue:
        job_id = await queue.push(Task("flaky"), queue="slow", max_attempts=2)
        job = await queue.claim(queues=["slow"])
        assert job is not None
        assert job.max_attempts == 2
        assert await queue.fail(job, "first try broke") is False
        info = await queue.get(job_id)
        assert (info.status, info.attempts, info.last_error) == ("ready", 1, "first try broke")
        assert info.run_at is not None
        # --queue-retry slow=500ms: 0.25 to 0.5 s from the failure, after jitter.
        assert 0.2 < info.run_at - time.time() <= 0.5
        assert await queue.claim(queues=["slow"]) is None, "retried before its backoff"

        again = await queue.claim(queues=["slow"], wait=10)
        assert again is not None
        assert time.time() >= info.run_at
        assert (again.id, again.attempts) == (job_id, 2)
        assert await queue.fail(again, "second try broke") is True  # max_attempts=2
        dead = await queue.get(job_id)
        assert (dead.status, dead.attempts, dead.last_error) == ("dead", 2, "second try broke")
        assert await queue.claim(queues=["slow"]) is None


async def test_the_queue_policy_limits_attempts_unless_the_job_sets_its_own(
    broker: BrokerProcess,
) -> None:
    async with remote(broker) as queue:
        limited = await queue.push(Task("policy"))  # --max-attempts 3
        own = await queue.push(Task("own"), max_attempts=1)
        endings: dict[str, list[bool]] = {limited: [], own: []}
        while (job := await queue.claim(wait=5)) is not None:
            endings[job.id].append(await queue.fail(job, "no"))
            if all(endings[job_id][-1:] == [True] for job_id in endings):
                break
        assert endings == {limited: [False, False, True], own: [True]}
        assert (await queue.get(limited)).max_attempts == 3
        assert (await queue.get(own)).max_attempts == 1


async def test_fail_without_retry_is_a_dead_letter_that_can_be_redriven_and_purged(
    broker: BrokerProcess, local_storage: Storage
) -> None:
    async with remote(broker) as queue:
        ids = await queue.push_many([Task(f"d{i}") for i in range(3)], queue="mail")
        kept = await queue.push(Task("alive"), queue="mail")
        for _ in ids:
            job = await queue.claim(queues=["mail"])
            assert job is not None
            assert await queue.fail(job, f"bounced {job.item.name}", retry=False) is True

        dead = await queue.dead_letters(queue="mail")
        assert [(j.id, j.status, j.attempts, j.last_error) for j in dead] == [
            (job_id, "dead", 1, f"bounced d{i}") for i, job_id in enumerate(ids)
        ]
        assert await queue.dead_letters(queue="elsewhere") == []
        page = await queue.dead_letters(limit=2)
        assert [j.id for j in page] == ids[:2]
        assert [j.id for j in await queue.dead_letters(after=ids[1])] == [ids[2]]
        assert (await queue.stats()).dead == 3

        assert await queue.redrive([ids[0]]) == [ids[0]]
        redriven = await queue.get(ids[0])
        assert (redriven.status, redriven.attempts) == ("ready", 0)
        assert [j.id for j in await queue.dead_letters()] == ids[1:]

        assert sorted(await queue.purge(queue="mail")) == sorted(ids[1:])
        assert await queue.dead_letters() == []
        assert (await queue.stats()).dead == 0
        # Every other job is untouched: the redriven one and the live one are claimable.
        claimed = await queue.claim_many(5, queues=["mail"])
        assert [job.id for job in claimed] == [ids[0], kept]
        assert claimed[0].attempts == 1
    assert broker.terminate() == 0, broker.text
    archive = await archive_of(local_storage)
    for job_id in ids[1:]:
        assert archive[job_id]["status"] == "dead"
        assert archive[job_id]["last_error"].startswith("bounced")


async def test_a_payload_that_does_not_decode_is_dead_lettered_and_the_claim_moves_on(
    broker: BrokerProcess,
) -> None:
    async with Worker(broker.address) as raw, remote(broker) as queue:
        bad = await raw.push(b"not json")
        wrong_shape = await raw.push(b'{"title": "no name"}')
        good = await queue.push(Task("fine"))
        job = await queue.claim()
        assert job is not None
        assert (job.id, job.item) == (good, Task("fine"))
        for job_id in (bad, wrong_shape):
            info = await queue.get(job_id)
            assert info.status == "dead"
            assert info.last_error is not None
            assert "does not decode into Task" in info.last_error
        assert await queue.claim() is None


# -- release, cancel, complete ---------------------------------------------------------


async def test_a_released_job_goes_back_without_counting_an_attempt(
    broker: BrokerProcess,
) -> None:
    async with remote(broker) as queue:
        first = await queue.push(Task("first"))
        await queue.push(Task("second"))
        job = await queue.claim()
        assert job is not None
        assert (job.id, job.attempts) == (first, 1)
        await queue.release(job)
        assert (await queue.get(first)).status == "ready"
        again = await queue.claim()
        assert again is not None
        assert (again.id, again.attempts) == (first, 1)  # its place, and no attempt used


async def test_cancelling_a_ready_or_delayed_job_takes_effect_at_once(
    broker: BrokerProcess, local_storage: Storage
) -> None:
    async with remote(broker) as queue:
        ready = await queue.push(Task("ready"))
        delayed = await queue.push(Task("delayed"), delay=60)
        assert await queue.cancel(ready) is True
        assert await queue.cancel(delayed) is True
        assert await queue.claim() is None
        assert (await queue.stats()).delayed == 0
    assert broker.terminate() == 0, broker.text
    archive = await archive_of(local_storage)
    assert (archive[ready]["status"], archive[delayed]["status"]) == ("cancelled", "cancelled")


async def test_cancelling_a_claimed_job_stops_its_handler_and_ends_it_cancelled(
    broker: BrokerProcess, local_storage: Storage
) -> None:
    async with (
        remote(broker, heartbeat_interval=0.05) as worker,
        remote(broker) as operator,
    ):
        job_id = await operator.push(Task("long"))
        job = await worker.claim()
        assert job is not None
        reached_the_end = False

        async def work_on_it() -> None:
            nonlocal reached_the_end
            async with worker.processing(job):
                assert await operator.cancel(job_id) is False  # claimed: marked only
                assert (await operator.get(job_id)).cancel_requested
                await anyio.sleep_forever()  # the work, stopped by the next heartbeat
                reached_the_end = True

        with anyio.fail_after(10), pytest.raises(JobCancelled) as cancelled:
            await work_on_it()
        assert cancelled.value.job_id == job_id
        assert not reached_the_end
        assert await worker.claim() is None  # never retried
    assert broker.terminate() == 0, broker.text
    assert (await archive_of(local_storage))[job_id]["status"] == "cancelled"


async def test_a_heartbeat_raises_job_cancelled(broker: BrokerProcess) -> None:
    async with remote(broker) as queue:
        job_id = await queue.push(Task("x"))
        job = await queue.claim()
        assert job is not None
        await queue.cancel(job_id)
        with pytest.raises(JobCancelled):
            await queue.heartbeat(job)
        # The worker gives it up: a failure (with retry) still ends it cancelled.
        assert await queue.fail(job, "stopping") is True
        assert await queue.claim() is None


async def test_complete_keeps_the_result_in_the_archive_record(
    broker: BrokerProcess, local_storage: Storage
) -> None:
    async with remote(broker) as queue:
        with_result = await queue.push(Task("answer"))
        empty_result = await queue.push(Task("empty"))
        no_result = await queue.push(Task("nothing"))
        for result in (b"\x00forty-two\xff", b"", None):
            job = await queue.claim()
            assert job is not None
            await queue.complete(job, result)
    assert broker.terminate() == 0, broker.text
    archive = await archive_of(local_storage)
    assert base64.b64decode(archive[with_result]["result"]) == b"\x00forty-two\xff"
    assert archive[empty_result]["result"] == ""  # present, and empty
    assert "result" not in archive[no_result]
    assert {archive[i]["status"] for i in (with_result, empty_result, no_result)} == {"completed"}


# -- looking at jobs and queues --------------------------------------------------------


async def test_get_describes_a_job_in_each_state(broker: BrokerProcess) -> None:
    async with remote(broker, worker_id="holder-1") as queue:
        job_id = await queue.push(Task("x"), queue="q", priority=-2, key="the-key")
        info = await queue.get(job_id)
        assert info == JobInfo(
            id=job_id,
            queue="q",
            priority=-2,
            status="ready",
            attempts=0,
            max_attempts=3,
            created_at=info.created_at,
            run_at=None,
            last_error=None,
            holder=None,
            key="the-key",
        )
        assert abs(info.created_at - time.time()) < 60
        job = await queue.claim(queues=["q"])
        assert job is not None
        claimed = await queue.get(job_id)
        assert (claimed.status, claimed.holder, claimed.attempts) == ("claimed", "holder-1", 1)
        with pytest.raises(JobNotFound) as unknown:
            await queue.get("no-such-job")
        assert unknown.value.job_id == "no-such-job"


async def test_stats_per_queue(broker: BrokerProcess) -> None:
    async with remote(broker) as queue:
        await queue.push_many([Task("a1"), Task("a2")], queue="a")
        await queue.push(Task("a-later"), queue="a", delay=60)
        await queue.push_many([Task("b1"), Task("b2")], queue="b")
        job = await queue.claim(queues=["b"])
        assert job is not None
        doomed = await queue.claim(queues=["b"])
        assert doomed is not None
        await queue.fail(doomed, retry=False)

        by_name = {info.queue: info for info in await queue.queue_stats()}
        assert sorted(by_name) == ["a", "b"]
        a, b = by_name["a"], by_name["b"]
        assert (a.ready, a.delayed, a.claimed, a.dead) == (2, 1, 0, 0)
        assert a.oldest_ready_age is not None
        assert 0 <= a.oldest_ready_age < 60
        assert b == QueueInfo("b", ready=0, delayed=0, claimed=1, dead=1, oldest_ready_age=None)
        stats = await queue.stats()
        assert (stats.ready, stats.delayed, stats.claimed, stats.dead) == (2, 1, 1, 1)
        assert [attrs.evolve(q, oldest_ready_age=None) for q in stats.queues] == [
            attrs.evolve(by_name[name], oldest_ready_age=None) for name in ("a", "b")
        ]


def test_the_blocking_twin_works_the_same_way(broker: BrokerProcess) -> None:
    with BlockingRemoteQueue(broker.address, Task, heartbeat_interval=0.05) as queue:
        job_id = queue.push(Task("sync"), priority=3, key="s")
        assert queue.push_many([Task("sync")], keys=["s"]) == [job_id]
        job = queue.claim(wait=1)
        assert job is not None
        assert (job.id, job.item, job.priority) == (job_id, Task("sync"), 3)
        with queue.processing(job) as lease:
            assert not lease.lost
        assert queue.claim_many(2) == []
        assert queue.stats().claimed == 0  # completed on leaving the block
        queue.push(Task("waiting"), queue="other")
        assert [(info.queue, info.ready) for info in queue.queue_stats()] == [("other", 1)]
