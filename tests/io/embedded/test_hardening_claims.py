"""Hardening of claims and answers: a claim whose caller left, and a repeated
Complete/Fail after the job was archived.

Each test names the hole it guards and what it looked like before the fix. The claim
tests hold the claim's state write in flight at a :class:`Gate` (a ``sleep`` for
FaultyStore the test opens and closes), so each window is hit by construction, not by
timing; the lease is 60 s and every wait is bounded well below it.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import attrs
import pytest

from osqueue_core import (
    BrokerConfig,
    Claim,
    Claimed,
    Complete,
    Completed,
    JobNotFound,
    LeaseLost,
    Push,
    Pushed,
)
from osqueue_io import BrokerRuntime, EmbeddedQueue, open_store

from .conftest import Storage
from .hardening import STATE_KEY, AfterWriteStore, Gate, gated_store

pytestmark = pytest.mark.anyio

LONG_LEASE = BrokerConfig(heartbeat_timeout=60, stall_timeout=60, retry_initial=0.01, retry_max=0.1)
# Far below the lease: a job that comes back within it was taken back, not expired.
WELL_BEFORE_THE_LEASE_ENDS = 5.0


def gated_queue(gate: Gate) -> EmbeddedQueue[str]:
    """A queue in memory whose state writes wait at ``gate`` while it is closed."""
    return EmbeddedQueue(gated_store(open_store("memory://"), gate), str, config=LONG_LEASE)


class CancellableClaim:
    """A claim running in its own task under a cancel scope the test cancels."""

    def __init__(self, queue: EmbeddedQueue[Any], worker: str) -> None:
        self.queue = queue
        self.worker = worker
        self.scope = anyio.CancelScope()
        self.left = anyio.Event()
        self.results: list[object] = []

    async def run(self) -> None:
        try:
            with self.scope:
                self.results.append(await self.queue.claim(self.worker))
        finally:
            self.left.set()

    async def leave(self) -> None:
        """Cancel the claim and wait until its task has ended: by then its withdrawal
        is in the broker's inputs."""
        self.scope.cancel()
        await self.left.wait()
        assert self.scope.cancelled_caught
        assert self.results == []


async def next_claim_gets_it_back(queue: EmbeddedQueue[str], job_id: str) -> None:
    """The next claim gets ``job_id`` well before its lease would have ended, and the
    claim whose caller left did not count as an attempt."""
    again = await queue.claim("w2", wait=WELL_BEFORE_THE_LEASE_ENDS)
    assert again is not None, "the job is still held for the caller that left"
    assert (again.id, again.attempts) == (job_id, 1)


async def test_a_claim_cancelled_while_its_write_is_in_flight_is_taken_back() -> None:
    """Hole 6: a granted claim whose caller left held its job until the lease expired
    and used up an attempt. Now a claim cancelled while its grant's write is on its way
    is taken back once that write lands: the next claim gets the same job at once, with
    ``attempts == 1``."""
    gate = Gate()
    async with gated_queue(gate) as q:
        job_id = await q.push("only job")
        gate.close()
        claim = CancellableClaim(q, "w1")
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(claim.run)
                await gate.wait_held()  # the grant's write is on its way, held at the gate
                assert q.stats().claimed == 1
                await claim.leave()
                gate.open()  # the write lands after the withdrawal reached the broker
            await next_claim_gets_it_back(q, job_id)


async def test_a_claim_cancelled_before_its_batch_is_written_is_undone_at_once() -> None:
    """Hole 6, earlier window: the grant is still in the open batch (another write is in
    flight). It is undone at once, with no write: the job is ready again while the gate
    still holds the other write, and the next claim gets it with ``attempts == 1``."""
    gate = Gate()
    async with gated_queue(gate) as q:
        job_id = await q.push("first")
        gate.close()
        claim = CancellableClaim(q, "w1")
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(q.push, "second")  # its write is held at the gate
                await gate.wait_held()
                tasks.start_soon(claim.run)
                await q.runtime.wait_until(lambda s: s.claimed == 1)
                await claim.leave()
                await q.runtime.wait_until(lambda s: s.claimed == 0 and s.ready == 2)
                assert gate.held == 1, "taken back without a write"
                gate.open()
            await next_claim_gets_it_back(q, job_id)


async def runtime_push(runtime: BrokerRuntime, payload: bytes) -> str:
    result = await runtime.request(Push(runtime.new_request_id(), payload))
    assert isinstance(result, Pushed)
    return result.job_id


async def test_a_claim_whose_caller_left_as_its_reply_arrived_is_handed_back() -> None:
    """Hole 6, last window: the grant's write landed and the reply reached the runtime,
    but its caller had been cancelled meanwhile. The runtime hands the job back with
    ``Release``. To hit the window, the store calls back the moment the claim's write
    has landed, and the runtime's clock, on its next reading (the core task starting to
    handle that write's result), cancels the caller: the core then releases the reply to
    a caller already cancelled."""
    store = AfterWriteStore()
    cancel_on_next_reading: list[anyio.CancelScope] = []

    def clock() -> float:
        while cancel_on_next_reading:
            cancel_on_next_reading.pop().cancel()
        return time.monotonic()

    async with BrokerRuntime(store, LONG_LEASE, clock=clock) as runtime:
        job_id = await runtime_push(runtime, b"only job")
        scope = anyio.CancelScope()
        results: list[object] = []

        def claim_write_landed(key: str) -> None:
            if key == STATE_KEY:
                store.after_write = None
                cancel_on_next_reading.append(scope)

        async def claim() -> None:
            with scope:
                results.append(await runtime.request(Claim(runtime.new_request_id(), "w1")))

        # Request ids are the runtime's own counter: a hand-back draws one more (the
        # Release it sends), which is how the test sees which path took the job back.
        first_id = runtime.new_request_id()
        store.after_write = claim_write_landed
        with anyio.fail_after(10):
            await claim()
        assert scope.cancelled_caught
        assert results == []
        assert runtime.new_request_id() == first_id + 3, "claim, Release, this one"
        with anyio.fail_after(10):
            again = await runtime.request(
                Claim(runtime.new_request_id(), "w2", WELL_BEFORE_THE_LEASE_ENDS)
            )
        assert isinstance(again, Claimed)
        assert (again.job_id, again.attempts) == (job_id, 1)


async def test_a_claim_whose_caller_left_as_its_write_landed_is_not_lost() -> None:
    """Hole 6, the moment between the two above: the claim's write has landed in
    storage but its result has not reached the broker when the caller is cancelled. The
    withdrawal then reaches the broker after the write's result, too late to take the
    grant back in the core, and the reply it released finds no caller: the job must
    still come back at once (``attempts == 1``), not stay claimed until its lease ends.
    The store cancels the caller the moment the claim's write has landed."""
    store = AfterWriteStore()
    async with EmbeddedQueue(store, str, config=LONG_LEASE) as q:
        job_id = await q.push("only job")
        claim = CancellableClaim(q, "w1")

        def claim_write_landed(key: str) -> None:
            if key == STATE_KEY:
                store.after_write = None
                claim.scope.cancel()

        store.after_write = claim_write_landed
        with anyio.fail_after(10):
            await claim.run()
            assert claim.scope.cancelled_caught
            assert claim.results == []
            await next_claim_gets_it_back(q, job_id)


FORGETS_IN_A_MINUTE = BrokerConfig(reply_memory=60, retry_initial=0.01, retry_max=0.1)


async def test_a_repeated_complete_or_fail_after_archiving_is_answered_like_the_first(
    storage: Storage,
) -> None:
    """Hole 7: a Complete repeated after an unknown outcome (a lost answer) was answered
    NOT_FOUND once the job had been archived and dropped from the state, so the worker
    could not tell "done" from "never existed". Now the broker remembers its answers for
    ``reply_memory`` seconds: the repeat succeeds, for Complete and for a dead-lettering
    Fail; another worker still gets NOT_FOUND, and a Complete repeated after a Fail is
    not taken for a success."""
    async with EmbeddedQueue(
        storage.url, str, config=FORGETS_IN_A_MINUTE, storage_options=storage.options
    ) as q:
        await q.push("completed")
        await q.push("dead-lettered")
        done = await q.claim("w1")
        dead = await q.claim("w1")
        assert done is not None
        assert dead is not None
        await q.complete(done)
        assert await q.fail(dead, "poison", retry=False)
        assert await q.purge([dead.id]) == [dead.id]  # the dead letter leaves too
        with anyio.fail_after(10):
            await q.runtime.wait_until(lambda s: s.finished_pending_archive == 0)
        assert (q.stats().ready, q.stats().claimed) == (0, 0), "both left the state"

        await q.complete(done)  # the repeat: answered like the first
        assert await q.fail(dead, "poison", retry=False) is True
        with pytest.raises(JobNotFound):
            await q.complete(attrs.evolve(done, worker_id="w2"))
        with pytest.raises(LeaseLost):
            await q.complete(dead)


async def test_remembered_answers_are_forgotten_after_reply_memory() -> None:
    """Hole 7, its bound: ``reply_memory`` is seconds on the runtime's clock. A clock
    moved past it (a runtime clock the test steps; nothing else times out here) makes
    the broker forget, and a repeat is NOT_FOUND again."""
    step = 0.0

    def clock() -> float:
        return time.monotonic() + step

    async with BrokerRuntime(open_store("memory://"), FORGETS_IN_A_MINUTE, clock=clock) as runtime:
        job_id = await runtime_push(runtime, b"job")
        claimed = await runtime.request(Claim(runtime.new_request_id(), "w1"))
        assert isinstance(claimed, Claimed)
        await runtime.request(Complete(runtime.new_request_id(), job_id, "w1"))
        with anyio.fail_after(10):
            await runtime.wait_until(lambda s: s.finished_pending_archive == 0)
        repeat = await runtime.request(Complete(runtime.new_request_id(), job_id, "w1"))
        assert repeat == Completed(job_id)
        step = FORGETS_IN_A_MINUTE.reply_memory + 1
        with pytest.raises(JobNotFound):
            await runtime.request(Complete(runtime.new_request_id(), job_id, "w1"))
