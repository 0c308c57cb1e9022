"""One test body, both clients: every lifecycle operation through the shared
``JobQueue`` API, against the embedded queue and against a real broker subprocess
reached with ``RemoteQueue``. Code written against one client runs against the other."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from osqueue_core import (
    BrokerConfig,
    InvalidArgument,
    JobCancelled,
    JobNotDead,
    JobNotFound,
    LeaseLost,
    PayloadTooLarge,
    RetryPolicy,
)
from osqueue_io import EmbeddedQueue, RemoteQueue, open_store
from osqueue_io.client import ClaimedJob, JobQueue
from tests.io.archive import archived_records
from tests.io.distributed.conftest import BrokerProcess

pytestmark = pytest.mark.anyio

# Long enough that a loaded machine never lets a lease run out between a claim and
# its complete (nothing here waits for an expiry); short enough for quick heartbeats.
LEASE = 5.0
POLICY = RetryPolicy(base=0.2, cap=0.4, max_attempts=3)
CONFIG = BrokerConfig(heartbeat_timeout=LEASE, retry=POLICY)
BROKER_FLAGS = (
    "--heartbeat-timeout",
    f"{LEASE}s",
    "--retry-base",
    str(POLICY.base),
    "--retry-cap",
    str(POLICY.cap),
    "--max-attempts",
    str(POLICY.max_attempts),
)


@pytest.fixture(params=["embedded", "remote"])
async def client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobQueue[bytes]]:
    data = str(tmp_path / "queue")
    if request.param == "embedded":
        async with EmbeddedQueue(data, bytes, config=CONFIG, worker_id="w1") as queue:
            yield queue
        return

    broker = await anyio.to_thread.run_sync(lambda: BrokerProcess(data, *BROKER_FLAGS))
    try:
        async with RemoteQueue(broker.address, bytes, worker_id="w1") as remote:
            yield remote
    finally:
        broker.kill()


#: A claimed job handle for requests refused before they reach a job.
FAKE = ClaimedJob("no-such-job", b"", "w1", 1, LEASE, 0.0)


async def archived_record(data: Path, job_id: str) -> dict[str, Any]:
    """The archive record of ``job_id``, waiting (bounded) for the broker to write it:
    archive writes follow the acknowledgement."""
    store = open_store(str(data))
    try:
        with anyio.fail_after(10):
            while True:
                records = [r for r in await archived_records(store) if r["id"] == job_id]
                if records:
                    [record] = records
                    return record
                await anyio.sleep(0.02)
    finally:
        await store.aclose()


async def counts(client: JobQueue[bytes]) -> list[tuple[str, int, int, int, int]]:
    return [(q.queue, q.ready, q.delayed, q.claimed, q.dead) for q in await client.queue_stats()]


async def ready_ids(client: JobQueue[bytes], count: int, **options: Any) -> list[str]:
    jobs = await client.claim_many(count, **options)
    return [job.id for job in jobs]


async def test_priority_then_fifo_over_the_named_queues(client: JobQueue[bytes]) -> None:
    low = await client.push(b"low", queue="a", priority=-1)
    first = await client.push(b"first", queue="b")
    urgent = await client.push(b"urgent", queue="a", priority=7)
    second = await client.push(b"second", queue="a")
    elsewhere = await client.push(b"elsewhere", queue="c")
    stats = {q.queue: q for q in await client.queue_stats()}
    assert (stats["a"].ready, stats["b"].ready, stats["c"].ready) == (3, 1, 1)
    assert await ready_ids(client, 10, queues=["a", "b"]) == [urgent, first, second, low]
    job = await client.claim(queues=["c"])
    assert job is not None
    assert (job.id, job.item, job.queue, job.attempts) == (elsewhere, b"elsewhere", "c", 1)
    assert await client.claim(queues=["a", "b", "c"]) is None


async def test_a_delayed_job_is_invisible_until_due_and_wakes_a_waiting_claim(
    client: JobQueue[bytes],
) -> None:
    pushed_at = time.time()
    job_id = await client.push(b"later", delay=0.5)
    info = await client.get(job_id)
    assert info.status == "ready"
    assert info.run_at is not None
    assert info.run_at >= pushed_at + 0.5
    assert await client.claim() is None
    [stats] = await client.queue_stats()
    assert (stats.ready, stats.delayed) == (0, 1)
    with anyio.fail_after(10):
        job = await client.claim(wait=5)
    assert job is not None
    assert job.id == job_id
    assert time.time() >= info.run_at


async def test_an_idempotent_push_returns_the_first_job(client: JobQueue[bytes]) -> None:
    first = await client.push(b"a", key="order-17")
    assert await client.push(b"b", key="order-17") == first
    ids = await client.push_many([b"c", b"d", b"e"], keys=["order-17", "x", "x"])
    assert ids[0] == first
    assert ids[1] == ids[2] != first
    assert sum(q.ready for q in await client.queue_stats()) == 2
    job = await client.claim()
    assert job is not None
    await client.complete(job)
    assert await client.push(b"f", key="order-17") == first, "remembered after it finished"


async def test_retries_back_off_then_the_job_is_dead_then_redriven_and_purged(
    client: JobQueue[bytes],
) -> None:
    job_id = await client.push(b"flaky")
    for attempt in (1, 2, 3):
        with anyio.fail_after(10):
            job = await client.claim(wait=5)
        assert job is not None
        assert (job.id, job.attempts, job.max_attempts) == (job_id, attempt, 3)
        dead = await client.fail(job, f"boom {attempt}")
        assert dead is (attempt == 3)
        if not dead:
            info = await client.get(job_id)
            assert info.run_at is not None, "retried after a backoff"
            assert await client.claim() is None
    [letter] = await client.dead_letters()
    assert (letter.id, letter.attempts, letter.last_error) == (job_id, 3, "boom 3")
    with pytest.raises(JobNotDead):
        await client.redrive([await client.push(b"alive")])
    assert await client.redrive([job_id]) == [job_id]
    again = await client.claim()
    assert again is not None
    assert (again.id, again.attempts) == (job_id, 1)
    assert await client.fail(again, "give up", retry=False) is True
    assert await client.purge(queue="default") == [job_id]
    assert await client.dead_letters() == []
    with pytest.raises((JobNotFound, JobNotDead)):  # leaving for the archive, or gone
        await client.redrive([job_id])


async def test_a_jobs_own_max_attempts_and_release_that_does_not_count(
    client: JobQueue[bytes],
) -> None:
    job_id = await client.push(b"once", max_attempts=1)
    job = await client.claim()
    assert job is not None
    await client.release(job)
    again = await client.claim()
    assert again is not None
    assert (again.id, again.attempts, again.max_attempts) == (job_id, 1, 1)
    assert await client.fail(again, "no second chance") is True


async def test_cancel_a_waiting_job_at_once(client: JobQueue[bytes], tmp_path: Path) -> None:
    job_id = await client.push(b"never", delay=30)
    assert await client.cancel(job_id) is True
    assert await client.queue_stats() == []
    assert (await archived_record(tmp_path / "queue", job_id))["status"] == "cancelled"
    with pytest.raises(JobNotFound):
        await client.cancel("000000000999-9")


async def test_cancel_a_running_job_stops_its_handler(
    client: JobQueue[bytes], tmp_path: Path
) -> None:
    job_id = await client.push(b"long")
    job = await client.claim()
    assert job is not None
    assert await client.cancel(job_id) is False
    assert (await client.get(job_id)).cancel_requested
    with anyio.fail_after(10), pytest.raises(JobCancelled):
        async with client.processing(job):
            await anyio.sleep_forever()
    record = await archived_record(tmp_path / "queue", job_id)
    assert (record["status"], record["attempts"]) == ("cancelled", 1)
    assert await client.claim() is None


async def test_complete_with_a_result_and_claim_many(
    client: JobQueue[bytes], tmp_path: Path
) -> None:
    ids = await client.push_many([b"1", b"2", b"3"], queue="batch")
    jobs = await client.claim_many(2, queues=["batch"])
    assert [job.id for job in jobs] == ids[:2]
    await client.complete(jobs[0], result=b"\x00answer")
    await client.complete(jobs[1])
    with pytest.raises(PayloadTooLarge):
        await client.complete(jobs[1], result=b"x" * (CONFIG.max_result_bytes + 1))
    rest = await client.claim_many(5, queues=["batch"], wait=0.1)
    assert [job.id for job in rest] == ids[2:]
    record = await archived_record(tmp_path / "queue", ids[0])
    assert base64.b64decode(record["result"]) == b"\x00answer"


async def test_complete_many_commits_together_and_answers_each_job(
    client: JobQueue[bytes], tmp_path: Path
) -> None:
    ids = await client.push_many([b"1", b"2", b"3", b"4"], queue="many")
    jobs = await client.claim_many(4, queues=["many"])
    await client.complete(jobs[3])  # done already: a repeat is answered like the first
    outcomes = await client.complete_many(jobs, results=[b"\x00one", None, b"", None])
    assert outcomes == [None, None, None, None]
    assert await client.claim_many(5, queues=["many"]) == []
    record = await archived_record(tmp_path / "queue", ids[0])
    assert base64.b64decode(record["result"]) == b"\x00one"
    assert "result" not in await archived_record(tmp_path / "queue", ids[1])
    assert await client.complete_many([]) == []


async def test_complete_many_answers_a_lost_lease_for_its_job_only(
    client: JobQueue[bytes],
) -> None:
    await client.push_many([b"1", b"2"], queue="lost")
    mine, theirs = await client.claim_many(2, queues=["lost"])
    foreign = attrs.evolve(theirs, worker_id="w2")  # a worker that does not hold it
    gone = attrs.evolve(mine, id="no-such-job")
    outcomes = await client.complete_many([mine, foreign, gone])
    assert outcomes[0] is None
    assert isinstance(outcomes[1], LeaseLost)
    assert outcomes[1].job_id == theirs.id
    assert isinstance(outcomes[2], JobNotFound)
    assert outcomes[2].job_id == "no-such-job"
    too_big = b"x" * (CONFIG.max_result_bytes + 1)
    [refused] = await client.complete_many([theirs], results=[too_big])
    assert isinstance(refused, PayloadTooLarge)
    assert await client.complete_many([theirs]) == [None], "the refused one changed nothing"


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda c: c.push(b"x", delay=-1), InvalidArgument),
        (lambda c: c.push(b"x", queue="no spaces"), InvalidArgument),
        (lambda c: c.push(b"x", key="k" * 257), InvalidArgument),
        (lambda c: c.push(b"x", delay=1, run_at=time.time()), InvalidArgument),
        (lambda c: c.claim(queues=["bad/name"]), InvalidArgument),
        (lambda c: c.claim(queues="emails"), InvalidArgument),
        (lambda c: c.push_many([b"a", b"b"], keys="ab"), InvalidArgument),
        (lambda c: c.push_many([b"a", b"b"], keys=["a"]), InvalidArgument),
        (lambda c: c.claim_many(0), InvalidArgument),
        (lambda c: c.dead_letters(limit=0), InvalidArgument),
        (lambda c: c.complete_many([FAKE, FAKE]), InvalidArgument),
        (lambda c: c.complete_many([FAKE], results=b"x"), InvalidArgument),
        (lambda c: c.complete_many([FAKE], results=["text"]), InvalidArgument),
        (lambda c: c.complete_many([FAKE], results=[None, None]), InvalidArgument),
    ],
)
async def test_bad_input_is_a_typed_error_and_changes_nothing(
    client: JobQueue[bytes], call: Callable[[Any], Any], error: type[Exception]
) -> None:
    await client.push(b"keep")
    before = await counts(client)
    with pytest.raises(error):
        await call(client)
    assert await counts(client) == before
