"""``osqueue.v1.QueueService`` for a group member: each call goes to its queue's broker.

A member runs one gRPC server for all the queues of the group. Each RPC names its
queue (Push, PushBatch items, Claim queues, ListDead/Redrive/Purge queue) or carries a
job id, which names its queue (``<queue>/<seq>-<epoch>``, :mod:`osqueue_io.group.layout`);
the call is handed to the :class:`~osqueue_io.server.service.QueueService` of that
queue's broker in this member. That broker answers as any broker would: served if
this member owns the queue; a queue whose broker here stands by is answered
``NotOwner`` naming the owner that standby watches (none if it does not know yet).

What a single broker could do in one command but a group cannot:

* a **PushBatch** goes to one queue (one state object: all or nothing); one spanning
  queues is refused with ``InvalidArgument`` (the group clients split it by queue);
* a **Claim** naming several queues is served only if this member owns them all (else
  ``NotOwner`` for one it does not own: the group clients ask each owner for its own
  queues); it asks each queue's broker in turn, then waits on all of them
  (:mod:`osqueue_io.group.fanout`): priorities hold within a queue, not across;
* **ListDead**, **Redrive** and **Purge** name a queue (or ids of one queue);
* **CompleteBatch** items are split by queue, each part answered by its broker;
* **Stats** sums the queues this member owns (``queues`` lists each with jobs).

A queue that is not in the group, or an id that names none, is ``InvalidArgument``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import anyio
from grpclib import GRPCError

from osqueue_core import (
    DEFAULT_QUEUE,
    InvalidArgument,
    OsqueueError,
    Phase,
    check_queues,
    quote,
)
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
    PushRequest,
    PushResponse,
    QueueServiceBase,
    RedriveRequest,
    RedriveResponse,
    ReleaseRequest,
    ReleaseResponse,
    StatsRequest,
    StatsResponse,
)
from osqueue_io.client import check_batch_jobs
from osqueue_io.group.fanout import Rotation, claim_first
from osqueue_io.group.layout import job_queue
from osqueue_io.group.queue_slot import QueueSlot
from osqueue_io.server.service import QueueService, claim_response, item_status
from osqueue_io.status import to_grpc_error


def _refuse(error: OsqueueError) -> Exception:
    return to_grpc_error(error)


class GroupService(QueueServiceBase):
    """Serves the group's queues from their ``slots`` in this member; ``identity`` and
    ``address`` are this member's (Stats), ``max_batch_ops`` bounds CompleteBatch."""

    def __init__(
        self,
        slots: Mapping[str, QueueSlot],
        *,
        identity: str,
        address: str,
        lease_timeout: float,
        max_batch_ops: int,
    ) -> None:
        self._slots = slots
        self._identity = identity
        self._address = address
        self._lease_timeout_ms = round(lease_timeout * 1000)
        self._max_batch_ops = max_batch_ops
        self._rotation = Rotation()

    # -- routing -----------------------------------------------------------------------

    def _slot(self, queue: str) -> QueueSlot:
        slot = self._slots.get(queue)
        if slot is None:
            raise _refuse(
                InvalidArgument(f"queue {quote(queue)} is not one of this group's queues")
            )
        return slot

    def _service(self, queue: str) -> QueueService:
        """The broker of ``queue`` in this member, if it is not a standby."""
        slot = self._slot(queue)
        service = slot.serving
        if service is None:
            raise _refuse(slot.not_owner())
        return service

    def _of_job(self, job_id: str) -> QueueService:
        queue = job_queue(job_id)
        if queue is None:
            raise _refuse(
                InvalidArgument(
                    f"job id {quote(job_id)} names no queue: a group's ids are "
                    "<queue>/<seq>-<epoch>"
                )
            )
        return self._service(queue)

    def _one_queue(self, queues: Iterable[str], what: str) -> str:
        found = set(queues)
        if len(found) != 1:
            raise _refuse(
                InvalidArgument(
                    f"in a group, a {what} names one queue (each queue is its own state "
                    f"object); this one names {len(found) or 'no'} queues: split it"
                )
            )
        return found.pop()

    # -- publishing --------------------------------------------------------------------

    async def push(self, message: PushRequest) -> PushResponse:
        return await self._service(message.queue or DEFAULT_QUEUE).push(message)

    async def push_batch(self, message: PushBatchRequest) -> PushBatchResponse:
        queues = [item.queue or DEFAULT_QUEUE for item in message.items]
        if message.data:
            queues.append(DEFAULT_QUEUE)
        queue = self._one_queue(queues, "PushBatch")
        return await self._service(queue).push_batch(message)

    # -- consuming ---------------------------------------------------------------------

    def _claim_slots(self, names: Sequence[str]) -> list[QueueSlot]:
        try:
            queues = check_queues(list(names) or [DEFAULT_QUEUE])
        except OsqueueError as error:
            raise _refuse(error) from None
        slots = [self._slot(queue) for queue in dict.fromkeys(queues)]
        if len(slots) > 1:
            for slot in slots:
                if slot.phase is not Phase.RUNNING:
                    raise _refuse(slot.not_owner())
        return slots

    async def _claim(
        self, slots: Sequence[QueueSlot], worker_id: str, wait_ms: int, count: int
    ) -> list[LeasedJob]:
        async def source(slot: QueueSlot, wait: float, wanted: int) -> list[LeasedJob]:
            request = ClaimBatchRequest(
                worker_id=worker_id,
                queues=[slot.queue],
                wait_ms=round(wait * 1000),
                max_jobs=wanted,
            )
            try:
                return list((await self._service(slot.queue).claim_batch(request)).jobs)
            except GRPCError as refused:
                # claim_first keeps what other queues granted, and ends a wait cleanly,
                # only on a typed error: the broker's refusal carries it as details.
                if isinstance(refused.details, OsqueueError):
                    raise refused.details from None
                raise

        sources = [lambda wait, wanted, slot=slot: source(slot, wait, wanted) for slot in slots]
        try:
            taken, extra = await claim_first(sources, count, wait_ms / 1000, self._rotation)
        except OsqueueError as error:  # as that queue's broker would have answered
            raise _refuse(error) from None
        for job in extra:
            await self._give_back(job, worker_id)
        return taken

    async def _give_back(self, job: LeasedJob, worker_id: str) -> None:
        """A grant beyond what the caller asked for: back to its queue, unstarted."""
        try:
            await self.release(ReleaseRequest(job_id=job.job_id, worker_id=worker_id))
        except Exception:  # its lease runs out instead: at least once, as ever
            return

    async def claim(self, message: ClaimRequest) -> ClaimResponse:
        slots = self._claim_slots(message.queues)
        if len(slots) == 1:
            return await self._service(slots[0].queue).claim(message)
        jobs = await self._claim(slots, message.worker_id, message.wait_ms, 1)
        return claim_response(jobs, self._lease_timeout_ms)

    async def claim_batch(self, message: ClaimBatchRequest) -> ClaimBatchResponse:
        slots = self._claim_slots(message.queues)
        if len(slots) == 1:
            return await self._service(slots[0].queue).claim_batch(message)
        jobs = await self._claim(slots, message.worker_id, message.wait_ms, message.max_jobs or 1)
        return ClaimBatchResponse(jobs=jobs, lease_timeout_ms=self._lease_timeout_ms)

    async def heartbeat(self, message: HeartbeatRequest) -> HeartbeatResponse:
        return await self._of_job(message.job_id).heartbeat(message)

    async def complete(self, message: CompleteRequest) -> CompleteResponse:
        return await self._of_job(message.job_id).complete(message)

    async def complete_batch(self, message: CompleteBatchRequest) -> CompleteBatchResponse:
        """Each queue's items to its broker, together; each item answered as its own
        Complete would have been (a queue this member does not own: ``NotOwner``)."""
        items = message.items
        try:
            if not items:
                raise InvalidArgument("a CompleteBatchRequest carries no items: nothing to do")
            check_batch_jobs([item.job_id for item in items], self._max_batch_ops)
        except OsqueueError as error:
            raise _refuse(error) from None
        statuses: list[ItemStatus | None] = [None] * len(items)
        parts: dict[str, list[int]] = {}
        for index, item in enumerate(items):
            queue = job_queue(item.job_id)
            if queue is None or queue not in self._slots:
                statuses[index] = item_status(
                    InvalidArgument(f"job id {quote(item.job_id)} names no queue of this group")
                )
            else:
                parts.setdefault(queue, []).append(index)

        async def answer(queue: str, indexes: list[int]) -> None:
            slot = self._slots[queue]
            service = slot.serving
            if service is None:
                for index in indexes:
                    statuses[index] = item_status(slot.not_owner())
                return
            part = CompleteBatchRequest(items=[items[index] for index in indexes])
            reply = await service.complete_batch(part)
            for index, status in zip(indexes, reply.items, strict=True):
                statuses[index] = status

        async with anyio.create_task_group() as parts_served:
            for queue, indexes in parts.items():
                parts_served.start_soon(answer, queue, indexes)
        return CompleteBatchResponse(items=[status or ItemStatus() for status in statuses])

    async def fail(self, message: FailRequest) -> FailResponse:
        return await self._of_job(message.job_id).fail(message)

    async def release(self, message: ReleaseRequest) -> ReleaseResponse:
        return await self._of_job(message.job_id).release(message)

    # -- operating ---------------------------------------------------------------------

    async def cancel(self, message: CancelRequest) -> CancelResponse:
        return await self._of_job(message.job_id).cancel(message)

    async def get_job(self, message: GetJobRequest) -> GetJobResponse:
        return await self._of_job(message.job_id).get_job(message)

    async def list_dead(self, message: ListDeadRequest) -> ListDeadResponse:
        queue = message.queue or (job_queue(message.after) if message.after else None)
        return await self._service(self._one_queue([queue] if queue else [], "ListDead")).list_dead(
            message
        )

    def _ids_queue(self, queue: str, job_ids: Sequence[str], what: str) -> QueueService:
        if queue:
            return self._service(queue)
        queues = [job_queue(job_id) or "" for job_id in job_ids]
        return self._service(self._one_queue(queues, what))

    async def redrive(self, message: RedriveRequest) -> RedriveResponse:
        return await self._ids_queue(message.queue, message.job_ids, "Redrive").redrive(message)

    async def purge(self, message: PurgeRequest) -> PurgeResponse:
        return await self._ids_queue(message.queue, message.job_ids, "Purge").purge(message)

    async def stats(self, message: StatsRequest) -> StatsResponse:
        """The queues this member serves, summed; ``queues`` lists each with jobs."""
        total = StatsResponse(identity=self._identity, address=self._address)
        for slot in self._slots.values():
            if slot.phase is not Phase.RUNNING or slot.service is None:
                continue
            one = await slot.service.stats(message)
            total.ready += one.ready
            total.claimed += one.claimed
            total.completed_pending_archive += one.completed_pending_archive
            total.waiting_claims += one.waiting_claims
            total.delayed += one.delayed
            total.dead += one.dead
            total.queues.extend(one.queues)
        return total
