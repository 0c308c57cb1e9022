"""``osqueue.v1.QueueService`` over a :class:`~osqueue_io.runtime.BrokerRuntime`.

Each RPC becomes one core command (a zero value in an extension field meaning "not
given", so an original client's requests are the original's commands); the command's
result becomes the reply, and a typed error becomes the status its ``grpc_status`` names
(:mod:`osqueue_io.status`), never INTERNAL. The service holds no policy of its
own: validation, leases, batching and fencing are the core's. It only shapes messages,
caps a waiting claim below the client's deadline, and tells its owner when the broker
has failed (replaced by another broker, say) so the process can stop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from grpclib.const import Status

from osqueue_core import (
    DEFAULT_QUEUE,
    Cancel,
    Cancelled,
    Claim,
    Claimed,
    ClaimedBatch,
    Command,
    Complete,
    Completed,
    DeadLetters,
    Fail,
    Failed,
    GetJob,
    Heartbeat,
    InvalidArgument,
    JobInfo,
    LeaseExtended,
    ListDead,
    NewJob,
    NothingToClaim,
    OsqueueError,
    Phase,
    Purge,
    Purged,
    Push,
    PushBatch,
    Pushed,
    PushedBatch,
    Redrive,
    Redriven,
    Release,
    Released,
    Result,
)
from osqueue_io._proto.osqueue import v1 as pb
from osqueue_io._proto.osqueue.v1 import (
    CancelRequest,
    CancelResponse,
    ClaimBatchRequest,
    ClaimBatchResponse,
    ClaimRequest,
    ClaimResponse,
    CompleteBatchRequest,
    CompleteBatchResponse,
    CompleteRequest,
    CompleteResponse,
    FailRequest,
    FailResponse,
    GetJobRequest,
    GetJobResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    ItemStatus,
    LeasedJob,
    ListDeadRequest,
    ListDeadResponse,
    PurgeRequest,
    PurgeResponse,
    PushBatchRequest,
    PushBatchResponse,
    PushItem,
    PushRequest,
    PushResponse,
    QueueCounts,
    QueueServiceBase,
    RedriveRequest,
    RedriveResponse,
    ReleaseRequest,
    ReleaseResponse,
    StatsRequest,
    StatsResponse,
)
from osqueue_io.client import check_batch_jobs
from osqueue_io.runtime import BrokerRuntime
from osqueue_io.server.admission import call_deadline
from osqueue_io.status import clip_status_message, describe_error, to_grpc_error

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


#: Dead letters per ListDead page when the request says 0.
DEFAULT_LIST_LIMIT = 100


def new_job(message: PushRequest | PushItem) -> NewJob:
    """The job a PushRequest or PushItem describes: each zero value means "not given"
    (the default queue, no delay, no key, the queue's attempt limit), so an original
    client's push is a plain push to the default queue."""
    return NewJob(
        message.data,
        queue=message.queue or DEFAULT_QUEUE,
        priority=message.priority,
        delay=message.delay_ms / 1000 if message.delay_ms else None,
        run_at=message.run_at_ms / 1000 if message.run_at_ms else None,
        key=message.key or None,
        max_attempts=message.max_attempts or None,
    )


def to_ms(seconds: float | None) -> int:
    """Seconds (a time or a duration) as whole milliseconds; None is 0 ("none")."""
    return 0 if seconds is None else max(0, round(seconds * 1000))


def job_info_message(info: JobInfo) -> pb.JobInfo:
    return pb.JobInfo(
        job_id=info.id,
        queue=info.queue,
        priority=info.priority,
        status=info.status,
        attempts=info.attempts,
        max_attempts=info.max_attempts or 0,
        created_at_ms=to_ms(info.created_at),
        run_at_ms=to_ms(info.run_at),
        last_error=info.last_error,
        holder=info.holder or "",
        key=info.key,
        cancel_requested=info.cancel_requested,
        finished_at_ms=to_ms(info.finished_at),
    )


def leased_job(job: Claimed) -> LeasedJob:
    """A granted job as the wire carries it."""
    return LeasedJob(
        job_id=job.job_id,
        data=job.payload,
        attempts=job.attempts,
        queue=job.queue,
        priority=job.priority,
        max_attempts=job.max_attempts or 0,
    )


def claim_response(jobs: list[LeasedJob], lease_timeout_ms: int) -> ClaimResponse:
    """The Claim RPC's answer: the one job granted, or ``empty``."""
    if not jobs:
        return ClaimResponse(empty=True)
    [job] = jobs
    return ClaimResponse(
        job_id=job.job_id,
        data=job.data,
        attempts=job.attempts,
        lease_timeout_ms=lease_timeout_ms,
        queue=job.queue,
        priority=job.priority,
        max_attempts=job.max_attempts,
    )


_OK = ItemStatus()


def item_status(outcome: Result | OsqueueError) -> ItemStatus:
    """One item's outcome as the status and trailers its own call would have sent."""
    if not isinstance(outcome, OsqueueError):
        return _OK
    name, details = describe_error(outcome)
    return ItemStatus(
        code=Status[outcome.grpc_status].value,
        message=clip_status_message(str(outcome)),
        error=name,
        details=details,
    )


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
        job = new_job(message)
        command = Push(
            self._id(),
            job.payload,
            job.queue,
            job.priority,
            job.delay,
            job.run_at,
            job.key,
            job.max_attempts,
        )
        pushed = await self._call(command, Pushed)
        return PushResponse(job_id=pushed.job_id, existing=pushed.existing)

    async def push_batch(self, message: PushBatchRequest) -> PushBatchResponse:
        if message.data and message.items:
            raise to_grpc_error(
                InvalidArgument("a PushBatchRequest carries data or items, not both")
            )
        payloads: tuple[bytes | NewJob, ...] = tuple(message.data) or tuple(
            new_job(item) for item in message.items
        )
        # One core command: every payload becomes durable in the same write, or none.
        pushed = await self._call(PushBatch(self._id(), payloads), PushedBatch)
        return PushBatchResponse(job_ids=list(pushed.job_ids), existing=list(pushed.existing))

    async def _claim(
        self, worker_id: str, queues: list[str], wait_ms: int, count: int
    ) -> list[Claimed]:
        deadline = call_deadline.get()
        wait = claim_wait(wait_ms, deadline.time_remaining() if deadline else None)
        command = Claim(self._id(), worker_id, wait, tuple(queues) or (DEFAULT_QUEUE,), count)
        try:
            result = await self._submit(command)
        except OsqueueError as error:
            raise to_grpc_error(error) from None
        if isinstance(result, NothingToClaim):
            return []
        if isinstance(result, ClaimedBatch):
            return list(result.jobs)
        return [_expect(result, Claimed)]

    async def claim(self, message: ClaimRequest) -> ClaimResponse:
        claimed = await self._claim(message.worker_id, message.queues, message.wait_ms, 1)
        return claim_response([leased_job(job) for job in claimed], self._lease_timeout_ms)

    async def claim_batch(self, message: ClaimBatchRequest) -> ClaimBatchResponse:
        claimed = await self._claim(
            message.worker_id, message.queues, message.wait_ms, message.max_jobs or 1
        )
        jobs = [leased_job(job) for job in claimed]
        return ClaimBatchResponse(jobs=jobs, lease_timeout_ms=self._lease_timeout_ms)

    async def heartbeat(self, message: HeartbeatRequest) -> HeartbeatResponse:
        command = Heartbeat(self._id(), message.job_id, message.worker_id)
        extended = await self._call(command, LeaseExtended)
        return HeartbeatResponse(
            lease_timeout_ms=self._lease_timeout_ms,
            cancel_requested=extended.cancel_requested,
        )

    async def complete(self, message: CompleteRequest) -> CompleteResponse:
        command = Complete(self._id(), message.job_id, message.worker_id, message.result)
        await self._call(command, Completed)
        return CompleteResponse()

    async def complete_batch(self, message: CompleteBatchRequest) -> CompleteBatchResponse:
        """Every item's Complete, submitted together (one batch, one write, as far as
        the batch's caps allow); each item answered with what its own Complete would
        have got. The call as a whole is refused, nothing done, when it carries no item,
        more than ``max_batch_ops``, or a job twice."""
        items = message.items
        try:
            if not items:
                raise InvalidArgument("a CompleteBatchRequest carries no items: nothing to do")
            check_batch_jobs([item.job_id for item in items], self._runtime.config.max_batch_ops)
        except OsqueueError as error:
            raise to_grpc_error(error) from None
        commands: list[Command] = [
            Complete(self._id(), item.job_id, item.worker_id, item.result) for item in items
        ]
        outcomes = await self._runtime.request_many(commands)
        failure = self._runtime.failure
        if failure is not None:
            self._on_failure(failure)
        return CompleteBatchResponse(items=[item_status(outcome) for outcome in outcomes])

    async def fail(self, message: FailRequest) -> FailResponse:
        command = Fail(
            self._id(), message.job_id, message.worker_id, message.error, message.requeue
        )
        failed = await self._call(command, Failed)
        return FailResponse(
            dead=failed.dead,
            retry_at_ms=0 if failed.dead else to_ms(failed.retry_at),
            cancelled=failed.cancelled,
        )

    async def release(self, message: ReleaseRequest) -> ReleaseResponse:
        await self._call(Release(self._id(), message.job_id, message.worker_id), Released)
        return ReleaseResponse()

    async def cancel(self, message: CancelRequest) -> CancelResponse:
        cancelled = await self._call(Cancel(self._id(), message.job_id), Cancelled)
        return CancelResponse(at_once=cancelled.at_once)

    async def get_job(self, message: GetJobRequest) -> GetJobResponse:
        info = await self._call(GetJob(self._id(), message.job_id), JobInfo)
        return GetJobResponse(job=job_info_message(info))

    async def list_dead(self, message: ListDeadRequest) -> ListDeadResponse:
        command = ListDead(
            self._id(),
            queue=message.queue or None,
            limit=message.limit or DEFAULT_LIST_LIMIT,
            after=message.after or None,
        )
        page = await self._call(command, DeadLetters)
        return ListDeadResponse(jobs=[job_info_message(j) for j in page.jobs], more=page.more)

    async def redrive(self, message: RedriveRequest) -> RedriveResponse:
        command = Redrive(self._id(), tuple(message.job_ids), message.queue or None)
        redriven = await self._call(command, Redriven)
        return RedriveResponse(job_ids=list(redriven.job_ids))

    async def purge(self, message: PurgeRequest) -> PurgeResponse:
        command = Purge(self._id(), tuple(message.job_ids), message.queue or None)
        purged = await self._call(command, Purged)
        return PurgeResponse(job_ids=list(purged.job_ids))

    async def stats(self, message: StatsRequest) -> StatsResponse:
        if self._runtime.broker_phase in (Phase.STANDBY, Phase.STARTING):
            # A standby's counts are not the queue's: send the caller to the owner.
            raise to_grpc_error(self._runtime.not_owner())
        stats = self._runtime.stats()
        wall = time.time()
        queues = [
            QueueCounts(
                queue=counts.queue,
                ready=counts.ready,
                delayed=counts.delayed,
                claimed=counts.claimed,
                dead=counts.dead,
                oldest_ready_age_ms=(
                    None
                    if counts.oldest_ready_since is None
                    else to_ms(wall - counts.oldest_ready_since)
                ),
            )
            for counts in stats.queues
        ]
        return StatsResponse(
            ready=stats.ready,
            claimed=stats.claimed,
            completed_pending_archive=stats.finished_pending_archive,
            epoch=stats.epoch,
            identity=stats.identity,
            revision=stats.revision,
            address=self._address,
            waiting_claims=stats.waiting_claims,
            delayed=stats.delayed,
            dead=stats.dead,
            queues=queues,
        )
