"""``osqueue.v1.QueueService`` over a :class:`~osqueue_io.runtime.BrokerRuntime`.

Each RPC becomes one core command; the command's result
becomes the reply, and a typed error becomes the status its ``grpc_status`` names
(:mod:`osqueue_io.status`), never INTERNAL. The service holds no policy of its
own: validation, leases, batching and fencing are the core's. It only shapes messages,
caps a waiting claim below the client's deadline, and tells its owner when the broker
has failed (replaced by another broker, say) so the process can stop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from osqueue_core import (
    Claim,
    Claimed,
    Command,
    Complete,
    Completed,
    Fail,
    Failed,
    Heartbeat,
    LeaseExtended,
    NothingToClaim,
    OsqueueError,
    Push,
    PushBatch,
    Pushed,
    PushedBatch,
    Result,
)
from osqueue_io._proto.osqueue.v1 import (
    ClaimRequest,
    ClaimResponse,
    CompleteRequest,
    CompleteResponse,
    FailRequest,
    FailResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    PushBatchRequest,
    PushBatchResponse,
    PushRequest,
    PushResponse,
    QueueServiceBase,
    StatsRequest,
    StatsResponse,
)
from osqueue_io.runtime import BrokerRuntime
from osqueue_io.server.admission import call_deadline
from osqueue_io.status import to_grpc_error

log = logging.getLogger("osqueue.server")

R = TypeVar("R", bound=Result)


def claim_wait(wait_ms: int, deadline_remaining: float | None) -> float:
    """How long a claim may wait: what the client asked, but answered (empty) before
    its deadline, keeping a margin for the reply to travel back."""
    wait = wait_ms / 1000
    if wait <= 0 or deadline_remaining is None:
        return max(0.0, wait)
    margin = min(0.5, max(0.05, deadline_remaining * 0.1))
    return max(0.0, min(wait, deadline_remaining - margin))


def _expect(result: Result, expected: type[R]) -> R:
    if not isinstance(result, expected):
        raise TypeError(f"expected {expected.__name__}, the broker answered {result!r}")  # a bug
    return result


class QueueService(QueueServiceBase):
    """Serves the queue RPCs from ``runtime``; ``address`` is reported by Stats.

    ``on_failure`` is called with the broker's failure (``runtime.failure``) the first
    time a call finds the broker failed.
    """

    def __init__(
        self,
        runtime: BrokerRuntime,
        *,
        address: str,
        on_failure: Callable[[BaseException], None],
    ) -> None:
        self._runtime = runtime
        self._address = address
        self._on_failure = on_failure
        self._lease_timeout_ms = round(runtime.config.heartbeat_timeout * 1000)

    async def _submit(self, command: Command) -> Result:
        """Run ``command``; raise its typed error, first reporting a failed broker."""
        try:
            return await self._runtime.request(command)
        except OsqueueError:
            failure = self._runtime.failure
            if failure is not None:
                self._on_failure(failure)
            raise

    async def _call(self, command: Command, expected: type[R]) -> R:
        """Run ``command`` for an RPC: its result, or its error as a gRPC status."""
        try:
            result = await self._submit(command)
        except OsqueueError as error:
            raise to_grpc_error(error) from None
        return _expect(result, expected)

    def _id(self) -> int:
        return self._runtime.new_request_id()

    async def push(self, message: PushRequest) -> PushResponse:
        pushed = await self._call(Push(self._id(), message.data), Pushed)
        return PushResponse(job_id=pushed.job_id)

    async def push_batch(self, message: PushBatchRequest) -> PushBatchResponse:
        # One core command: every payload becomes durable in the same write, or none.
        pushed = await self._call(PushBatch(self._id(), tuple(message.data)), PushedBatch)
        return PushBatchResponse(job_ids=list(pushed.job_ids))

    async def claim(self, message: ClaimRequest) -> ClaimResponse:
        deadline = call_deadline.get()
        wait = claim_wait(message.wait_ms, deadline.time_remaining() if deadline else None)
        try:
            result = await self._submit(Claim(self._id(), message.worker_id, wait))
        except OsqueueError as error:
            raise to_grpc_error(error) from None
        if isinstance(result, NothingToClaim):
            return ClaimResponse(empty=True)
        result = _expect(result, Claimed)
        return ClaimResponse(
            job_id=result.job_id,
            data=result.payload,
            attempts=result.attempts,
            lease_timeout_ms=self._lease_timeout_ms,
        )

    async def heartbeat(self, message: HeartbeatRequest) -> HeartbeatResponse:
        command = Heartbeat(self._id(), message.job_id, message.worker_id)
        await self._call(command, LeaseExtended)
        return HeartbeatResponse(lease_timeout_ms=self._lease_timeout_ms)

    async def complete(self, message: CompleteRequest) -> CompleteResponse:
        await self._call(Complete(self._id(), message.job_id, message.worker_id), Completed)
        return CompleteResponse()

    async def fail(self, message: FailRequest) -> FailResponse:
        command = Fail(
            self._id(), message.job_id, message.worker_id, message.error, message.requeue
        )
        failed = await self._call(command, Failed)
        return FailResponse(dead=failed.dead)

    async def stats(self, message: StatsRequest) -> StatsResponse:
        stats = self._runtime.stats()
        return StatsResponse(
            ready=stats.ready,
            claimed=stats.claimed,
            completed_pending_archive=stats.finished_pending_archive,
            epoch=stats.epoch,
            identity=stats.identity,
            revision=stats.revision,
            address=self._address,
            waiting_claims=stats.waiting_claims,
        )
