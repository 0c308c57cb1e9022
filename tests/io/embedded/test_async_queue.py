"""The async EmbeddedQueue on memory, local-filesystem and moto-S3 storage."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import pytest

from osqueue_core import (
    BrokerConfig,
    BrokerNotRunning,
    BrokerStopping,
    LeaseLost,
    decode_state,
)
from osqueue_io import EmbeddedQueue, Lease, open_store
from osqueue_io.keepalive import keep_alive
from tests.io.archive import archived_ids, archived_records

from .conftest import Storage
from .hardening import stored_jobs

pytestmark = pytest.mark.anyio

FAST = BrokerConfig(heartbeat_timeout=0.5, retry_initial=0.01, retry_max=0.1)


@attrs.frozen
class Task:
    name: str
    priority: int = 0


@dataclasses.dataclass(frozen=True)
class Note:
    text: str


def queue(storage: Storage, item_type: Any, config: BrokerConfig = FAST) -> EmbeddedQueue[Any]:
    return EmbeddedQueue(storage.url, item_type, config=config, storage_options=storage.options)


@pytest.mark.parametrize(
    ("item_type", "item"),
    [(Task, Task("build", 3)), (Note, Note("hi")), (dict, {"a": [1, 2]}), (bytes, b"\x00raw")],
)
async def test_round_trip_typed_items(storage: Storage, item_type: Any, item: Any) -> None:
    async with queue(storage, item_type) as q:
        job_id = await q.push(item)
        job = await q.claim("w1")
        assert job is not None
        assert (job.id, job.item, job.attempts) == (job_id, item, 1)
        assert 0 < await q.heartbeat(job) <= FAST.heartbeat_timeout
        await q.complete(job)
        assert await q.claim("w1") is None
        assert q.stats().ready == 0


async def test_many_producers_and_consumers_complete_each_job_once(storage: Storage) -> None:
    total, producers, consumers = 120, 4, 4
    done: Counter[str] = Counter()
    async with queue(storage, Task, BrokerConfig(heartbeat_timeout=30)) as q:
        pushed: list[str] = []

        async def produce(n: int) -> None:
            for i in range(total // producers):
                pushed.append(await q.push(Task(f"p{n}-{i}")))

        async def consume(worker: str) -> None:
            while sum(done.values()) < total:
                job = await q.claim(worker, wait=0.2)
                if job is not None:
                    async with q.processing(job):
                        done[job.id] += 1

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tasks:
                for n in range(producers):
                    tasks.start_soon(produce, n)
                for n in range(consumers):
                    tasks.start_soon(consume, f"w{n}")
        assert sorted(done) == sorted(pushed)
        assert set(done.values()) == {1}
        store = q.runtime.store
        # Archive writes run after the acks: wait for the broker to drop them all.
        with anyio.fail_after(10):
            await q.runtime.wait_until(lambda s: s.finished_pending_archive == 0)
        assert sorted(await archived_ids(store)) == sorted(pushed)


async def test_missed_heartbeat_reclaims_the_job(storage: Storage) -> None:
    async with queue(storage, Task) as q:
        job_id = await q.push(Task("slow"))
        first = await q.claim("w1")
        assert first is not None
        # w1 goes silent; w2's waiting claim gets the job once the lease expires.
        with anyio.fail_after(10):
            again = await q.claim("w2", wait=5)
        assert again is not None
        assert (again.id, again.attempts) == (job_id, 2)
        with pytest.raises(LeaseLost):
            await q.complete(first)
        await q.complete(again)


async def test_auto_heartbeat_keeps_a_slow_job(storage: Storage) -> None:
    async with queue(storage, Task) as q:
        await q.push(Task("slow"))
        job = await q.claim("w1")
        assert job is not None
        async with q.processing(job) as lease:
            await anyio.sleep(3 * FAST.heartbeat_timeout)  # the work outlives a lease
            assert await q.claim("w2") is None, "the job must not be handed out again"
        assert lease.heartbeats >= 3
        assert not lease.lost
        assert q.stats().claimed == 0


async def test_lease_loss_cancels_the_block_and_is_raised(storage: Storage) -> None:
    async with queue(storage, Task) as q:
        await q.push(Task("contested"))
        job = await q.claim("w1")
        assert job is not None
        reached_end = False
        leases = []

        async def work() -> None:
            nonlocal reached_end
            async with q.keep_alive(job) as lease:
                leases.append(lease)
                # Someone else gives the job back (an operator, a bug): the next
                # heartbeat learns that w1 lost it, and the block is cancelled.
                await q.fail(job, "taken away")
                await anyio.sleep_forever()
                reached_end = True

        with anyio.fail_after(10), pytest.raises(LeaseLost):
            await work()
        assert leases[0].lost
        assert not reached_end


async def test_processing_fails_and_requeues_on_error(storage: Storage) -> None:
    async with queue(storage, Task) as q:
        job_id = await q.push(Task("flaky"))
        job = await q.claim("w1")
        assert job is not None
        with pytest.raises(ZeroDivisionError):
            async with q.processing(job):
                _ = 1 / 0
        info = await q.get(job_id)
        assert (info.status, info.attempts) == ("ready", 1)
        assert info.last_error is not None
        assert "ZeroDivisionError" in info.last_error
        assert info.run_at is not None, "retried after a backoff, not at once"
        with anyio.fail_after(10):
            again = await q.claim("w2", wait=5)
        assert again is not None
        assert (again.id, again.attempts) == (job_id, 2)


async def test_claim_waits_for_a_push_and_gives_up_after_wait(storage: Storage) -> None:
    async with queue(storage, Task) as q:
        assert await q.claim("w1", wait=0.2) is None
        got: list[Any] = []

        async def waiter() -> None:
            got.append(await q.claim("w1", wait=30))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(waiter)
                # Only push once the claim is registered with the broker.
                await q.runtime.wait_until(lambda s: s.waiting_claims == 1)
                job_id = await q.push(Task("late"))
        assert got[0] is not None
        assert got[0].id == job_id


async def test_cancelled_waiting_claim_is_withdrawn(storage: Storage) -> None:
    async with queue(storage, Task) as q:
        with anyio.move_on_after(0.1):
            await q.claim("w1", wait=30)
        # Inputs reach the broker in order: by the time the push is acknowledged the
        # withdrawal was processed, so the job was not granted to the vanished caller.
        await q.push(Task("for someone else"))
        assert q.stats().waiting_claims == 0
        job = await q.claim("w2")
        assert job is not None


async def test_shutdown_with_requests_in_flight_answers_every_one(storage: Storage) -> None:
    outcomes: list[object] = []

    async with queue(storage, Task) as q:
        runtime = q.runtime

        async def push(i: int) -> None:
            try:
                outcomes.append(await q.push(Task(f"t{i}")))
            except (BrokerStopping, BrokerNotRunning) as error:
                outcomes.append(error)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tasks:
                for i in range(200):
                    tasks.start_soon(push, i)
                await anyio.lowlevel.checkpoint()  # let some pushes in before the shutdown starts
                await q.stop()
                tasks.start_soon(push, 200)  # arrives after the stop: refused, not hung
    assert len(outcomes) == 201, "every request got an answer, none hung"
    assert isinstance(outcomes[-1], BrokerStopping | BrokerNotRunning)
    acked = [o for o in outcomes if isinstance(o, str)]
    assert acked, "requests accepted before the stop were completed"
    # Everything acknowledged is in the released state.
    if storage.url != "memory://":
        store = open_store(storage.url, **storage.options)
        found = await store.read("state.json")
        assert found is not None
        state = decode_state(found.data)
        assert state.header.owner.released
        assert set(acked) <= {j.id for j in await stored_jobs(store, state)}
        await store.aclose()
    assert runtime.broker_phase.value == "stopped"


async def test_undecodable_payload_is_dead_lettered_not_looped(tmp_path: Any) -> None:
    path = str(tmp_path / "q")
    async with EmbeddedQueue(path, bytes, config=FAST) as raw:
        bad = await raw.push(b"not json at all")
    async with EmbeddedQueue(path, Task, config=FAST) as typed:
        good = await typed.push(Task("fine"))
        job = await typed.claim("w1")
        assert job is not None
        assert job.id == good, "the bad job was skipped"
        await typed.complete(job)
        [letter] = await typed.dead_letters()
        assert letter.id == bad
        assert letter.last_error is not None
        assert "does not decode into Task" in letter.last_error
        assert await typed.purge([bad]) == [bad]
        with anyio.fail_after(10):
            await typed.runtime.wait_until(lambda s: s.finished_pending_archive == 0)
        records = await archived_records(typed.runtime.store)
        dead = [r for r in records if r["id"] == bad]
        assert dead[0]["status"] == "dead"
        assert "does not decode into Task" in dead[0]["last_error"]


async def test_lease_is_counted_from_the_claim_not_from_the_block(storage: Storage) -> None:
    """A worker cut off from the broker must give the job up by the broker's deadline,
    even when it started heartbeating late: otherwise two workers would hold it."""
    config = BrokerConfig(heartbeat_timeout=1.0)
    async with queue(storage, Task, config) as q:
        await q.push(Task("queued locally first"))
        job = await q.claim("w1")
        assert job is not None
        await anyio.sleep(0.6)  # the job sat in a local work queue before processing

        async def partitioned() -> None:  # heartbeats cannot get through
            raise BrokerNotRunning("unreachable")

        async with q.keep_alive(job) as lease:
            anchor = lease.expires_at
        assert anchor < time.monotonic() + 0.5, "the lease is counted from the claim"
        cut_off: list[Lease] = []

        async def hold() -> None:
            async with keep_alive(
                job.id, "w1", partitioned, interval=0.3, lease_timeout=1.0, expires_at=anchor
            ) as lease:
                cut_off.append(lease)
                await anyio.sleep_forever()

        async def cut_off_worker() -> None:
            with pytest.raises(LeaseLost):
                await hold()

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(cut_off_worker)
                other = await q.claim("w2", wait=5)  # granted once w1's lease expired
                # At the moment w2 holds the job, w1 has already let it go.
                assert cut_off[0].lost
        assert other is not None
        assert other.id == job.id


async def test_push_many_lands_together_in_order(storage: Storage) -> None:
    async with queue(storage, Task) as q:
        before = q.stats().revision
        ids = await q.push_many([Task("a"), Task("b"), Task("c")])
        assert q.stats().revision == before + 1, "one state write for the whole batch"
        claimed = [await q.claim("w") for _ in ids]
        assert [job.id for job in claimed if job] == ids
        assert [job.item.name for job in claimed if job] == ["a", "b", "c"]


async def test_keep_alive_survives_a_late_start_and_a_long_interval() -> None:
    """The local deadline passed before the first beat (a late long-poll grant), and the
    configured interval is longer than the lease: heartbeats that succeed keep it."""
    beats = 0

    async def heartbeat() -> None:
        nonlocal beats
        beats += 1

    async with keep_alive(
        "job",
        "w1",
        heartbeat,
        interval=10.0,  # longer than the lease
        lease_timeout=0.4,
        expires_at=time.monotonic() - 1,  # already "expired" locally
    ) as lease:
        await anyio.sleep(1.5)
    assert not lease.lost
    assert beats >= 3
