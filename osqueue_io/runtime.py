"""The anyio runtime: one task owns a core ``Broker`` and executes its effects.

After every batch of inputs the core task drains the broker's effects: replies wake
their callers, storage effects run as independent tasks against an
:class:`~osqueue_io.storage.ObjectStore` and report back as inputs, and the task sleeps
until the next input or the broker's ``next_deadline()``. The runtime holds no policy:
retries, batching, leases and fencing are the core's; this module only reports what
storage did.

Callers use :meth:`BrokerRuntime.request` (or :meth:`BrokerRuntime.request_many`) from
any task on the same event loop. Open a runtime with ``async with BrokerRuntime(...)``;
leaving the block stops the broker cleanly (in-flight requests get their reply,
ownership is released).

The per-request path is kept cheap (docs/performance.md, "CPU per operation"):
commands queued together reach the broker as one input (``Broker.submit_many``), and a
caller waits on a plain asyncio future rather than an anyio event (the runtime runs on
asyncio anyway: grpclib and obstore need it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence

import anyio
import attrs
from anyio.abc import TaskGroup

from osqueue_core import (
    MAX_ID_LENGTH,
    Broker,
    BrokerConfig,
    BrokerNotRunning,
    BrokerStats,
    Claim,
    Claimed,
    ClaimedBatch,
    Command,
    DeleteObject,
    Job,
    JobsPage,
    KeysListed,
    ListKeys,
    NotOwner,
    ObjectCorrupt,
    ObjectDeleted,
    ObjectRead,
    ObjectWritten,
    OsqueueError,
    Phase,
    ReadObject,
    ReadVersion,
    Release,
    Reply,
    RequestId,
    Result,
    StorageEffect,
    StorageFailed,
    StorageResult,
    VersionRead,
    WriteConflicted,
    WriteObject,
)
from osqueue_io.broker_log import BrokerLog
from osqueue_io.resource import AsyncResource
from osqueue_io.storage import (
    AlreadyExists,
    CorruptObject,
    ObjectStore,
    ObjectVersion,
    OutcomeUnknown,
    StorageError,
    WriteConflict,
)

log = logging.getLogger("osqueue.runtime")

Clock = Callable[[], float]


def default_identity() -> str:
    """``host:pid``: names this broker in the state object and in errors (the host
    name is cut so the whole stays within ``MAX_ID_LENGTH``)."""
    pid = str(os.getpid())
    return f"{socket.gethostname()[: MAX_ID_LENGTH - len(pid) - 1]}:{pid}"


@attrs.frozen
class _Submit:
    """Commands from one caller, submitted together."""

    commands: tuple[Command, ...]


@attrs.frozen
class _CancelClaim:
    request_id: RequestId


@attrs.frozen
class _HandBack:
    """A claim's caller left after its reply arrived: give the job back."""

    command: Release


def granted_jobs(result: Result | None) -> tuple[str, ...]:
    """The ids of the jobs a claim's result grants: one for ``Claimed``, each of a
    ``ClaimedBatch`` (a claim with ``count`` > 1), none otherwise."""
    if isinstance(result, Claimed):
        return (result.job_id,)
    if isinstance(result, ClaimedBatch):
        return tuple(job.job_id for job in result.jobs)
    return ()


@attrs.frozen
class _Stop:
    pass


@attrs.frozen
class _Hold:
    """Hold back (or let go) the standby's takeover."""

    held: bool


_Input = _Submit | _CancelClaim | _HandBack | _Stop | _Hold | StorageResult


class _Waiter:
    """A caller waiting for the replies to the commands it submitted together: one
    future, resolved once every reply has come (cheaper than an event per request)."""

    __slots__ = ("future", "remaining", "replies")

    def __init__(self, future: asyncio.Future[None], count: int) -> None:
        self.future = future
        self.replies: list[Reply | None] = [None] * count
        self.remaining = count

    def answer(self, index: int, reply: Reply) -> None:
        if self.replies[index] is None:
            self.replies[index] = reply
            self.remaining -= 1
            if not self.remaining and not self.future.done():
                self.future.set_result(None)


def _outcome(reply: Reply) -> Result | OsqueueError:
    if reply.error is not None:
        return reply.error
    assert reply.result is not None
    return reply.result


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class BrokerRuntime(AsyncResource):
    """Runs one :class:`~osqueue_core.Broker` against one object store.

    ``clock`` drives every timer of the core (``time.monotonic`` by default: a wall
    clock stepped by NTP must not expire leases or stall retries); ``wall_clock`` only
    stamps jobs and picks archive buckets (``time.time``). ``storage_timeout`` bounds
    each storage call: a write that does not answer in time is reported as "outcome
    unknown" (the core reads the state back), a read as failed (the core retries); a
    backend that works in threads (the local filesystem) cannot be interrupted, so its
    own bounds (the local store's ``lock_timeout``) matter there. ``shutdown_timeout``
    bounds how long a clean stop may wait for storage before the remaining callers get
    ``BrokerNotRunning``. ``max_pending_requests`` (default: the config's
    ``max_queued_commands``) is how many requests may wait for the broker at once;
    callers beyond it wait their turn (backpressure) instead of being refused. Claims
    that wait for a job do not count: the core bounds them (``max_waiting_claims``).
    """

    def __init__(
        self,
        store: ObjectStore,
        config: BrokerConfig | None = None,
        *,
        identity: str | None = None,
        address: str | None = None,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        storage_timeout: float = 30.0,
        shutdown_timeout: float = 30.0,
        max_pending_requests: int | None = None,
    ) -> None:
        if not storage_timeout > 0 or not shutdown_timeout > 0:
            raise ValueError("storage_timeout and shutdown_timeout must be positive")
        self.store = store
        self._storage_timeout = storage_timeout
        self.config = config or BrokerConfig()
        self._clock = clock
        self._wall_clock = wall_clock
        self._shutdown_timeout = shutdown_timeout
        self._max_pending = max_pending_requests or self.config.max_queued_commands
        if self._max_pending < 1:
            raise ValueError("max_pending_requests must be at least 1")
        self._broker = Broker(
            self.config,
            identity=identity or default_identity(),
            incarnation=uuid.uuid4().hex,
            address=address,
        )
        # Inputs for the core task. Unbounded in type only: requests enter through
        # ``_slots`` (or are waiting claims, bounded by the core), storage results are
        # bounded by the effects in flight, so at most that many inputs can queue here.
        # A plain deque and one future to wake the core task: the per-request path
        # needs nothing more (the runtime runs on asyncio, as grpclib and obstore need).
        self._inputs: deque[_Input] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._slots: anyio.Semaphore | None = None
        #: Request id -> the caller waiting for its reply, and the reply's place.
        self._waiting: dict[RequestId, tuple[_Waiter, int]] = {}
        #: Claims whose caller left before their reply came: request id -> worker id.
        #: A grant that still arrives (its write landed just before the withdrawal
        #: reached the core) is handed back; every request gets one reply, so this
        #: holds at most the claims in flight.
        self._abandoned: dict[RequestId, str] = {}
        self._next_request = 0
        self._started = anyio.Event()
        # Made when somebody waits for progress (wait_for_phase, wait_until), so the
        # core task does not make an event per step for nobody.
        self._progress: anyio.Event | None = None
        self._finished = anyio.Event()
        self._task_group: TaskGroup | None = None
        self._closed = False
        self._stopping = False
        self._log = BrokerLog(store.url)
        self._stop_early = False

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Take over the state object. Raises the broker's failure if it cannot. A
        standby (``BrokerConfig.standby``) returns once it took over, or was stopped.

        Cancelled while taking over (``move_on_after`` around ``async with``), it ends
        its tasks before re-raising: nothing is left running.
        """
        if self._task_group is not None:
            raise RuntimeError("the runtime was already opened")
        self._slots = anyio.Semaphore(self._max_pending)
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        try:
            self._broker.start(self._clock(), self._wall_clock())
            self._dispatch()
            task_group.start_soon(self._core_loop)
            if self._stop_early:
                self._put(_Stop())
            await self._started.wait()
        except BaseException:
            # Leave the task group here, in the task that entered it, as anyio
            # requires; the exception (a cancellation, usually) goes on up.
            self._closed = True
            task_group.cancel_scope.cancel()
            await task_group.__aexit__(None, None, None)
            self._fail_waiting(BrokerNotRunning("the broker runtime was closed"))
            raise
        if self._broker.phase is Phase.FAILED:
            failure = self._broker.failure
            await self.aclose()
            assert failure is not None
            raise failure

    def request_stop(self) -> None:
        """Ask the broker to stop, from the event loop, without waiting: a standby
        stops watching (``open`` then returns), an owner drains as in :meth:`stop`.
        Asked before :meth:`open`, the broker stops as soon as it starts."""
        if self._closed:
            return
        if self._task_group is None:
            self._stop_early = True
        else:
            self._put(_Stop())

    def hold_takeover(self, held: bool) -> None:
        """Hold back (or let go) a standby's takeover (``Broker.hold_takeover``), from
        the event loop; before :meth:`open` too, so a standby can start held."""
        if self._task_group is None:
            self._broker.hold_takeover(held, self._clock(), self._wall_clock())
        elif not self._closed:
            self._put(_Hold(held))

    async def stop(self) -> None:
        """Stop the broker cleanly, from any task: new requests are refused, accepted
        ones get their replies, ownership is released. Waits at most
        ``shutdown_timeout``. The runtime's tasks end in :meth:`aclose`."""
        if self._task_group is None or self._finished.is_set() or self._closed:
            return
        with anyio.move_on_after(self._shutdown_timeout) as scope:
            self._put(_Stop())
            await self._finished.wait()
        if scope.cancelled_caught:
            log.warning("broker did not stop within %.1fs", self._shutdown_timeout)

    async def aclose(self) -> None:
        """Stop cleanly (see :meth:`stop`), then end all tasks. Call it from the task
        that called :meth:`open` (``async with`` does)."""
        if self._closed or self._task_group is None:
            self._closed = True
            return
        task_group = self._task_group
        try:
            await self.stop()
        finally:
            self._closed = True
            task_group.cancel_scope.cancel()
            await task_group.__aexit__(None, None, None)
            self._fail_waiting(BrokerNotRunning("the broker runtime was closed"))

    @property
    def broker_phase(self) -> Phase:
        return self._broker.phase

    @property
    def failure(self) -> BaseException | None:
        """Why the broker failed (replaced by another, corrupt state...), if it did."""
        return self._broker.failure

    def not_owner(self) -> NotOwner:
        """What this broker answers while it stands by: ``NotOwner`` naming the owner it
        last saw."""
        return self._broker.not_owner()

    def now(self) -> float:
        """The runtime's ``clock``: the clock of lease deadlines in replies."""
        return self._clock()

    def stats(self) -> BrokerStats:
        """A snapshot of the broker. Call it from the runtime's event loop."""
        return self._broker.stats()

    def job(self, job_id: str) -> Job | None:
        """The broker's head version of a job in the state (None: not there, or
        untouched in a segment), for inspection. Call it from the runtime's event loop."""
        return self._broker.job(job_id)

    def jobs(
        self,
        *,
        queue: str | None = None,
        status: str | None = None,
        after: int | None = None,
        limit: int = 50,
    ) -> JobsPage:
        """A page of the jobs in the head state (:meth:`osqueue_core.Broker.jobs`), as
        clients see them now. Scans the state: for operators' pages, not a request
        path. Raises ``InvalidArgument`` for a filter out of range."""
        return self._broker.jobs(
            self._wall_clock(), queue=queue, status=status, after=after, limit=limit
        )

    async def wait_for_phase(self, *phases: Phase) -> Phase:
        """Wait until the broker is in one of ``phases`` (cheap: it reads the phase, not
        the stats, after every step)."""
        while (phase := self._broker.phase) not in phases:
            await self._next_step()
        return phase

    async def wait_until(self, predicate: Callable[[BrokerStats], bool]) -> BrokerStats:
        """Wait until the broker's stats satisfy ``predicate`` (checked after every
        step of the broker), e.g. ``lambda s: s.finished_pending_archive == 0``."""
        while not predicate(stats := self._broker.stats()):
            await self._next_step()
        return stats

    async def _next_step(self) -> None:
        if self._progress is None:
            self._progress = anyio.Event()
        await self._progress.wait()

    # -- requests --------------------------------------------------------------------

    def new_request_id(self) -> int:
        self._next_request += 1
        return self._next_request

    async def request(self, command: Command) -> Result:
        """Submit ``command`` and wait for its reply; raise its error if it has one.

        Beyond ``max_pending_requests`` requests at once, this waits for a turn. If the
        caller is cancelled while its claim waits (or is granted but not yet durable),
        the claim is withdrawn or taken back; if the job had already reached this
        runtime, it is handed back with ``Release``: either way the claim does not
        count as an attempt and the job goes to the next worker at once.
        """
        [reply] = await self._submit((command,))
        if reply.error is not None:
            raise reply.error
        assert reply.result is not None
        return reply.result

    async def request_many(self, commands: Sequence[Command]) -> list[Result | OsqueueError]:
        """Submit ``commands`` together and wait for all their replies: each one's
        result, or its error (returned, not raised), in order.

        They reach the broker as one input (:meth:`~osqueue_core.Broker.submit_many`),
        so they share one batch, and one write, as far as the batch's caps allow. They
        take one turn of ``max_pending_requests`` between them. Cancelled, claims among
        them are withdrawn or handed back as in :meth:`request`.
        """
        replies = await self._submit(tuple(commands)) if commands else []
        return [_outcome(reply) for reply in replies]

    async def _submit(self, commands: tuple[Command, ...]) -> list[Reply]:
        if self._closed or self._task_group is None or self._slots is None:
            raise BrokerNotRunning("the broker runtime is not running")
        if len(commands) == 1 and isinstance(commands[0], Claim) and commands[0].wait > 0:
            return await self._wait_for(commands)  # bounded by the core's waiting limit
        slots = self._slots
        try:
            slots.acquire_nowait()  # no extra scheduling round while there is room
        except anyio.WouldBlock:
            await slots.acquire()
        try:
            return await self._wait_for(commands)
        finally:
            slots.release()

    async def _wait_for(self, commands: tuple[Command, ...]) -> list[Reply]:
        waiter = _Waiter(asyncio.get_running_loop().create_future(), len(commands))
        waiting = self._waiting
        for index, command in enumerate(commands):
            waiting[command.request_id] = (waiter, index)
        try:
            self._put(_Submit(commands))
            await waiter.future
        except BaseException:
            if not self._closed:
                for command, reply in zip(commands, waiter.replies, strict=True):
                    if isinstance(command, Claim):
                        self._abandon_claim(command, reply)
            raise
        finally:
            for command in commands:
                waiting.pop(command.request_id, None)
        replies = [reply for reply in waiter.replies if reply is not None]
        assert len(replies) == len(commands), "the future is resolved once all are answered"
        return replies

    def _abandon_claim(self, command: Claim, reply: Reply | None) -> None:
        """The caller of ``command`` left: whatever it was granted goes back."""
        items: list[_Input] = []
        if reply is None:
            self._abandoned[command.request_id] = command.worker_id
            items.append(_CancelClaim(command.request_id))
        else:
            items.extend(self._hand_back(reply.result, command.worker_id))
        for item in items:
            self._put(item)

    def _hand_back(self, result: Result | None, worker_id: str) -> list[_Input]:
        """A release of every job ``result`` granted to ``worker_id``."""
        return [
            _HandBack(Release(self.new_request_id(), job_id, worker_id))
            for job_id in granted_jobs(result)
        ]

    # -- the core task ---------------------------------------------------------------

    def _put(self, item: _Input) -> None:
        """Hand ``item`` to the core task (from the event loop's thread)."""
        self._inputs.append(item)
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def _core_loop(self) -> None:
        broker = self._broker
        inputs = self._inputs
        loop = asyncio.get_running_loop()
        while True:
            if not inputs:
                deadline = broker.next_deadline()
                timeout = None if deadline is None else deadline - self._clock()
                if timeout is None or timeout > 0:
                    await self._wait_for_input(loop, timeout)
                else:
                    await asyncio.sleep(0)  # due now: still let others run first
            if inputs:
                # Take everything already queued before draining effects, so requests
                # that arrived together are committed together.
                self._handle_inputs()
            else:
                broker.tick(self._clock(), self._wall_clock())
            self._dispatch()
            self._log.report(broker)
            if self._progress is not None:
                self._progress.set()
                self._progress = None
            phase = broker.phase
            if phase not in (Phase.STANDBY, Phase.STARTING) and not self._started.is_set():
                self._started.set()
            if phase in (Phase.STOPPED, Phase.FAILED) and self._stopping:
                self._finished.set()
            # A stopped or failed broker still answers (with an error) until aclose()
            # ends this task, so no late caller waits forever.

    async def _wait_for_input(self, loop: asyncio.AbstractEventLoop, seconds: float | None) -> None:
        """Until an input arrives, or ``seconds`` pass (None: no limit)."""
        wakeup = self._wakeup = loop.create_future()
        timer = None if seconds is None else loop.call_later(seconds, _wake, wakeup)
        try:
            await wakeup
        finally:
            self._wakeup = None
            if timer is not None:
                timer.cancel()

    def _handle_inputs(self) -> None:
        """Every queued input, in order; consecutive commands go to the broker as one
        input (``submit_many``). One reading of the clocks serves them all: they are
        handled at the same instant."""
        broker = self._broker
        now, wall = self._clock(), self._wall_clock()
        commands: list[Command] = []
        inputs = self._inputs
        while inputs:
            item = inputs.popleft()
            if isinstance(item, _Submit):
                commands.extend(item.commands)
                continue
            if isinstance(item, _HandBack):
                commands.append(item.command)
                continue
            if commands:
                broker.submit_many(commands, now, wall)
                commands = []
            match item:
                case _CancelClaim(request_id):
                    broker.cancel_claim(request_id, now, wall)
                case _Stop():
                    self._stopping = True
                    broker.stop(now, wall)
                case _Hold(held):
                    broker.hold_takeover(held, now, wall)
                case _:
                    broker.receive(item, now, wall)
        if commands:
            broker.submit_many(commands, now, wall)

    def _dispatch(self) -> None:
        assert self._task_group is not None
        waiting = self._waiting
        for effect in self._broker.take_effects():
            if isinstance(effect, Reply):
                found = waiting.get(effect.request_id)
                if found is not None:
                    found[0].answer(found[1], effect)
                if self._abandoned:
                    worker_id = self._abandoned.pop(effect.request_id, None)
                    if worker_id is not None:
                        # Granted after all: its caller is gone, so the jobs go back.
                        for item in self._hand_back(effect.result, worker_id):
                            self._put(item)
            else:
                self._task_group.start_soon(self._execute, effect, name="osqueue storage")

    def _fail_waiting(self, error: BrokerNotRunning) -> None:
        for request_id, (waiter, index) in list(self._waiting.items()):
            waiter.answer(index, Reply(request_id, error=error))

    # -- storage effects -------------------------------------------------------------

    async def _execute(self, effect: StorageEffect) -> None:
        result: StorageResult | None = None
        with anyio.move_on_after(self._storage_timeout):
            result = await execute_effect(self.store, effect)
        if result is None:
            log.warning(
                "storage gave no answer within %.1fs (%s)", self._storage_timeout, _name(effect)
            )
            result = StorageFailed(
                effect.op_id,
                # A write (or delete) may still land after we stop waiting for it.
                outcome_unknown=isinstance(effect, WriteObject | DeleteObject),
                message=f"no answer within {self._storage_timeout:g}s",
            )
        self._put(result)


def _name(effect: StorageEffect) -> str:
    key = effect.prefix if isinstance(effect, ListKeys) else effect.key
    return f"{type(effect).__name__} {key!r}"


async def execute_effect(store: ObjectStore, effect: StorageEffect) -> StorageResult:
    """Perform one storage effect and report what happened, never raising for storage
    errors: the core's five primitives over an :class:`ObjectStore`.

    Anything unexpected during a write counts as "outcome unknown": the core then reads
    back instead of assuming either way.
    """
    op_id = effect.op_id
    try:
        match effect:
            case ReadObject(_, key):
                found = await store.read(key)
                if found is None:
                    return ObjectRead(op_id, None, None)
                return ObjectRead(op_id, found.data, found.version)
            case ReadVersion(_, key):
                return VersionRead(op_id, await store.head(key))
            case WriteObject(_, key, data, expected):
                if expected is None:
                    version = await store.create(key, data)
                else:
                    assert isinstance(expected, ObjectVersion)
                    version = await store.update(key, data, expected)
                return ObjectWritten(op_id, version)
            case ListKeys(_, prefix, limit, start_after):
                keys = await store.list(prefix, limit=limit, start_after=start_after)
                return KeysListed(op_id, tuple(keys))
            case DeleteObject(_, key):
                await store.delete(key)
                return ObjectDeleted(op_id)
    except (WriteConflict, AlreadyExists) as error:
        if isinstance(effect, DeleteObject):  # (it has no precondition: not an answer)
            return StorageFailed(op_id, outcome_unknown=False, message=str(error))
        return WriteConflicted(op_id)
    except CorruptObject as error:
        log.error("storage reports %s damaged: %s", _name(effect), error)
        if isinstance(effect, WriteObject):
            # The object exists and is at no version we could expect: the precondition
            # failed, and the core reads it to see what it is (and never overwrites it).
            return WriteConflicted(op_id)
        if isinstance(effect, ReadObject | ReadVersion):
            return ObjectCorrupt(op_id, str(error))
        return StorageFailed(op_id, outcome_unknown=False, message=str(error))
    except OutcomeUnknown as error:
        log.warning("storage outcome unknown for %s: %s", _name(effect), error)
        return StorageFailed(op_id, outcome_unknown=True, message=str(error))
    except StorageError as error:
        log.warning("storage failed for %s: %s", _name(effect), error)
        return StorageFailed(op_id, outcome_unknown=False, message=str(error))
    except Exception as error:  # a bug or an unclassified failure: never guess "not landed"
        log.exception("unexpected error executing %s", _name(effect))
        unknown = isinstance(effect, WriteObject | DeleteObject)
        return StorageFailed(op_id, outcome_unknown=unknown, message=repr(error)[:300])
    raise AssertionError(f"not a storage effect: {effect!r}")
