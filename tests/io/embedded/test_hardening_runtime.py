"""Hardening of the anyio runtime: wall-clock steps, a cancelled open, backpressure, and
the blocking queue's ``stats()``.

Each test names the hole it guards and what it looked like before the fix.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import anyio
import pytest

from osqueue_core import (
    BrokerConfig,
    Claim,
    Claimed,
    Complete,
    Heartbeat,
    LeaseExtended,
    Overloaded,
    Push,
    Pushed,
    archive_bucket,
)
from osqueue_io import BrokerRuntime, EmbeddedQueue, open_store
from osqueue_io.storage import Faults, FaultyStore, ObjectStore, keys_under
from osqueue_io.sync import EmbeddedQueue as BlockingQueue

from .hardening import only_state, read_state

pytestmark = pytest.mark.anyio


async def push(runtime: BrokerRuntime, payload: bytes) -> str:
    result = await runtime.request(Push(runtime.new_request_id(), payload))
    assert isinstance(result, Pushed)
    return result.job_id


async def test_wall_clock_steps_move_stamps_but_never_timers() -> None:
    """Hole 3: timers ran on ``time.time``, so a wall clock stepped back an hour made a
    failed write's retry wait 3,600 s, and one stepped forward expired every lease. Now
    the runtime's timers run on ``clock`` (monotonic by default) and ``wall_clock`` only
    stamps jobs and picks archive buckets. Here the wall clock steps back an hour while
    a failed write waits for its retry (the push must still be acknowledged), then
    forward a day (the claimed job must keep its lease)."""
    offset = 0.0

    def wall() -> float:
        return time.time() + offset

    store = FaultyStore(open_store("memory://"), Faults(), seed=1)
    # The retry waits 0.3 s on the runtime's clock: time to step the wall clock first.
    config = BrokerConfig(heartbeat_timeout=60, retry_initial=0.3, retry_max=0.3)
    async with BrokerRuntime(store, config, wall_clock=wall) as runtime:
        # Each job's created_at must lie between the wall clock's readings around the
        # moment its push was applied.
        expected: dict[str, tuple[float, float]] = {}

        async def stamped_push(payload: bytes) -> str:
            low = wall()
            job_id = await push(runtime, payload)
            expected[job_id] = (low, wall())
            return job_id

        first = await stamped_push(b"first")
        claimed = await runtime.request(Claim(runtime.new_request_id(), "w1"))
        assert isinstance(claimed, Claimed)
        assert claimed.job_id == first

        store.faults = Faults(write_not_applied=1.0)
        retried: list[str] = []
        with anyio.fail_after(10):  # hang guard: a retry timed on the stepped clock never comes
            async with anyio.create_task_group() as tasks:

                async def push_through_a_failed_write() -> None:
                    retried.append(await push(runtime, b"written by a retry"))

                applied_at = wall()
                tasks.start_soon(push_through_a_failed_write)
                await runtime.wait_until(lambda s: s.last_storage_error != "")
                applied_by = wall()  # the push was applied before its write failed
                offset = -3600.0  # the wall clock steps back an hour before the retry
                store.faults = Faults()
        assert store.counters["write_not_applied"] >= 1
        expected[retried[0]] = (applied_at, applied_by)
        await stamped_push(b"an hour back")

        offset = 86400.0  # ... and forward a day
        await stamped_push(b"a day ahead")
        assert runtime.stats().claimed == 1, "the lease survived the step"
        extended = await runtime.request(Heartbeat(runtime.new_request_id(), first, "w1"))
        assert isinstance(extended, LeaseExtended)
        assert extended.lease_deadline > runtime.now()
        low = wall()
        await runtime.request(Complete(runtime.new_request_id(), first, "w1"))
        high = wall()
        with anyio.fail_after(10):
            await runtime.wait_until(lambda s: s.finished_pending_archive == 0)

    state = await read_state(store.inner)
    created = {job.id: job.created_at for job in state.jobs}
    assert set(created) == set(expected) - {first}
    for job_id, at in created.items():
        assert expected[job_id][0] <= at <= expected[job_id][1], "created_at follows the wall"
    buckets = {archive_bucket(at, config.archive_bucket_format) for at in (low, high)}
    keys = await store.inner.list("archive")
    assert len(keys) == 1
    assert keys[0].split("/")[1] in buckets, "the archive bucket follows the wall clock"


@pytest.mark.parametrize("slow", ["state read", "epoch marker"])
@pytest.mark.parametrize("shell", ["BrokerRuntime", "EmbeddedQueue"])
async def test_an_open_cancelled_over_slow_storage_leaves_nothing_running(
    slow: str, shell: str
) -> None:
    """Hole 4: cancelling ``open()`` (``move_on_after`` around ``async with``) over slow
    storage leaked the runtime's task group: ``RuntimeError: Attempted to exit a cancel
    scope that isn't the current task's current cancel scope`` escaped, and its tasks
    (the core loop, a storage call) kept running. Now only the cancellation is seen, the
    scope reports it, no task is left behind, and another broker opens on the same
    storage and takes over."""
    inner = open_store("memory://")
    async with EmbeddedQueue(inner, str) as first:
        job_id = await first.push("kept")
        first_epoch = first.stats().epoch
    keys = only_state if slow == "state read" else keys_under("epochs")
    slow_store = FaultyStore(inner, Faults(latency=3600, keys=keys), seed=0)
    before = asyncio.all_tasks()
    with anyio.fail_after(10):  # hang guard
        with anyio.move_on_after(0.2) as scope:
            if shell == "BrokerRuntime":
                async with BrokerRuntime(slow_store):
                    pytest.fail("the takeover cannot finish over this storage")
            else:
                async with EmbeddedQueue(slow_store, str):
                    pytest.fail("the takeover cannot finish over this storage")
    assert scope.cancelled_caught
    assert slow_store.counters["delayed"] >= 1, "the open was waiting on slow storage"
    assert asyncio.all_tasks() == before, "no task of the cancelled open is left running"
    async with EmbeddedQueue(inner, str) as second:
        assert second.stats().epoch > first_epoch
        job = await second.claim("w")
        assert job is not None
        assert job.id == job_id


# A slow state object: writes take a while, so requests pile up behind each one.
SLOW_STATE = Faults(latency=0.02, keys=only_state)
ONE_AT_A_TIME = BrokerConfig(max_queued_commands=1, max_batch_ops=1)


async def push_concurrently(runtime: BrokerRuntime, count: int) -> list[str | Overloaded]:
    outcomes: list[str | Overloaded] = []

    async def one(i: int) -> None:
        try:
            outcomes.append(await push(runtime, b"job %d" % i))
        except Overloaded as error:
            outcomes.append(error)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            for i in range(count):
                tasks.start_soon(one, i)
    return outcomes


async def stored_ids(store: ObjectStore) -> set[str]:
    return {job.id for job in (await read_state(store)).jobs}


@pytest.mark.parametrize("max_pending", [None, 2])
async def test_requests_beyond_max_pending_requests_wait_their_turn(
    max_pending: int | None,
) -> None:
    """Hole 5: there was no backpressure: every request went into the core at once.
    Now at most ``max_pending_requests`` (by default ``max_queued_commands``) requests
    are in the core; the others wait their turn, so with one command allowed to queue
    and one per write, 20 concurrent pushes all succeed."""
    store = FaultyStore(open_store("memory://"), SLOW_STATE, seed=0)
    async with BrokerRuntime(store, ONE_AT_A_TIME, max_pending_requests=max_pending) as runtime:
        outcomes = await push_concurrently(runtime, 20)
    assert not [o for o in outcomes if isinstance(o, Overloaded)]
    assert len(set(outcomes)) == 20
    assert await stored_ids(store.inner) == set(outcomes)


async def test_commands_beyond_max_queued_commands_are_refused_overloaded() -> None:
    """Hole 5: the core's bound is real. Let in at once (a large
    ``max_pending_requests``), commands beyond ``max_queued_commands`` waiting for room
    in a batch get ``Overloaded`` (retryable, RESOURCE_EXHAUSTED) and are not applied."""
    store = FaultyStore(open_store("memory://"), SLOW_STATE, seed=0)
    async with BrokerRuntime(store, ONE_AT_A_TIME, max_pending_requests=100) as runtime:
        outcomes = await push_concurrently(runtime, 20)
    refused = [o for o in outcomes if isinstance(o, Overloaded)]
    acked = [o for o in outcomes if isinstance(o, str)]
    assert refused
    assert acked
    assert all(error.retryable for error in refused)
    assert {error.grpc_status for error in refused} == {"RESOURCE_EXHAUSTED"}
    assert await stored_ids(store.inner) == set(acked), "refused pushes were not applied"


async def test_claims_waiting_beyond_max_waiting_claims_are_refused_overloaded() -> None:
    """Hole 5: waiting claims were unbounded. Now one beyond ``max_waiting_claims`` gets
    ``Overloaded`` at once, while the ones waiting still get jobs."""
    config = BrokerConfig(max_waiting_claims=2)
    async with EmbeddedQueue("memory://", str, config=config) as queue:
        got: list[str] = []

        async def wait_for_a_job(worker: str) -> None:
            job = await queue.claim(worker, wait=30)
            assert job is not None
            got.append(job.id)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(wait_for_a_job, "w1")
                tasks.start_soon(wait_for_a_job, "w2")
                await queue.runtime.wait_until(lambda s: s.waiting_claims == 2)
                with pytest.raises(Overloaded):
                    await queue.claim("w3", wait=30)
                assert await queue.claim("w4") is None, "a claim that does not wait is fine"
                pushed = [await queue.push("a"), await queue.push("b")]
        assert sorted(got) == sorted(pushed)


def test_blocking_stats_read_the_broker_on_the_event_loop_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hole 10: the blocking queue's ``stats()`` read the core from the caller's thread,
    racing the event loop that changes it. Now it goes through the portal. A spy on the
    runtime's ``stats`` records the thread of every read (there is no other way to see
    which thread touched the broker); snapshots taken from several threads while pushes
    flow are consistent (the queue only grows)."""
    pushes, readers = 60, 4
    with BlockingQueue("memory://", str) as queue:
        runtime = queue.async_queue.runtime
        loop_thread = queue.portal.call(threading.current_thread)
        read_on: list[threading.Thread] = []
        original: Callable[[], object] = runtime.stats

        def spy() -> object:
            read_on.append(threading.current_thread())
            return original()

        monkeypatch.setattr(runtime, "stats", spy)
        seen: dict[int, list[tuple[int, int]]] = {n: [] for n in range(readers)}
        pushed: list[str] = []
        stop = threading.Event()

        def publish() -> None:
            try:
                pushed.extend(queue.push(f"job {i}") for i in range(pushes))
            finally:
                stop.set()

        def watch(n: int) -> None:
            while not stop.is_set():
                stats = queue.stats()
                seen[n].append((stats.revision, stats.ready))

        threads = [threading.Thread(target=publish)]
        threads += [threading.Thread(target=watch, args=(n,)) for n in range(readers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
        final = queue.stats()
    assert len(pushed) == pushes
    assert final.ready == pushes
    assert read_on, "stats() went through the runtime"
    assert set(read_on) == {loop_thread}, "the broker was read only on its event loop thread"
    for snapshots in seen.values():
        revisions = [revision for revision, _ in snapshots]
        readies = [ready for _, ready in snapshots]
        assert revisions == sorted(revisions), "the revision never goes back"
        assert readies == sorted(readies), "with only pushes, the queue never shrinks"
        assert all(ready <= pushes for ready in readies)
