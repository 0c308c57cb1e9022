"""A client's calls to a scale-out group: each goes to the owner of its queue.

:class:`GroupConnection` has the methods of :class:`~osqueue_io.connection.BrokerConnection`
(the remote clients use either). It keeps one ``BrokerConnection`` per queue it has
called, each finding its queue's owner in the bucket (``queues/<queue>/state.json``
names the owner and its address) and following it across failovers and releases as
:mod:`osqueue_io.discovery` does for one queue; they share one gRPC channel per member.

Routing: a push goes to its queue's owner; a call by job id to the owner of the queue
the id names (``<queue>/<seq>-<epoch>``); a PushBatch spanning queues is split, one
batch per queue (each all-or-nothing; the ids come back in order); a CompleteBatch is
split by queue too. A claim naming several queues asks their owners
(:mod:`osqueue_io.group.fanout`): one call per member, each for the queues it owns,
first without waiting, then waiting on all; a member that turns out not to own one of
them (``NotOwner``) makes the client look every queue up again and retry. ListDead
without a queue pages through the queues in the group's order; Redrive and Purge name
a queue or ids of one queue. Stats sums what every owner reports.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Sequence
from functools import partial

import anyio

from osqueue_core import (
    BrokerNotRunning,
    Cancelled,
    DeadLetters,
    Failed,
    InvalidArgument,
    JobInfo,
    NewJob,
    OsqueueError,
    Pushed,
    PushedBatch,
    check_id,
    check_queues,
    quote,
)
from osqueue_io.client import claim_queues
from osqueue_io.connection import (
    BrokerConnection,
    ChannelPool,
    LeaseRenewed,
    QueueStats,
    RemoteJob,
    client_tls,
    token_metadata,
)
from osqueue_io.discovery import fails_over
from osqueue_io.group.fanout import Rotation, claim_first
from osqueue_io.group.layout import check_group, job_queue, state_key
from osqueue_io.http2 import limit_closed_streams
from osqueue_io.storage import ObjectStore

_FIRST_PAUSE = 0.05
_MAX_PAUSE = 1.0


class GroupConnection:
    """The owners of the group's ``queues`` (the list its members run with), found in
    ``store`` (the group's data URL); ``timeout``, ``failover_timeout``, ``tls_ca``,
    ``ssl_context`` and ``token`` as for a ``BrokerConnection``: every member is dialled
    with the same TLS context and sent the same token, so each member's certificate
    must name the address it advertises in the bucket. :meth:`open` before the first
    call, :meth:`close` at the end.
    """

    def __init__(
        self,
        queues: Sequence[str],
        *,
        store: ObjectStore,
        timeout: float,
        owner: str,
        failover_timeout: float = 60.0,
        tls_ca: str | os.PathLike[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        token: str | None = None,
    ) -> None:
        if not timeout > 0 or not failover_timeout > 0:
            raise InvalidArgument("timeout and failover_timeout must be positive")
        self.queues = check_group(queues)
        self._group = frozenset(self.queues)
        self.store = store
        self.timeout = timeout
        self.failover_timeout = failover_timeout
        self._owner = owner
        # Checked here, once: a bad CA file or token fails the constructor, as it does
        # for one broker's client, not the first call to each queue.
        self._token = token
        self._channels = ChannelPool(ssl_context=client_tls(tls_ca, ssl_context))
        token_metadata(token)
        self._connections: dict[str, BrokerConnection] = {}
        self._rotation = Rotation()
        self._opened = False

    @property
    def address(self) -> str:
        return f"the owners of {len(self.queues)} queues in {self.store.url}"

    host = ""
    port = 0
    #: Calls always follow their queue's owner (every push carries a key).
    discovers = True

    def open(self) -> None:
        if self._opened:
            raise RuntimeError(f"the {self._owner} is already open")
        limit_closed_streams()
        self._opened = True

    def close(self) -> None:
        self._opened = False
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()
        self._channels.close()

    # -- routing -----------------------------------------------------------------------

    def _to(self, queue: str) -> BrokerConnection:
        """The connection to ``queue``'s owner."""
        if queue not in self._group:
            raise InvalidArgument(f"queue {quote(queue)} is not one of this group's queues")
        if not self._opened:
            name = self._owner
            raise BrokerNotRunning(f"the {name} is not open: use `async with {name}(...)`")
        connection = self._connections.get(queue)
        if connection is None:
            connection = BrokerConnection(
                None,
                timeout=self.timeout,
                owner=self._owner,
                store=self.store,
                state_key=state_key(queue),
                failover_timeout=self.failover_timeout,
                ssl_context=self._channels.ssl_context,
                token=self._token,
                channels=self._channels,
            )
            connection.open()
            self._connections[queue] = connection
        return connection

    def _of_job(self, job_id: str) -> BrokerConnection:
        queue = job_queue(check_id("job_id", job_id))
        if queue is None:
            raise InvalidArgument(
                f"job id {quote(job_id)} names no queue: a group's ids are <queue>/<seq>-<epoch>"
            )
        return self._to(queue)

    # -- publishing --------------------------------------------------------------------

    async def push(self, job: NewJob) -> Pushed:
        return await self._to(job.queue).push(job)

    async def push_batch(self, jobs: Sequence[bytes | NewJob]) -> PushedBatch:
        """One batch per queue (each all or nothing), in the order of first appearance;
        the ids and ``existing`` flags come back in the order of ``jobs``."""
        new = [job if isinstance(job, NewJob) else NewJob(job) for job in jobs]
        parts: dict[str, list[int]] = {}
        for index, job in enumerate(new):
            parts.setdefault(job.queue, []).append(index)
        ids = [""] * len(new)
        existing = [False] * len(new)
        for queue, indexes in parts.items():
            pushed = await self._to(queue).push_batch([new[index] for index in indexes])
            old = pushed.existing or (False,) * len(indexes)  # empty: none existed
            for index, job_id, found in zip(indexes, pushed.job_ids, old, strict=True):
                ids[index], existing[index] = job_id, found
        return PushedBatch(tuple(ids), tuple(existing) if any(existing) else ())

    # -- consuming ---------------------------------------------------------------------

    async def claim(
        self, worker_id: str, queues: Sequence[str], wait: float, count: int | None
    ) -> list[RemoteJob]:
        names = list(dict.fromkeys(check_queues(list(claim_queues(queues)))))
        for name in names:
            self._to(name)  # in the group, or InvalidArgument before anything is sent
        if len(names) == 1:
            return await self._to(names[0]).claim(worker_id, names, wait, count)
        deadline = time.monotonic() + self.failover_timeout + wait
        pause = _FIRST_PAUSE
        while True:
            owners = await self._owners(names)
            sources = [
                partial(self._claim_at, address, owned, worker_id)
                for address, owned in owners.items()
            ]
            try:
                taken, extra = await claim_first(sources, count or 1, wait, self._rotation)
            except OsqueueError as error:
                if not fails_over(error) or time.monotonic() + pause > deadline:
                    raise
                await self._look_up_again(names)
                await anyio.sleep(pause)
                pause = min(pause * 2, _MAX_PAUSE)
                continue
            for job in extra:
                await self._give_back(job, worker_id)
            return taken

    async def _claim_at(
        self, address: str, queues: list[str], worker_id: str, wait: float, count: int
    ) -> list[RemoteJob]:
        return await self._to(queues[0]).claim(worker_id, queues, wait, count, at=address)

    async def _give_back(self, job: RemoteJob, worker_id: str) -> None:
        try:
            await self.release(job.id, worker_id)
        except OsqueueError:
            return  # its lease runs out instead: at least once, as ever

    async def _owners(self, queues: Sequence[str]) -> dict[str, list[str]]:
        """Where each of ``queues`` is served now: owner address -> its queues."""
        owners: dict[str, list[str]] = {}
        for queue in queues:
            locator = self._to(queue).locator
            try:
                address = await locator.locate()
            except BrokerNotRunning:
                continue  # no owner yet: asked again at the next round
            owners.setdefault(address, []).append(queue)
        if not owners:
            raise BrokerNotRunning(
                f"none of the queues {', '.join(queues)[:200]} has an owner yet: retry"
            )
        return owners

    async def _look_up_again(self, queues: Sequence[str]) -> None:
        """A member refused some of ``queues``: ask the bucket where each one is now."""
        relocating = BrokerNotRunning("a member did not serve one of the claim's queues")
        for queue in queues:
            locator = self._to(queue).locator
            if locator.current is not None:
                await locator.move_on(locator.current, relocating)

    async def heartbeat(
        self, job_id: str, worker_id: str, *, time_limit: float | None = None
    ) -> LeaseRenewed:
        return await self._of_job(job_id).heartbeat(job_id, worker_id, time_limit=time_limit)

    async def complete(self, job_id: str, worker_id: str, result: bytes | None) -> None:
        await self._of_job(job_id).complete(job_id, worker_id, result)

    async def complete_batch(
        self, items: Sequence[tuple[str, str, bytes | None]]
    ) -> list[OsqueueError | None]:
        """One CompleteBatch per queue; each item's outcome in the order of ``items``."""
        outcomes: list[OsqueueError | None] = [None] * len(items)
        parts: dict[str, list[int]] = {}
        for index, (job_id, _, _) in enumerate(items):
            queue = job_queue(job_id)
            if queue is None or queue not in self._group:
                outcomes[index] = InvalidArgument(
                    f"job id {quote(job_id)} names no queue of this group"
                )
            else:
                parts.setdefault(queue, []).append(index)
        for queue, indexes in parts.items():
            answers = await self._to(queue).complete_batch([items[index] for index in indexes])
            for index, answer in zip(indexes, answers, strict=True):
                outcomes[index] = answer
        return outcomes

    async def fail(self, job_id: str, worker_id: str, error: str, requeue: bool) -> Failed:
        return await self._of_job(job_id).fail(job_id, worker_id, error, requeue)

    async def release(self, job_id: str, worker_id: str) -> None:
        await self._of_job(job_id).release(job_id, worker_id)

    # -- operating ---------------------------------------------------------------------

    async def cancel(self, job_id: str) -> Cancelled:
        return await self._of_job(job_id).cancel(job_id)

    async def get(self, job_id: str) -> JobInfo:
        return await self._of_job(job_id).get(job_id)

    async def list_dead(self, queue: str | None, limit: int, after: str | None) -> DeadLetters:
        """Dead letters of ``queue``; of every queue, one after the other in the group's
        order, without one (``after`` names the queue to go on from)."""
        if queue is not None:
            return await self._to(queue).list_dead(queue, limit, after)
        start = 0
        if after is not None:
            after_queue = job_queue(check_id("after", after))
            if after_queue not in self._group:
                raise InvalidArgument(f"after={quote(after)} names no queue of this group")
            start = self.queues.index(after_queue)
        found: list[JobInfo] = []
        for position in range(start, len(self.queues)):
            name = self.queues[position]
            page = await self._to(name).list_dead(
                name, limit - len(found), after if position == start else None
            )
            found.extend(page.jobs)
            if len(found) >= limit:
                more = page.more or position + 1 < len(self.queues)
                return DeadLetters(tuple(found), more)
        return DeadLetters(tuple(found), False)

    def _one_queue(self, job_ids: Sequence[str], queue: str | None, what: str) -> BrokerConnection:
        if queue is not None:
            return self._to(queue)
        queues = {job_queue(check_id("job_id", job_id)) for job_id in job_ids}
        if len(queues) != 1 or None in queues:
            raise InvalidArgument(
                f"in a group, {what} names a queue, or ids of one queue (each queue is its "
                "own state object): split it"
            )
        [found] = queues
        assert found is not None
        return self._to(found)

    async def redrive(self, job_ids: Sequence[str], queue: str | None) -> list[str]:
        return await self._one_queue(job_ids, queue, "redrive").redrive(job_ids, queue)

    async def purge(self, job_ids: Sequence[str], queue: str | None) -> list[str]:
        return await self._one_queue(job_ids, queue, "purge").purge(job_ids, queue)

    async def stats(self) -> QueueStats:
        """Every owner's report, summed: ``identity`` and ``address`` list the owners."""
        owners = await self._owners(self.queues)
        reports = [
            await self._to(queues[0]).stats(at=address) for address, queues in owners.items()
        ]
        return QueueStats(
            ready=sum(r.ready for r in reports),
            claimed=sum(r.claimed for r in reports),
            completed_pending_archive=sum(r.completed_pending_archive for r in reports),
            epoch=0,
            identity=",".join(sorted(r.identity for r in reports)),
            revision=0,
            address=",".join(sorted(owners)),
            waiting_claims=sum(r.waiting_claims for r in reports),
            delayed=sum(r.delayed for r in reports),
            dead=sum(r.dead for r in reports),
            queues=tuple(info for r in reports for info in r.queues if info.queue in self._group),
        )
