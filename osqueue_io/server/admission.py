"""Which incoming calls the broker serves, which are still running, and their deadlines.

An :class:`Admission` sees every call first (:meth:`Admission.admit`, called by the
request reader, :mod:`osqueue_io.server.reader`, in the call's own handler task before
anything else; a grpclib event listener would cost an event object per call) and keeps
the broker's intake bounded:

* at most ``max_concurrent_calls`` calls at once (waiting claims included); one more
  is refused at once with RESOURCE_EXHAUSTED (``Overloaded``, retryable), before its
  request is read;
* at most ``max_request_bytes_in_flight`` bytes of requests held at once: the request
  reader (:mod:`osqueue_io.server.reader`) reserves a request's declared length before
  reading it (:meth:`Admission.reserve_request_bytes`), and the reservation lasts until
  the call ends, reply sent. A request that does not fit is ``Overloaded`` too: it is
  load, not a bad request.

While open it admits the call, remembers its task, and records the client's deadline in
:data:`call_deadline` for the handler. grpclib's own ``Server.close()`` cancels running
handlers without a reply, so the broker drains by itself: once
:meth:`Admission.refuse` was called, new calls get that error at once (UNAVAILABLE for
a stopping or replaced broker) and :meth:`Admission.wait_idle` waits for the admitted
ones to finish sending their replies.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar

import anyio
from grpclib.metadata import Deadline

from osqueue_core import OsqueueError, Overloaded
from osqueue_io.status import to_grpc_error

#: The deadline the client set for the call being handled (None: it set none).
call_deadline: ContextVar[Deadline | None] = ContextVar("call_deadline", default=None)

#: Calls served at once unless configured otherwise: room for a thousand workers
#: long-polling, each call costing a task and a little memory.
DEFAULT_MAX_CONCURRENT_CALLS = 1000
#: By default the in-flight budget holds this many requests of the largest size allowed.
DEFAULT_FULL_REQUESTS_IN_FLIGHT = 4


class Admission:
    """Admits calls, within its limits, until told to refuse them; tracks the admitted
    ones (and the request bytes they hold) until done."""

    def __init__(self, *, max_concurrent_calls: int, max_request_bytes_in_flight: int) -> None:
        if max_concurrent_calls < 1 or max_request_bytes_in_flight < 1:
            raise ValueError(
                "max_concurrent_calls and max_request_bytes_in_flight must be positive"
            )
        self.max_concurrent_calls = max_concurrent_calls
        self.max_request_bytes_in_flight = max_request_bytes_in_flight
        self._refusal: OsqueueError | None = None
        # grpclib runs each call in its own asyncio task; waiting for those tasks (not
        # just for our handler functions) covers sending the reply and its trailers.
        self._running: set[asyncio.Task[object]] = set()
        self._reserved: dict[asyncio.Task[object], int] = {}
        self._bytes_in_flight = 0
        self._idle: anyio.Event | None = None  # made on first use, inside the event loop

    @property
    def running(self) -> int:
        """How many admitted calls have not finished yet."""
        return len(self._running)

    @property
    def refusing(self) -> bool:
        return self._refusal is not None

    def reserve_request_bytes(self, size: int) -> None:
        """Count ``size`` bytes of the current call's request as in flight until the
        call ends; raise ``Overloaded`` (nothing reserved) if they do not fit. Call from
        an admitted call's task, before reading the request."""
        task = asyncio.current_task()
        if task is None or task not in self._running:
            raise RuntimeError("reserve_request_bytes is for the task of an admitted call")
        if self._bytes_in_flight + size > self.max_request_bytes_in_flight:
            raise Overloaded(
                f"a request of {size} bytes does not fit: the broker holds "
                f"{self._bytes_in_flight} bytes of requests in flight, of at most "
                f"{self.max_request_bytes_in_flight}; retry after a pause"
            )
        self._bytes_in_flight += size
        self._reserved[task] = self._reserved.get(task, 0) + size

    def refuse(self, error: OsqueueError) -> None:
        """From now on answer every new call with ``error`` (the first reason sticks)."""
        if self._refusal is None:
            self._refusal = error
        if not self._running:
            self._idle_event().set()

    async def wait_idle(self) -> None:
        """Wait until every admitted call has finished. Call after :meth:`refuse`; bound
        it with a timeout (a client may never finish sending its request)."""
        await self._idle_event().wait()

    def _idle_event(self) -> anyio.Event:
        if self._idle is None:
            self._idle = anyio.Event()
        return self._idle

    def admit(self, deadline: Deadline | None) -> None:
        """Admit the current call (``deadline``: its client's), from its handler task
        before its request is read; raise its refusal as a ``GRPCError``."""
        if self._refusal is not None:
            raise to_grpc_error(self._refusal)
        if len(self._running) >= self.max_concurrent_calls:
            raise to_grpc_error(
                Overloaded(
                    f"the broker is serving {len(self._running)} calls, as many as it "
                    "allows at once; retry after a pause"
                )
            )
        call_deadline.set(deadline)
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[object]) -> None:
        self._running.discard(task)
        self._bytes_in_flight -= self._reserved.pop(task, 0)
        if self._refusal is not None and not self._running:
            self._idle_event().set()
