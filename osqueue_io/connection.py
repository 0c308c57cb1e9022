"""The wire under the remote clients: one gRPC channel to a broker and its calls.

:class:`BrokerConnection` makes each RPC of ``osqueue.v1.QueueService`` a method that
takes plain values and returns osqueue's own (core results such as ``Pushed``,
``Failed`` and ``JobInfo``, or :class:`RemoteJob` and :class:`QueueStats`), with a
deadline on every call and every failure a typed :class:`~osqueue_core.OsqueueError`.
It holds no worker identity and no policy: :class:`~osqueue_io.remote.Worker` (bytes,
job ids) and :class:`~osqueue_io.remote.RemoteQueue` (typed items) are built on it.

In the protocol's extension fields a zero value means "not given" (docs/protocol.md),
so a value the wire cannot carry faithfully is refused here, before anything is sent,
with the core's own check: a number outside its range (a negative delay, an attempt
limit of 0) and an empty text where empty means "not given" (a queue name, a key).
Everything else (a queue name with bad characters, an over-long key) is the broker's to
refuse, and comes back as the same typed error.
"""

from __future__ import annotations

import os
import ssl
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import anyio
import attrs
import betterproto2
from grpclib import GRPCError
from grpclib.client import Channel, Stream
from grpclib.const import Cardinality
from grpclib.exceptions import StreamTerminatedError
from grpclib.metadata import decode_metadata

from osqueue_core import (
    DEFAULT_QUEUE,
    MAX_ATTEMPTS,
    MAX_CLAIM_COUNT,
    MAX_DELAY,
    MAX_PRIORITY,
    BrokerNotRunning,
    Cancelled,
    DeadLetters,
    Failed,
    InvalidArgument,
    JobAlreadyFinished,
    JobInfo,
    JobNotFound,
    NewJob,
    OsqueueError,
    Pushed,
    PushedBatch,
    check_id,
    check_key,
    check_queue_name,
    check_queues,
)
from osqueue_core.clock import MAX_WALL
from osqueue_core.limits import check_int, check_seconds, check_wait
from osqueue_io._proto.osqueue import v1 as pb
from osqueue_io.address import split_host_port
from osqueue_io.client import QueueInfo, claim_queues
from osqueue_io.discovery import (
    MAX_ADDRESSES,
    Locator,
    Retry,
    certainly_not_applied,
    check_addresses,
    fails_over,
)
from osqueue_io.http2 import limit_closed_streams
from osqueue_io.protowire import FastProtoCodec
from osqueue_io.security.tls import TlsConfigError, client_context
from osqueue_io.security.tokens import MAX_TOKEN_LENGTH, sendable_token
from osqueue_io.status import CallContext, error_from_item, error_from_status
from osqueue_io.storage import ObjectStore

Reply = TypeVar("Reply", bound=betterproto2.Message)

_SERVICE = "/osqueue.v1.QueueService/"
#: Pauses between the sends of a call that fails over: doubling, at most this long.
_FIRST_PAUSE = 0.05
_MAX_PAUSE = 1.0
#: Used when a broker does not say how long its leases last (the original's brokers).
DEFAULT_LEASE_TIMEOUT = 30.0


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6 literals) -> (host, port)."""
    parsed = split_host_port(address)
    if parsed is None or not parsed[0]:
        raise InvalidArgument(f"broker address {address!r} is not host:port")
    return parsed


@attrs.frozen
class RemoteJob:
    """A job this worker holds: process ``data``, then complete or fail it by ``id``."""

    id: str
    data: bytes = attrs.field(repr=False)
    #: How many times the job has been claimed, this claim included (0: not reported).
    attempts: int
    #: Seconds the lease lasts without a heartbeat.
    lease_timeout: float
    #: ``time.monotonic()`` when the claim was sent: the lease cannot have started
    #: earlier, so the background heartbeat counts the first lease from here.
    claimed_at: float = attrs.field(default=0.0, repr=False)
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    #: The most attempts the job gets (None: unlimited, or not reported).
    max_attempts: int | None = None


@attrs.frozen
class QueueStats:
    """What the broker reports about its queues and itself (the Stats RPC)."""

    #: Jobs claimable now (delayed ones are counted in ``delayed``).
    ready: int
    claimed: int
    completed_pending_archive: int
    epoch: int
    identity: str
    revision: int
    address: str
    #: Claims waiting for a job (0 from brokers that do not report it).
    waiting_claims: int = 0
    #: Jobs not claimable yet (a delay, a run-at, a retry's backoff), and dead letters.
    delayed: int = 0
    dead: int = 0
    #: Every queue with jobs, by name (empty from brokers that do not report it).
    queues: tuple[QueueInfo, ...] = ()


@attrs.frozen
class LeaseRenewed:
    """A heartbeat's answer: the lease lasts ``lease_timeout`` seconds from now;
    ``cancel_requested``: the job was cancelled, stop working on it."""

    lease_timeout: float
    cancel_requested: bool = False


# -- values the wire cannot carry ------------------------------------------------------


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def push_item(job: NewJob) -> pb.PushItem:
    """``job`` as its wire fields (see the module docstring for what is checked)."""
    return pb.PushItem(**push_fields(job))


def push_fields(job: NewJob) -> dict[str, Any]:
    """The fields of a ``PushItem`` or ``PushRequest`` for ``job``, checked."""
    if not isinstance(job.payload, bytes):
        raise InvalidArgument(f"a job payload must be bytes, got {type(job.payload).__name__}")
    if not isinstance(job.queue, str) or not job.queue:
        check_queue_name(job.queue)  # raises: an empty name would mean "default"
    if job.key is not None and (not isinstance(job.key, str) or not job.key):
        check_key(job.key)  # raises: an empty key would mean "no key"
    priority = check_int("priority", job.priority, -MAX_PRIORITY, MAX_PRIORITY)
    delay = None if job.delay is None else check_seconds("delay", job.delay, MAX_DELAY)
    run_at = None if job.run_at is None else check_seconds("run_at", job.run_at, MAX_WALL)
    limit = job.max_attempts
    if limit is not None:
        check_int("max_attempts", limit, 1, MAX_ATTEMPTS)
    return {
        "data": job.payload,
        "queue": "" if job.queue == DEFAULT_QUEUE else job.queue,
        "priority": priority,
        "delay_ms": 0 if delay is None else _ms(delay),
        "run_at_ms": 0 if run_at is None else _ms(run_at),
        "key": job.key or "",
        "max_attempts": limit or 0,
    }


def queue_names(queues: Sequence[str]) -> list[str]:
    """A claim's queue names as sent: none for just the default queue, which is what
    an empty list means (and what the original protocol's claims ask for)."""
    names = list(claim_queues(queues))
    if not names or not all(isinstance(name, str) for name in names):
        check_queues(names)  # raises: no queue, or a name that is not text
    return [] if names == [DEFAULT_QUEUE] else names


def _optional_name(name: str | None, check: Any) -> str:
    """A name that may be left out (None); an empty one would read as left out."""
    if name is None:
        return ""
    if not isinstance(name, str) or not name:
        check(name)  # raises
    return name


def _seconds(ms: int) -> float | None:
    return ms / 1000 if ms else None


def job_info(message: pb.JobInfo) -> JobInfo:
    """A job's description as the broker sent it."""
    return JobInfo(
        id=message.job_id,
        queue=message.queue,
        priority=message.priority,
        status=message.status,
        attempts=message.attempts,
        max_attempts=message.max_attempts or None,
        created_at=message.created_at_ms / 1000,
        run_at=_seconds(message.run_at_ms),
        last_error=message.last_error,
        holder=message.holder or None,
        key=message.key,
        cancel_requested=message.cancel_requested,
        finished_at=_seconds(message.finished_at_ms),
    )


def _queue_info(message: pb.QueueCounts) -> QueueInfo:
    age = message.oldest_ready_age_ms
    return QueueInfo(
        queue=message.queue,
        ready=message.ready,
        delayed=message.delayed,
        claimed=message.claimed,
        dead=message.dead,
        oldest_ready_age=None if age is None else age / 1000,
    )


# -- the connection ----------------------------------------------------------------------


class ChannelPool:
    """gRPC channels by broker address, shared by the connections of one client (a
    group client has one connection per queue, and a few brokers). At most ``limit``
    are kept: the oldest is closed to make room (its calls in flight fail, and follow
    their owner like any failed call). ``ssl_context``: every channel speaks TLS with
    it (the connections sharing the pool are given the same one)."""

    def __init__(
        self, limit: int = MAX_ADDRESSES, *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._limit = limit
        self.ssl_context = ssl_context
        self._channels: dict[str, Channel] = {}

    def get(self, address: str) -> Channel:
        channel = self._channels.get(address)
        if channel is None:
            host, port = parse_address(address)
            channel = self._channels[address] = Channel(
                host, port, codec=FastProtoCodec(), ssl=self.ssl_context
            )
            while len(self._channels) > self._limit:
                oldest = next(iter(self._channels))
                self._channels.pop(oldest).close()
        return channel

    def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            channel.close()


class BrokerConnection:
    """A gRPC channel to the broker that owns the queue; ``timeout`` is each call's
    deadline in seconds. ``owner`` names the client in errors (``use `async with
    Worker(...)```). :meth:`open` before the first call, :meth:`close` at the end.

    Security (docs/security.md): ``tls_ca`` (a PEM file of the CA that signed the
    broker's certificate) or ``ssl_context`` (any client context, e.g.
    :func:`osqueue_io.security.client_context` for the system's roots) speaks TLS and
    checks that the certificate names the host dialled; ``token`` is sent with every
    call (``authorization: Bearer ...``) to a broker that requires one. Connections
    sharing ``channels`` (a :class:`ChannelPool`) are given the pool's TLS context.

    Where the broker is: ``address`` (one ``host:port``, or several: a broker and its
    standbys), and/or ``store``, the queue's storage, whose state object names its
    owner (:mod:`osqueue_io.discovery`). With more than one place to look, a call that
    cannot reach the owner follows it for up to ``failover_timeout`` seconds, sending
    the call again where that is safe, and every push carries an idempotency key (one
    drawn here when the caller gave none) so that a push sent twice is stored once.
    """

    def __init__(
        self,
        address: str | Sequence[str] | None,
        *,
        timeout: float,
        owner: str,
        store: ObjectStore | None = None,
        state_key: str = "state.json",
        failover_timeout: float = 60.0,
        tls_ca: str | os.PathLike[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        token: str | None = None,
        channels: ChannelPool | None = None,
    ) -> None:
        if not timeout > 0 or not failover_timeout > 0:
            raise InvalidArgument("timeout and failover_timeout must be positive")
        self._ssl = client_tls(tls_ca, ssl_context)
        if channels is not None and channels.ssl_context is not self._ssl:
            # A shared channel would speak TLS (or not) as its pool says, not as asked.
            raise ValueError("a connection sharing a ChannelPool takes the pool's TLS context")
        self._metadata = token_metadata(token)
        if address is None and store is None:
            raise InvalidArgument("give the broker's address(es), or the queue's storage")
        addresses = () if address is None else check_addresses(address)
        self.locator = Locator(addresses, store, state_key)
        self.timeout = timeout
        self.failover_timeout = failover_timeout
        self._owner = owner
        self._channel: Channel | None = None
        self._channel_address: str | None = None
        #: Channels shared with other connections (their owner closes them).
        self._pool = channels
        self._opened = False

    @property
    def address(self) -> str:
        """Where calls go now (the first address given, until a failover)."""
        return self.locator.current or "(not located yet)"

    @property
    def host(self) -> str:
        return parse_address(self.address)[0] if self.locator.current else ""

    @property
    def port(self) -> int:
        return parse_address(self.address)[1] if self.locator.current else 0

    @property
    def discovers(self) -> bool:
        """Whether calls follow the owner to another broker."""
        return self.locator.discovers

    def open(self) -> None:
        """Prepare the connection (made on the first call, remade after a failure)."""
        if self._opened:
            raise RuntimeError(f"the {self._owner} is already open")
        limit_closed_streams()  # ~12 MB per long-lived connection otherwise
        self._opened = True

    def close(self) -> None:
        self._opened = False
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()

    async def _channel_for(self, address: str) -> Channel:
        if self._pool is not None:
            return self._pool.get(address)
        if self._channel is None or self._channel_address != address:
            if self._channel is not None:
                self._channel.close()  # its calls in flight fail, and follow too
            host, port = parse_address(address)
            self._channel = Channel(host, port, codec=FastProtoCodec(), ssl=self._ssl)
            self._channel_address = address
        return self._channel

    def _keyed(self, job: NewJob) -> NewJob:
        """``job`` with an idempotency key, when calls may be sent twice."""
        if job.key is not None or not self.discovers:
            return job
        return attrs.evolve(job, key=f"auto-{uuid.uuid4().hex}")

    # -- publishing ------------------------------------------------------------------

    async def push(self, job: NewJob) -> Pushed:
        request = pb.PushRequest(**push_fields(self._keyed(job)))
        reply = await self.call("Push", request, pb.PushResponse, retry=Retry.ALWAYS)
        return Pushed(reply.job_id, reply.existing)

    async def push_batch(self, jobs: Sequence[bytes | NewJob]) -> PushedBatch:
        """Push ``jobs`` in one write. Plain payloads (or jobs with every option at its
        default) go as ``data``, as the original batch did; others as ``items``."""
        new = [self._keyed(job if isinstance(job, NewJob) else NewJob(job)) for job in jobs]
        items = [push_item(job) for job in new]
        if all(job == NewJob(job.payload) for job in new):
            request = pb.PushBatchRequest(data=[item.data for item in items])
        else:
            request = pb.PushBatchRequest(items=items)
        reply = await self.call("PushBatch", request, pb.PushBatchResponse, retry=Retry.ALWAYS)
        return PushedBatch(tuple(reply.job_ids), tuple(reply.existing))

    # -- consuming -------------------------------------------------------------------

    async def claim(
        self,
        worker_id: str,
        queues: Sequence[str],
        wait: float,
        count: int | None,
        *,
        at: str | None = None,
    ) -> list[RemoteJob]:
        """Claim for ``worker_id``: one job with the Claim RPC (``count`` None, what
        every broker serves), or up to ``count`` with ClaimBatch. Empty when none came
        within ``wait`` seconds. ``at``: send it once to that broker, not following
        the owner (a group client following several queues' owners does that)."""
        wait = check_wait(wait)
        names = queue_names(queues)
        wait_ms = _ms(wait)
        time_limit = self.timeout + wait
        sent_at = time.monotonic()
        if count is None:
            request = pb.ClaimRequest(worker_id=worker_id, wait_ms=wait_ms, queues=names)
            reply = await self.call(
                "Claim",
                request,
                pb.ClaimResponse,
                time_limit=time_limit,
                retry=Retry.ALWAYS,
                at=at,
            )
            if reply.empty:
                return []
            leased = [
                pb.LeasedJob(
                    job_id=reply.job_id,
                    data=reply.data,
                    attempts=reply.attempts,
                    queue=reply.queue,
                    priority=reply.priority,
                    max_attempts=reply.max_attempts,
                )
            ]
            lease_ms = reply.lease_timeout_ms
        else:
            check_int("count", count, 1, MAX_CLAIM_COUNT)
            batch = pb.ClaimBatchRequest(
                worker_id=worker_id, queues=names, wait_ms=wait_ms, max_jobs=count
            )
            answer = await self.call(
                "ClaimBatch",
                batch,
                pb.ClaimBatchResponse,
                time_limit=time_limit,
                retry=Retry.ALWAYS,
                at=at,
            )
            leased, lease_ms = answer.jobs, answer.lease_timeout_ms
        lease_timeout = lease_ms / 1000 or DEFAULT_LEASE_TIMEOUT
        return [
            RemoteJob(
                job.job_id,
                job.data,
                job.attempts,
                lease_timeout,
                sent_at,
                job.queue or DEFAULT_QUEUE,
                job.priority,
                job.max_attempts or None,
            )
            for job in leased
        ]

    async def heartbeat(
        self, job_id: str, worker_id: str, *, time_limit: float | None = None
    ) -> LeaseRenewed:
        request = pb.HeartbeatRequest(job_id=check_id("job_id", job_id), worker_id=worker_id)
        # A heartbeat follows the owner only within its own time: the next one goes
        # to wherever this one found the owner.
        reply = await self.call(
            "Heartbeat",
            request,
            pb.HeartbeatResponse,
            time_limit=time_limit,
            retry=Retry.ALWAYS,
            follow_for=time_limit or self.timeout,
        )
        lease_timeout = reply.lease_timeout_ms / 1000 or DEFAULT_LEASE_TIMEOUT
        return LeaseRenewed(lease_timeout, reply.cancel_requested)

    async def complete(self, job_id: str, worker_id: str, result: bytes | None) -> None:
        if result is not None and not isinstance(result, bytes):
            raise InvalidArgument(f"a job result must be bytes, got {type(result).__name__}")
        request = pb.CompleteRequest(
            job_id=check_id("job_id", job_id), worker_id=worker_id, result=result
        )
        # Sent again after a failover, it may find its first send landed: the job is
        # then finished (JobAlreadyFinished) or archived and gone (JobNotFound).
        await self.call(
            "Complete",
            request,
            pb.CompleteResponse,
            retry=Retry.ALWAYS,
            done_if_retried=(JobAlreadyFinished, JobNotFound),
        )

    async def complete_batch(
        self, items: Sequence[tuple[str, str, bytes | None]]
    ) -> list[OsqueueError | None]:
        """Complete each (job id, worker id, result) in one call: per item, None when
        it completed, else its typed error (as its own Complete would have raised)."""
        for _, _, result in items:
            if result is not None and not isinstance(result, bytes):
                raise InvalidArgument(f"a job result must be bytes, got {type(result).__name__}")
        request = pb.CompleteBatchRequest(
            items=[
                pb.CompleteRequest(job_id=job_id, worker_id=worker_id, result=result)
                for job_id, worker_id, result in items
            ]
        )
        reply = await self.call("CompleteBatch", request, pb.CompleteBatchResponse)
        if len(reply.items) != len(items):
            raise OsqueueError(
                f"CompleteBatch: the broker at {self.address} answered {len(reply.items)} "
                f"items for {len(items)}"
            )
        return [
            error_from_item(
                answer.code,
                answer.message,
                answer.error,
                answer.details,
                CallContext("CompleteBatch", job_id=job_id, worker_id=worker_id),
            )
            for (job_id, worker_id, _), answer in zip(items, reply.items, strict=True)
        ]

    async def fail(self, job_id: str, worker_id: str, error: str, requeue: bool) -> Failed:
        """``error`` must be within ``MAX_ERROR_LENGTH`` (cut it with
        ``clip_error_text``); the broker refuses a longer one."""
        request = pb.FailRequest(
            job_id=check_id("job_id", job_id), worker_id=worker_id, error=error, requeue=requeue
        )
        reply = await self.call("Fail", request, pb.FailResponse)
        return Failed(job_id, reply.dead, _seconds(reply.retry_at_ms), reply.cancelled)

    async def release(self, job_id: str, worker_id: str) -> None:
        request = pb.ReleaseRequest(job_id=check_id("job_id", job_id), worker_id=worker_id)
        await self.call("Release", request, pb.ReleaseResponse)

    # -- operating -------------------------------------------------------------------

    async def cancel(self, job_id: str) -> Cancelled:
        request = pb.CancelRequest(job_id=check_id("job_id", job_id))
        reply = await self.call("Cancel", request, pb.CancelResponse, retry=Retry.ALWAYS)
        return Cancelled(job_id, reply.at_once)

    async def get(self, job_id: str) -> JobInfo:
        request = pb.GetJobRequest(job_id=check_id("job_id", job_id))
        reply = await self.call("GetJob", request, pb.GetJobResponse, retry=Retry.ALWAYS)
        if reply.job is None:
            raise OsqueueError(f"GetJob: the broker at {self.address} described no job")
        return job_info(reply.job)

    async def list_dead(self, queue: str | None, limit: int, after: str | None) -> DeadLetters:
        request = pb.ListDeadRequest(
            queue=_optional_name(queue, check_queue_name),
            limit=check_int("limit", limit, 1, 2**32 - 1),  # 0 would mean the default
            after=_optional_name(after, lambda name: check_id("after", name)),
        )
        reply = await self.call("ListDead", request, pb.ListDeadResponse, retry=Retry.ALWAYS)
        return DeadLetters(tuple(job_info(job) for job in reply.jobs), reply.more)

    async def redrive(self, job_ids: Sequence[str], queue: str | None) -> list[str]:
        request = pb.RedriveRequest(
            job_ids=self._ids(job_ids), queue=_optional_name(queue, check_queue_name)
        )
        return list((await self.call("Redrive", request, pb.RedriveResponse)).job_ids)

    async def purge(self, job_ids: Sequence[str], queue: str | None) -> list[str]:
        request = pb.PurgeRequest(
            job_ids=self._ids(job_ids), queue=_optional_name(queue, check_queue_name)
        )
        return list((await self.call("Purge", request, pb.PurgeResponse)).job_ids)

    @staticmethod
    def _ids(job_ids: Sequence[str]) -> list[str]:
        if isinstance(job_ids, str) or not isinstance(job_ids, Sequence):
            raise InvalidArgument("job_ids must be a list of job ids (not one id)")
        return [check_id("job_id", job_id) for job_id in job_ids]

    async def stats(self, *, at: str | None = None) -> QueueStats:
        """The broker's report (``at``: that broker's, asked once)."""
        reply = await self.call(
            "Stats", pb.StatsRequest(), pb.StatsResponse, retry=Retry.ALWAYS, at=at
        )
        return QueueStats(
            ready=reply.ready,
            claimed=reply.claimed,
            completed_pending_archive=reply.completed_pending_archive,
            epoch=reply.epoch,
            identity=reply.identity,
            revision=reply.revision,
            address=reply.address,
            waiting_claims=reply.waiting_claims,
            delayed=reply.delayed,
            dead=reply.dead,
            queues=tuple(_queue_info(queue) for queue in reply.queues),
        )

    # -- the wire --------------------------------------------------------------------

    async def call(
        self,
        rpc: str,
        request: betterproto2.Message,
        reply_type: type[Reply],
        *,
        time_limit: float | None = None,
        retry: Retry = Retry.IF_NOT_APPLIED,
        done_if_retried: tuple[type[OsqueueError], ...] = (),
        follow_for: float | None = None,
        at: str | None = None,
    ) -> Reply:
        """One unary call with a deadline; every failure becomes a typed error. With
        somewhere else to look, a call that fails over is sent again as ``retry`` allows
        (``done_if_retried``: errors that, for a call sent again, mean the first send
        landed; the call then succeeds with an empty reply; ``follow_for``: how long to
        follow the owner, instead of ``failover_timeout``). ``at``: send it once, there."""
        if not self._opened:
            name = self._owner
            raise BrokerNotRunning(f"the {name} is not open: use `async with {name}(...)`")
        if at is not None:
            return await self._call_once(at, rpc, request, reply_type, time_limit)
        if not self.discovers:
            address = await self.locator.locate()
            return await self._call_once(address, rpc, request, reply_type, time_limit)
        follow = self.failover_timeout if follow_for is None else follow_for
        deadline = time.monotonic() + max(follow, time_limit or 0.0)
        pause = _FIRST_PAUSE
        sent = False
        while True:
            address = await self._locate_until(deadline)
            try:
                return await self._call_once(address, rpc, request, reply_type, time_limit)
            except OsqueueError as error:
                if sent and isinstance(error, done_if_retried):
                    return reply_type()
                allowed = retry is Retry.ALWAYS or (
                    retry is Retry.IF_NOT_APPLIED and certainly_not_applied(error)
                )
                if not fails_over(error) or not allowed or time.monotonic() + pause > deadline:
                    raise
                sent = sent or not certainly_not_applied(error)
                await self.locator.move_on(address, error)
            await anyio.sleep(pause)
            pause = min(pause * 2, _MAX_PAUSE)

    async def _locate_until(self, deadline: float) -> str:
        pause = _FIRST_PAUSE
        while True:
            try:
                return await self.locator.locate()
            except BrokerNotRunning:
                if time.monotonic() + pause > deadline:
                    raise
            await anyio.sleep(pause)
            pause = min(pause * 2, _MAX_PAUSE)

    async def _call_once(
        self,
        address: str,
        rpc: str,
        request: betterproto2.Message,
        reply_type: type[Reply],
        time_limit: float | None,
    ) -> Reply:
        channel = await self._channel_for(address)
        stream = channel.request(
            _SERVICE + rpc,
            Cardinality.UNARY_UNARY,
            type(request),
            reply_type,
            timeout=self.timeout if time_limit is None else time_limit,
            metadata=self._metadata,
        )
        try:
            async with stream:
                await stream.send_message(request, end=True)
                reply = await stream.recv_message()
        except GRPCError as error:
            context = CallContext(
                rpc,
                job_id=getattr(request, "job_id", ""),
                worker_id=getattr(request, "worker_id", ""),
            )
            raise error_from_status(
                error.status, error.message, _trailers(stream), context
            ) from error
        except ssl.SSLError as error:
            # Not the broker restarting: a CA that did not sign its certificate, a name
            # it does not carry, or a broker without TLS. Retrying cannot help.
            raise OsqueueError(
                f"{rpc}: TLS with the broker at {self.address} failed "
                f"({error.reason or error}): give the client the CA that signed the "
                "broker's certificate (tls_ca=), and check that the broker serves TLS "
                "under the name dialled"
            ) from error
        except (OSError, StreamTerminatedError) as error:
            # Refused, reset, or no answer in time (TimeoutError is an OSError): the
            # broker may be restarting. The request may or may not have been applied.
            reason = "no reply in time" if isinstance(error, TimeoutError) else repr(error)
            hint = "" if self._ssl is not None else " (or, if the broker serves TLS, give tls_ca=)"
            raise BrokerNotRunning(
                f"{rpc} to the broker at {self.address} failed ({reason}); "
                f"retry, the connection is re-established by itself{hint}"
            ) from error
        except AttributeError as error:
            if not _raised_by_grpclib(error):
                raise
            # grpclib 0.4 can hand out a connection that the broker already closed
            # (it died with connections still queued): the stream then fails before
            # anything was sent. Seen by the crash soak about once per 100 kills.
            raise BrokerNotRunning(
                f"{rpc} to the broker at {address} failed (the connection was closed "
                "before the call was sent); retry, the connection is re-established by itself"
            ) from error
        if reply is None:
            raise BrokerNotRunning(f"{rpc}: the broker at {address} sent no reply")
        return reply


def client_tls(
    tls_ca: str | os.PathLike[str] | None, ssl_context: ssl.SSLContext | None
) -> ssl.SSLContext | None:
    """The TLS context of a client given ``tls_ca`` or ``ssl_context`` (None: plaintext)."""
    if tls_ca is not None and ssl_context is not None:
        raise InvalidArgument("give tls_ca or ssl_context, not both")
    if tls_ca is None:
        return ssl_context
    try:
        return client_context(tls_ca)
    except TlsConfigError as error:
        raise InvalidArgument(str(error)) from None


def token_metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    """The metadata carrying ``token``, checked as the broker would (never quoted)."""
    if token is None:
        return None
    if not sendable_token(token):
        raise InvalidArgument(
            f"a token is 1 to {MAX_TOKEN_LENGTH} printable ASCII characters without "
            "spaces (as the broker's token file has it)"
        )
    return (("authorization", f"Bearer {token}"),)


def _raised_by_grpclib(error: BaseException) -> bool:
    """Whether ``error`` was raised inside grpclib (not by a bug of ours)."""
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return frame is not None and frame.tb_frame.f_globals.get("__name__", "").startswith("grpclib")


def _trailers(stream: Stream[Any, Any]) -> Mapping[str, object] | None:
    """The trailing metadata of a failed call, where the typed error is named.

    grpclib sets ``trailing_metadata`` only when it read the answer itself. When the
    broker answers while the request is still being sent (it refuses a large request
    from its length prefix, then resets the stream), grpclib raises the status from the
    HTTP/2 stream's headers and leaves ``trailing_metadata`` unset. Those headers are a
    grpclib internal (``Stream._stream.headers``); if they move, the status code alone
    decides, and tests/io/distributed/test_hostile_requests.py fails (an ``Overloaded``
    refusal would read as ``PayloadTooLarge``).
    """
    if stream.trailing_metadata is not None:
        return stream.trailing_metadata
    headers = getattr(getattr(stream, "_stream", None), "headers", None)
    return decode_metadata(headers) if headers else None
