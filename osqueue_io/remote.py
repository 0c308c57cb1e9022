"""``Worker``: the async client of a remote osqueue broker, for publishers and consumers.

::

    async with Worker("broker-host:9090") as worker:
        job_id = await worker.push(b"payload")
        job = await worker.claim(wait=5)          # None when nothing came within 5 s
        if job is not None:
            async with worker.processing(job):    # heartbeats; completes on success
                handle(job.data)

Every call has a deadline (``timeout``; a waiting claim gets ``wait`` on top). Every
failure is a typed :class:`~osqueue_core.OsqueueError`, the one the broker's
``osqueue-error`` trailer names (see :mod:`osqueue_io.status`): ``LeaseLost`` /
``JobNotFound`` say stop working on that job, ``InvalidArgument`` /
``PayloadTooLarge`` say fix the request, and ``error.retryable`` errors
(``BrokerNotRunning``, ``BrokerStopping``, ``BrokerReplaced``, ``StorageUnavailable``,
``Overloaded``, ``CallInterrupted``) say try again later, or at ``error.new_address``
for a replaced broker. A broker that is down, restarting, or silent past the deadline
is ``BrokerNotRunning``; then, as after ``CallInterrupted``, a push may or may not have
landed (at-least-once). The connection is re-established by itself once the broker is
back.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import attrs
import betterproto2
from grpclib import GRPCError
from grpclib.client import Channel, Stream
from grpclib.const import Cardinality
from grpclib.exceptions import StreamTerminatedError
from grpclib.metadata import decode_metadata

from osqueue_core import BrokerNotRunning, InvalidArgument, check_id, clip_error_text
from osqueue_core.limits import check_wait
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
    StatsRequest,
    StatsResponse,
)
from osqueue_io.address import split_host_port
from osqueue_io.http2 import limit_closed_streams
from osqueue_io.keepalive import Lease, default_interval, keep_alive, process_job
from osqueue_io.resource import AsyncResource
from osqueue_io.status import CallContext, error_from_status

Reply = TypeVar("Reply", bound=betterproto2.Message)

_SERVICE = "/osqueue.v1.QueueService/"
#: Used when a broker does not say how long its leases last (the original's brokers).
DEFAULT_LEASE_TIMEOUT = 30.0


def default_worker_id() -> str:
    """``host:pid:random``: unique per Worker, readable in the state object (a host
    name is at most 253 characters, so the id stays within ``MAX_ID_LENGTH``)."""
    return f"{socket.gethostname()[:200]}:{os.getpid()}:{secrets.token_hex(3)}"


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


@attrs.frozen
class QueueStats:
    """What the broker reports about its queue and itself (the Stats RPC)."""

    ready: int
    claimed: int
    completed_pending_archive: int
    epoch: int
    identity: str
    revision: int
    address: str
    #: Claims waiting for a job (0 from brokers that do not report it).
    waiting_claims: int = 0


class Worker(AsyncResource):
    """A connection to the broker at ``address``, acting as worker ``worker_id``.

    ``timeout`` is every call's deadline in seconds. ``heartbeat_interval`` is how
    often :meth:`keep_alive` heartbeats (default: a third of the lease timeout). Use
    with ``async with``; one Worker may be shared by many tasks.

    Requests are checked against the broker's limits (``osqueue_core.limits``) before
    anything is sent: a ``worker_id`` or job id longer than ``MAX_ID_LENGTH``, or a
    claim ``wait`` over ``MAX_CLAIM_WAIT``, raises ``InvalidArgument``; a ``fail``
    error text over ``MAX_ERROR_LENGTH`` is cut (its start and end kept).
    """

    def __init__(
        self,
        address: str = "127.0.0.1:9090",
        *,
        worker_id: str | None = None,
        heartbeat_interval: float | None = None,
        timeout: float = 10.0,
    ) -> None:
        if not timeout > 0:
            raise InvalidArgument("timeout must be positive")
        if heartbeat_interval is not None and not heartbeat_interval > 0:
            raise InvalidArgument("heartbeat_interval must be positive")
        self.address = address
        self.host, self.port = parse_address(address)
        self.worker_id = (
            default_worker_id() if worker_id is None else check_id("worker_id", worker_id)
        )
        self.heartbeat_interval = heartbeat_interval
        self.timeout = timeout
        self._channel: Channel | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Prepare the connection (made on the first call, remade after a failure)."""
        if self._channel is not None:
            raise RuntimeError("the worker is already open")
        limit_closed_streams()  # ~12 MB per long-lived connection otherwise
        self._channel = Channel(self.host, self.port)

    async def aclose(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()

    # -- publishing ------------------------------------------------------------------

    async def push(self, data: bytes) -> str:
        """Add a job; returns its id once the broker has stored it."""
        reply = await self._call("Push", PushRequest(data=data), PushResponse)
        return reply.job_id

    async def push_batch(self, data: Sequence[bytes]) -> list[str]:
        """Add several jobs in one storage write; returns their ids, in order. On an
        error none is acknowledged (but some may have been stored: at-least-once)."""
        request = PushBatchRequest(data=list(data))
        return list((await self._call("PushBatch", request, PushBatchResponse)).job_ids)

    # -- consuming -------------------------------------------------------------------

    async def claim(self, *, wait: float = 0) -> RemoteJob | None:
        """Take the oldest ready job, waiting up to ``wait`` seconds for one to arrive.
        Returns None when none came. Long-poll in a loop for longer waits."""
        wait = check_wait(wait)
        request = ClaimRequest(worker_id=self.worker_id, wait_ms=round(wait * 1000))
        sent_at = time.monotonic()
        reply = await self._call("Claim", request, ClaimResponse, time_limit=self.timeout + wait)
        if reply.empty:
            return None
        lease_timeout = reply.lease_timeout_ms / 1000 or DEFAULT_LEASE_TIMEOUT
        return RemoteJob(reply.job_id, reply.data, reply.attempts, lease_timeout, sent_at)

    async def heartbeat(self, job_id: str) -> float:
        """Renew the lease on ``job_id``; returns how many seconds it now lasts.
        Raises ``LeaseLost`` or ``JobNotFound`` if this worker no longer holds it."""
        return await self._heartbeat(job_id, self.timeout)

    async def _heartbeat(self, job_id: str, time_limit: float) -> float:
        request = HeartbeatRequest(job_id=check_id("job_id", job_id), worker_id=self.worker_id)
        reply = await self._call("Heartbeat", request, HeartbeatResponse, time_limit=time_limit)
        return reply.lease_timeout_ms / 1000 or DEFAULT_LEASE_TIMEOUT

    async def complete(self, job_id: str) -> None:
        """Mark ``job_id`` done: it leaves the queue and is archived."""
        request = CompleteRequest(job_id=check_id("job_id", job_id), worker_id=self.worker_id)
        await self._call("Complete", request, CompleteResponse)

    async def fail(self, job_id: str, error: str = "", requeue: bool = True) -> bool:
        """Give up on ``job_id``: requeue it (default) or dead-letter it, keeping
        ``error`` with it (cut to ``MAX_ERROR_LENGTH`` characters). Returns True when the
        job is dead (not requeued, or out of attempts)."""
        request = FailRequest(
            job_id=check_id("job_id", job_id),
            worker_id=self.worker_id,
            error=clip_error_text(error),
            requeue=requeue,
        )
        return (await self._call("Fail", request, FailResponse)).dead

    async def stats(self) -> QueueStats:
        reply = await self._call("Stats", StatsRequest(), StatsResponse)
        return QueueStats(
            ready=reply.ready,
            claimed=reply.claimed,
            completed_pending_archive=reply.completed_pending_archive,
            epoch=reply.epoch,
            identity=reply.identity,
            revision=reply.revision,
            address=reply.address,
            waiting_claims=reply.waiting_claims,
        )

    @asynccontextmanager
    async def keep_alive(self, job: RemoteJob) -> AsyncIterator[Lease]:
        """Heartbeat ``job`` in the background while the block runs.

        If the lease is lost (the broker says so, or no heartbeat got through before
        it ran out), the block is cancelled and ``LeaseLost`` is raised here. Completing
        or failing the job is left to the caller (see :meth:`processing`).
        """
        interval = self.heartbeat_interval or default_interval(job.lease_timeout)
        # A heartbeat stuck longer than half a lease is better retried.
        time_limit = min(self.timeout, max(job.lease_timeout / 2, 0.05))
        async with keep_alive(
            job.id,
            self.worker_id,
            lambda: self._heartbeat(job.id, time_limit),
            interval=interval,
            lease_timeout=job.lease_timeout,
            expires_at=job.claimed_at + job.lease_timeout if job.claimed_at else None,
        ) as lease:
            yield lease

    def processing(
        self, job: RemoteJob, *, requeue_on_error: bool = True
    ) -> AbstractAsyncContextManager[Lease]:
        """Process ``job`` safely: heartbeat while the block runs, ``complete`` it when
        the block succeeds, ``fail`` it (requeue by default) when the block raises.

        If the lease is lost the block is cancelled and ``LeaseLost`` is raised; the job
        is then neither completed nor failed here (another worker may hold it).
        """
        return process_job(
            self.keep_alive(job),
            lambda: self.complete(job.id),
            lambda error: self.fail(job.id, error, requeue=requeue_on_error),
        )

    # -- the wire --------------------------------------------------------------------

    async def _call(
        self,
        rpc: str,
        request: betterproto2.Message,
        reply_type: type[Reply],
        *,
        time_limit: float | None = None,
    ) -> Reply:
        """One unary call with a deadline; every failure becomes a typed error."""
        if self._channel is None:
            raise BrokerNotRunning("the worker is not open: use `async with Worker(...)`")
        stream = self._channel.request(
            _SERVICE + rpc,
            Cardinality.UNARY_UNARY,
            type(request),
            reply_type,
            timeout=self.timeout if time_limit is None else time_limit,
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
        except (OSError, StreamTerminatedError) as error:
            # Refused, reset, or no answer in time (TimeoutError is an OSError): the
            # broker may be restarting. The request may or may not have been applied.
            reason = "no reply in time" if isinstance(error, TimeoutError) else repr(error)
            raise BrokerNotRunning(
                f"{rpc} to the broker at {self.address} failed ({reason}); "
                "retry, the connection is re-established by itself"
            ) from error
        except AttributeError as error:
            if not _raised_by_grpclib(error):
                raise
            # grpclib 0.4 can hand out a connection that the broker already closed
            # (it died with connections still queued): the stream then fails before
            # anything was sent. Seen by the crash soak about once per 100 kills.
            raise BrokerNotRunning(
                f"{rpc} to the broker at {self.address} failed (the connection was closed "
                "before the call was sent); retry, the connection is re-established by itself"
            ) from error
        if reply is None:
            raise BrokerNotRunning(f"{rpc}: the broker at {self.address} sent no reply")
        return reply


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
