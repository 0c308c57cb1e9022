"""A member's Claim over several queues when one queue's broker refuses midway.

Each queue's broker answers a refusal as a gRPC status carrying the typed error; the
member's fan-out (:func:`~osqueue_io.group.fanout.claim_first`) must still see the
typed error, so it keeps what other queues granted, and the caller gets the refusal
as that broker would have answered it (not ``UNKNOWN``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import anyio
import anyio.lowlevel
import pytest
from grpclib import GRPCError
from grpclib.const import Status

from osqueue_core import BrokerStopping, NotOwner, OsqueueError, Phase
from osqueue_io._proto.osqueue.v1 import (
    ClaimBatchRequest,
    ClaimBatchResponse,
    ClaimRequest,
    LeasedJob,
    ReleaseRequest,
    ReleaseResponse,
)
from osqueue_io.group.queue_slot import QueueSlot
from osqueue_io.group.service import GroupService
from osqueue_io.status import to_grpc_error

pytestmark = pytest.mark.anyio


class Broker:
    """One queue's broker as the member sees it: grants ``ready`` jobs at once, then
    waits. With ``refusal`` it refuses as a broker does (a gRPC status whose details
    are the typed error): every claim, or with ``refuse_when_waiting`` only one that
    waits (a claim without waiting finds nothing)."""

    def __init__(
        self,
        queue: str,
        ready: int = 0,
        refusal: OsqueueError | None = None,
        *,
        refuse_when_waiting: bool = False,
    ) -> None:
        self.queue = queue
        self.ready = [f"{queue}/{n:012d}-1" for n in range(1, ready + 1)]
        self.refusal = refusal
        self.refuse_when_waiting = refuse_when_waiting
        self.released: list[str] = []
        self.cancelled = False

    async def claim_batch(self, message: ClaimBatchRequest) -> ClaimBatchResponse:
        if self.refusal is not None and (message.wait_ms or not self.refuse_when_waiting):
            await anyio.lowlevel.checkpoint()
            raise to_grpc_error(self.refusal)
        if not self.ready and message.wait_ms:
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                self.cancelled = True
                raise
        taken, self.ready = self.ready[: message.max_jobs], self.ready[message.max_jobs :]
        jobs = [
            LeasedJob(job_id=job_id, data=b"x", attempts=1, queue=self.queue) for job_id in taken
        ]
        return ClaimBatchResponse(jobs=jobs, lease_timeout_ms=5000)

    async def release(self, message: ReleaseRequest) -> ReleaseResponse:
        self.released.append(message.job_id)
        return ReleaseResponse()


class Slot:
    """A queue this member serves (as :class:`QueueSlot` does while it owns it)."""

    def __init__(self, broker: Broker) -> None:
        self.queue = broker.queue
        self.phase = Phase.RUNNING
        self.serving = broker

    def not_owner(self) -> NotOwner:
        return NotOwner("", 0, None)


def member(*brokers: Broker) -> GroupService:
    slots = {broker.queue: Slot(broker) for broker in brokers}
    return GroupService(
        cast(Mapping[str, QueueSlot], slots),
        identity="m1",
        address="127.0.0.1:1",
        lease_timeout=5.0,
        max_batch_ops=100,
    )


async def test_a_queue_refusing_after_another_granted_keeps_the_grant_for_the_caller() -> None:
    granted = Broker("a", ready=2)
    moved = Broker("b", refusal=NotOwner("m2", 3, "127.0.0.1:2"))
    service = member(granted, moved)  # a fresh member asks "a" first
    reply = await service.claim_batch(
        ClaimBatchRequest(worker_id="w", queues=["a", "b"], max_jobs=5)
    )
    assert [job.job_id for job in reply.jobs] == ["a/000000000001-1", "a/000000000002-1"]
    assert granted.released == [], "the caller has them: nothing given back, nothing dropped"


async def test_a_queue_refusing_while_waiting_answers_its_refusal_not_unknown() -> None:
    waiting = Broker("a")
    stopping = Broker("b", refusal=BrokerStopping(), refuse_when_waiting=True)
    service = member(waiting, stopping)
    with anyio.fail_after(5), pytest.raises(GRPCError) as refused:
        await service.claim(ClaimRequest(worker_id="w", queues=["a", "b"], wait_ms=30_000))
    assert refused.value.status is Status.UNAVAILABLE
    assert isinstance(refused.value.details, BrokerStopping)
    assert waiting.cancelled, "the refusal ends the wait on the other queue"
