"""A batch claim (``Claim`` with ``count`` > 1) whose caller left: every job it was
granted goes back, not only one.

The runtime hands a claim's jobs back with ``Release`` when the grant reaches it after
its caller left (``_abandon_claim`` / ``_dispatch``). Before, only a single ``Claimed``
was handed back: the jobs of a ``ClaimedBatch`` stayed held by nobody until their lease
ran out, each with an attempt used up. The windows are hit as in
test_hardening_claims.py: the store calls back the moment the claim's write has landed.
The lease is 60 s and every wait is bounded well below it.
"""

from __future__ import annotations

import time

import anyio
import pytest

from osqueue_core import BrokerConfig, Claim, ClaimedBatch, PushBatch, PushedBatch
from osqueue_io import BrokerRuntime

from .hardening import STATE_KEY, AfterWriteStore

pytestmark = pytest.mark.anyio

LONG_LEASE = BrokerConfig(heartbeat_timeout=60, stall_timeout=60, retry_initial=0.01, retry_max=0.1)
WELL_BEFORE_THE_LEASE_ENDS = 5.0


async def push_three(runtime: BrokerRuntime) -> list[str]:
    result = await runtime.request(PushBatch(runtime.new_request_id(), (b"a", b"b", b"c")))
    assert isinstance(result, PushedBatch)
    return list(result.job_ids)


async def all_come_back_at_once(runtime: BrokerRuntime, job_ids: list[str]) -> None:
    """Every job is ready again well before the lease would have ended, and the claim
    whose caller left counted no attempt."""
    with anyio.fail_after(WELL_BEFORE_THE_LEASE_ENDS):
        await runtime.wait_until(lambda stats: stats.ready == 3 and stats.claimed == 0)
    again = await runtime.request(Claim(runtime.new_request_id(), "w2", count=3))
    assert isinstance(again, ClaimedBatch)
    assert [(job.job_id, job.attempts) for job in again.jobs] == [(i, 1) for i in job_ids]


async def test_a_batch_claim_whose_caller_left_as_its_reply_arrived_is_handed_back() -> None:
    store = AfterWriteStore()
    cancel_on_next_reading: list[anyio.CancelScope] = []

    def clock() -> float:
        while cancel_on_next_reading:
            cancel_on_next_reading.pop().cancel()
        return time.monotonic()

    async with BrokerRuntime(store, LONG_LEASE, clock=clock) as runtime:
        job_ids = await push_three(runtime)
        scope = anyio.CancelScope()
        results: list[object] = []

        def claim_write_landed(key: str) -> None:
            if key == STATE_KEY:
                store.after_write = None
                cancel_on_next_reading.append(scope)

        async def claim() -> None:
            with scope:
                command = Claim(runtime.new_request_id(), "w1", count=3)
                results.append(await runtime.request(command))

        first_id = runtime.new_request_id()
        store.after_write = claim_write_landed
        with anyio.fail_after(10):
            await claim()
        assert scope.cancelled_caught
        assert results == []
        # Request ids are the runtime's own counter: each hand-back draws one.
        assert runtime.new_request_id() == first_id + 5, "claim, three Releases, this one"
        await all_come_back_at_once(runtime, job_ids)


async def test_a_batch_claim_whose_caller_left_as_its_write_landed_is_not_lost() -> None:
    store = AfterWriteStore()
    async with BrokerRuntime(store, LONG_LEASE) as runtime:
        job_ids = await push_three(runtime)
        scope = anyio.CancelScope()

        def claim_write_landed(key: str) -> None:
            if key == STATE_KEY:
                store.after_write = None
                scope.cancel()

        store.after_write = claim_write_landed
        with anyio.fail_after(10), scope:
            await runtime.request(Claim(runtime.new_request_id(), "w1", count=3))
        assert scope.cancelled_caught
        await all_come_back_at_once(runtime, job_ids)
