"""Which incoming calls the broker serves, which are still running, and their deadlines.

grpclib's own ``Server.close()`` cancels running handlers without a reply, so the broker
drains by itself: an :class:`Admission` sees every call first (a ``RecvRequest``
listener, which runs in the call's own handler task). While open it admits the call,
remembers its task, and records the client's deadline in :data:`call_deadline` for the
handler. Once :meth:`Admission.refuse` was called, new calls get that error at once
(UNAVAILABLE for a stopping or replaced broker) and :meth:`Admission.wait_idle` waits
for the admitted ones to finish sending their replies.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar

import anyio
from grpclib.events import RecvRequest, listen
from grpclib.metadata import Deadline
from grpclib.server import Server

from osqueue_core import OsqueueError
from osqueue_io.status import to_grpc_error

#: The deadline the client set for the call being handled (None: it set none).
call_deadline: ContextVar[Deadline | None] = ContextVar("call_deadline", default=None)


class Admission:
    """Admits calls until told to refuse them; tracks the admitted ones until done."""

    def __init__(self) -> None:
        self._refusal: OsqueueError | None = None
        # grpclib runs each call in its own asyncio task; waiting for those tasks (not
        # just for our handler functions) covers sending the reply and its trailers.
        self._running: set[asyncio.Task[object]] = set()
        self._idle: anyio.Event | None = None  # made on first use, inside the event loop

    def attach(self, server: Server) -> None:
        listen(server, RecvRequest, self._on_request)

    @property
    def running(self) -> int:
        """How many admitted calls have not finished yet."""
        return len(self._running)

    @property
    def refusing(self) -> bool:
        return self._refusal is not None

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

    async def _on_request(self, event: RecvRequest) -> None:
        if self._refusal is not None:
            raise to_grpc_error(self._refusal)
        call_deadline.set(event.deadline)
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[object]) -> None:
        self._running.discard(task)
        if self._refusal is not None and not self._running:
            self._idle_event().set()
