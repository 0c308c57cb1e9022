"""One queue of a scale-out group inside one member: its broker, life after life.

Every member runs, for every queue of the group, a :class:`~osqueue_io.runtime.BrokerRuntime`
that starts as a standby (``BrokerConfig.standby``). Owner leases and fencing decide
which member owns the queue, exactly as for a broker and its standbys
(docs/high-availability.md). :meth:`QueueSlot.run` is the loop of one queue:

1. make a standby runtime, held or not as the member's balance says, and open it: it
   returns once its takeover landed (or the member stops);
2. serve until replaced (another member took over: ``BrokerReplaced``), asked to
   release the queue (the balance gives it away), or the member stops;
3. close the runtime (a release or a stop is graceful: accepted requests are answered
   and the state released, so a standby takes over at once), and go round as a
   standby again, unless the member stops.

While the runtime is a standby, calls for the queue are answered ``NotOwner`` naming
the owner it watches (:meth:`QueueSlot.not_owner`); between two lives, ``NotOwner``
with no owner.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import anyio

from osqueue_core import BrokerReplaced, NotOwner, OsqueueError, Phase
from osqueue_io.http.monitor import BrokerMonitor
from osqueue_io.runtime import BrokerRuntime
from osqueue_io.server.service import QueueService

log = logging.getLogger("osqueue.group")

#: Phases in which a member counts a queue as its own: taking it over, or serving it.
OWNING = (Phase.STARTING, Phase.RUNNING)


class QueueSlot:
    """Queue ``queue`` in this member (``identity``), which clients reach at ``address``.

    ``make_runtime()`` builds a standby runtime for it; ``held()`` says whether new
    standbys start held; ``changed()`` tells the member's balance that what this member
    owns changed; a broker that fails for another reason than a replacement is tried
    again after ``retry_after`` seconds. Each runtime is attached to ``monitor`` (the
    queue's, for the member's dashboard and metrics) while it lives."""

    def __init__(
        self,
        queue: str,
        *,
        identity: str,
        address: str,
        make_runtime: Callable[[], BrokerRuntime],
        held: Callable[[], bool],
        changed: Callable[[], None],
        retry_after: float,
        clock: Callable[[], float],
        monitor: BrokerMonitor,
    ) -> None:
        self.queue = queue
        self.monitor = monitor
        self.identity = identity
        self.address = address
        self._make_runtime = make_runtime
        self._held = held
        self._changed = changed
        self._retry_after = retry_after
        self._clock = clock
        self.runtime: BrokerRuntime | None = None
        self.service: QueueService | None = None
        #: When this member took the queue over (its clock), while it owns it.
        self.owned_since = math.inf
        self._wake: anyio.Event | None = None
        self._releasing = False
        self._stopping = False
        #: Takeovers that landed here, releases given, replacements suffered.
        self.takeovers = 0
        self.releases = 0
        self.replaced = 0

    @property
    def phase(self) -> Phase | None:
        return None if self.runtime is None else self.runtime.broker_phase

    @property
    def serving(self) -> QueueService | None:
        """Where calls for the queue go in this member: its broker unless it stands by
        (taking over, it queues them; stopping, it refuses them ``BrokerStopping``)."""
        if self.phase in (None, Phase.STANDBY):
            return None
        return self.service

    @property
    def owns(self) -> bool:
        """Whether this member is taking the queue over or serving it."""
        return self.phase in OWNING

    def not_owner(self) -> NotOwner:
        """The answer to a call for this queue while this member does not serve it:
        the owner its standby watches, unless that is this member still (it released
        the queue, and its standby has not read the new owner's state yet): then no
        owner, and the caller looks in the bucket."""
        if self.runtime is None:
            return NotOwner("", 0, None)
        answer = self.runtime.not_owner()
        if answer.new_identity == self.identity or answer.new_address == self.address:
            return NotOwner("", 0, None)
        return answer

    def hold(self, held: bool) -> None:
        if self.runtime is not None:
            self.runtime.hold_takeover(held)

    def release(self) -> None:
        """Give the queue away: stop serving it gracefully, then stand by again."""
        if self.phase is Phase.RUNNING:
            self._releasing = True
            self._wake_up()

    def stop(self) -> None:
        """The member stops: release the queue if it serves it, stop watching it."""
        self._stopping = True
        if self.runtime is not None:
            # Standing by, it stops watching; taking over, it releases once its takeover
            # lands (or stops, if it lost); serving, it starts its graceful stop now.
            self.runtime.request_stop()
        self._wake_up()

    def _wake_up(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """The queue's lives in this member, until :meth:`stop` (call in one task)."""
        while not self._stopping:
            runtime = self._make_runtime()
            runtime.hold_takeover(self._held())
            self.runtime = runtime
            self.monitor.attach(runtime)
            self.service = QueueService(runtime, address=self.address, on_failure=_ignore)
            self._wake = anyio.Event()
            try:
                failure = await self._live(runtime)
            finally:
                await runtime.aclose()  # in this task, which opened it (anyio's rule)
                self.monitor.detach(runtime)
                self.runtime = self.service = None
                self.owned_since = math.inf
                self._changed()
            if failure is not None and not self._stopping:
                self._wake = anyio.Event()
                with anyio.move_on_after(self._retry_after):
                    await self._wait()

    async def _live(self, runtime: BrokerRuntime) -> OsqueueError | None:
        """One life: stand by, maybe serve; the failure to wait after (None: none)."""
        if self._stopping:
            return None
        try:
            await runtime.open()
        except OsqueueError as error:
            log.error("queue %s: %s; trying again in %gs", self.queue, error, self._retry_after)
            return error
        if runtime.broker_phase is not Phase.RUNNING:
            return None  # stopped while standing by
        self.takeovers += 1
        self.owned_since = self._clock()
        self._changed()
        log.info("queue %s: serving it (epoch %d)", self.queue, runtime.stats().epoch)
        async with anyio.create_task_group() as watch:

            async def failed() -> None:
                await runtime.wait_for_phase(Phase.FAILED)
                self._wake_up()

            watch.start_soon(failed)
            await self._wait()
            watch.cancel_scope.cancel()
        failure = runtime.failure
        if isinstance(failure, BrokerReplaced):
            self.replaced += 1
            log.warning("queue %s: %s; standing by again", self.queue, failure)
            return None
        if isinstance(failure, OsqueueError):
            log.error("queue %s: the broker failed: %s", self.queue, failure)
            return failure
        if self._releasing:
            self._releasing = False
            self.releases += 1
            log.info("queue %s: releasing it to a member below its share", self.queue)
        return None

    async def _wait(self) -> None:
        if self._wake is None:
            self._wake = anyio.Event()
        await self._wake.wait()


def _ignore(failure: BaseException) -> None:
    """The slot's own watch notices a failed broker; the service need not report it."""
