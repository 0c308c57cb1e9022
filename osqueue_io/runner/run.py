"""``run_worker``: claim jobs, run a handler on each, as many at once as asked, until stopped.

Theory of operation. One task claims: it asks for as many jobs as there are free slots
(``claim_many(free, queues=..., wait=poll)``) and starts one task per job. A job task
runs the handler under ``queue.keep_alive(job)`` (heartbeats in the background; the
handler is cancelled when the lease is lost or the job cancelled) and then records the
outcome (:mod:`osqueue_io.runner.outcomes`): ``complete(job, result)`` on return,
``fail(job, error text)`` on an exception, ``fail(job, "cancelled", retry=False)`` on
``JobCancelled`` (the rules of ``JobQueue.processing``, which cannot pass a result). A
slot is free again when its job task ends; a plain function's slot only when its thread
has returned, so a worker never runs more than ``concurrency`` handlers, even when it
had to give up on one.

Stopping (``stop`` set) goes in order: the claim in flight is cancelled (the broker
hands back whatever it granted to it); a job claimed but not started is released; the
running handlers get ``grace`` seconds; then the async ones are cancelled and their
jobs released (a release does not count an attempt). A plain function in a thread
cannot be interrupted: its job is released all the same, the thread runs on in the
background and whatever it returns is ignored. ``stop_now`` skips the grace period.

Nothing that failed to reach the broker is dropped silently: it is logged, and the job's
lease runs out, so the job is retried (which counts an attempt).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar, cast

import anyio
import anyio.to_thread
import attrs
from anyio.abc import TaskGroup

from osqueue_core import (
    DEFAULT_QUEUE,
    MAX_CLAIM_COUNT,
    MAX_CLAIM_WAIT,
    InvalidArgument,
    JobCancelled,
    LeaseLost,
    OsqueueError,
    check_queues,
)
from osqueue_io.client import ClaimedJob, JobQueue, claim_queues
from osqueue_io.runner.handler import Handler, is_async_handler
from osqueue_io.runner.outcomes import Outcomes, RunSummary

__all__ = ["MAX_GRACE", "run_worker"]

T = TypeVar("T")

log = logging.getLogger("osqueue.runner")

#: The longest grace period ``run_worker`` accepts (a day), in seconds.
MAX_GRACE = 86400.0
#: A claim that failed for a reason that may pass is tried again after 0.1 s, doubling
#: up to this many seconds.
CLAIM_RETRY_CAP = 5.0
#: How long a release may take when ``run_worker`` itself is cancelled: it runs shielded
#: from that cancellation, so it needs its own bound.
RELEASE_TIMEOUT = 10.0


async def run_worker(
    queue: JobQueue[T],
    handler: Handler[T],
    *,
    concurrency: int = 1,
    queues: Sequence[str] = (DEFAULT_QUEUE,),
    grace: float = 30.0,
    poll: float = 5.0,
    stop: anyio.Event | None = None,
    stop_now: anyio.Event | None = None,
) -> RunSummary:
    """Claim jobs from ``queue`` and run ``handler`` on each until ``stop`` is set.

    ``handler`` gets the :class:`~osqueue_io.client.ClaimedJob` (``job.item`` is the
    decoded item) and returns the job's result: ``bytes`` (stored in the job's archive
    record), or None for no result. Any other return value fails the job without retry
    (a ``TypeError`` saying so becomes its last error: the same code would return the
    same thing again); encode other results yourself, e.g. ``json.dumps(r).encode()``.
    An ``async def`` handler runs on the event loop; a plain function runs in a worker
    thread (at most ``concurrency`` threads).

    ``concurrency``: handlers running at once (1 to ``MAX_CLAIM_COUNT``). ``queues``:
    the queue names to claim from. ``poll``: how long one claim waits for a job before
    it is asked again (0 < poll <= ``MAX_CLAIM_WAIT``; a stop does not wait for it).
    ``grace``: seconds running handlers get to finish after ``stop`` (0 to
    ``MAX_GRACE``). ``stop``: set it (from any task of this event loop) to stop
    gracefully; without it, the worker runs until cancelled. ``stop_now``: set it to
    skip what is left of the grace period (it implies ``stop``).

    Returns a :class:`RunSummary` once every job it claimed was completed, failed,
    cancelled or released. If ``run_worker`` is cancelled instead, it releases the jobs
    it holds (shielded, up to ``RELEASE_TIMEOUT`` seconds each) before the cancellation
    goes on. A claim that fails for a reason that may pass (``error.retryable``, or an
    ``OSError``) is logged and tried again; any other claim error stops the worker
    gracefully and is then raised.
    """
    if not callable(handler):
        raise TypeError(f"the handler must be callable, got {type(handler).__name__}")
    runner = _Runner(
        queue,
        handler,
        concurrency=_check_concurrency(concurrency),
        queues=_check_queue_names(queues),
        grace=_check_seconds("grace", grace, 0.0, MAX_GRACE, zero_allowed=True),
        poll=_check_seconds("poll", poll, 0.0, MAX_CLAIM_WAIT, zero_allowed=False),
        stop=stop if stop is not None else anyio.Event(),
        stop_now=stop_now if stop_now is not None else anyio.Event(),
    )
    return await runner.run()


# -- checks ----------------------------------------------------------------------------


def _check_concurrency(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"concurrency must be a whole number, got {type(value).__name__}")
    if not 1 <= value <= MAX_CLAIM_COUNT:
        raise InvalidArgument(f"concurrency must be between 1 and {MAX_CLAIM_COUNT}, got {value}")
    return value


def _check_queue_names(value: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(check_queues(claim_queues(value))))


def _check_seconds(
    name: str, value: object, low: float, high: float, *, zero_allowed: bool
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{name} must be a number of seconds, got {type(value).__name__}")
    in_range = low <= value <= high if zero_allowed else low < value <= high
    if not (math.isfinite(value) and in_range):
        bound = "between 0 and" if zero_allowed else "more than 0 and at most"
        raise InvalidArgument(f"{name} must be {bound} {high:g} seconds, got {value!r}")
    return float(value)


def _transient(error: Exception) -> bool:
    """A claim error that may pass: the broker stopping, overloaded, unreachable..."""
    if isinstance(error, OsqueueError):
        return error.retryable
    return isinstance(error, OSError)


# -- the run ---------------------------------------------------------------------------


@attrs.define(eq=False)
class _ThreadCall:
    """A plain handler running in a worker thread, and what it came to."""

    done: anyio.Event = attrs.Factory(anyio.Event)
    value: object = None
    error: BaseException | None = None

    async def outcome(self) -> object:
        """The handler's return value (or its exception, raised) once it has returned."""
        await self.done.wait()
        if self.error is not None:
            raise self.error
        return self.value


@attrs.define(eq=False)
class _Running(Generic[T]):
    """One claimed job in a job task: its handler can be interrupted when grace ends."""

    job: ClaimedJob[T]
    #: Around the handler: cancelled when the grace period ends (the job is released).
    handler_scope: anyio.CancelScope = attrs.Factory(anyio.CancelScope)
    #: Around waiting for the thread of a plain handler whose job already has its
    #: outcome: cancelled at the same time.
    linger_scope: anyio.CancelScope = attrs.Factory(anyio.CancelScope)
    #: Its outcome was recorded (or logged as lost): nothing to release if cancelled.
    settled: bool = False

    def interrupt(self) -> None:
        self.handler_scope.cancel()
        self.linger_scope.cancel()


class _Runner(Generic[T]):
    """One ``run_worker`` call: the claim loop, the job tasks and the stop sequence."""

    def __init__(
        self,
        queue: JobQueue[T],
        handler: Handler[T],
        *,
        concurrency: int,
        queues: tuple[str, ...],
        grace: float,
        poll: float,
        stop: anyio.Event,
        stop_now: anyio.Event,
    ) -> None:
        self._queue = queue
        self._handler = handler
        self._is_async = is_async_handler(handler)
        self._concurrency = concurrency
        self._queues = queues
        self._grace = grace
        self._poll = poll
        self._stop = stop
        self._stop_now = stop_now
        self._stopping = False
        #: Why running handlers are being interrupted (set once the grace period ends).
        self._interrupting = ""
        self._claim_scope = anyio.CancelScope()
        self._grace_scope = anyio.CancelScope()
        #: Job tasks alive (each holds a slot), and the event the next one to end sets.
        self._busy = 0
        self._slot_freed = anyio.Event()
        self._running: set[_Running[T]] = set()
        self._threads: TaskGroup | None = None
        self._threads_running = 0
        self._thread_limiter = anyio.CapacityLimiter(concurrency)
        self._outcomes = Outcomes(queue)

    def _should_stop(self) -> bool:
        # The events themselves, not only _stopping: the task relaying them may not
        # have run yet when a claim returns right after one was set.
        return self._stopping or self._stop.is_set() or self._stop_now.is_set()

    async def run(self) -> RunSummary:
        name = getattr(self._handler, "__qualname__", repr(self._handler))
        log.info(
            "worker %s: running %s on queue(s) %s, %d at a time",
            self._queue.worker_id,
            name,
            ", ".join(self._queues),
            self._concurrency,
        )
        fatal: Exception | None = None
        async with anyio.create_task_group() as threads:
            self._threads = threads
            # Job tasks outlive the relays of stop events: the stop sequence waits for them.
            async with anyio.create_task_group() as jobs, anyio.create_task_group() as relays:
                relays.start_soon(self._relay, self._stop, self._begin_stop)
                relays.start_soon(self._relay, self._stop_now, self._hurry)
                try:
                    with self._claim_scope:
                        await self._claim_loop(jobs)
                except Exception as error:
                    fatal = error
                    log.error("claiming failed: %s; stopping", error)
                self._begin_stop()
                await self._drain()
                relays.cancel_scope.cancel()
            # Every job task has ended; what is left are threads nobody waits for.
            summary = self._outcomes.summary(threads_left_running=self._threads_running)
            threads.cancel_scope.cancel()
        log.info(
            "worker %s stopped: %d completed, %d failed, %d cancelled, %d released "
            "(%d interrupted), %d lost, %d threads left running",
            self._queue.worker_id,
            summary.completed,
            summary.failed,
            summary.cancelled,
            summary.released,
            summary.interrupted,
            summary.lost,
            summary.threads_left_running,
        )
        if fatal is not None:
            raise fatal
        return summary

    # -- stopping --------------------------------------------------------------------

    @staticmethod
    async def _relay(event: anyio.Event, action: Callable[[], None]) -> None:
        await event.wait()
        action()

    def _begin_stop(self) -> None:
        if not self._stopping:
            self._stopping = True
            self._claim_scope.cancel()
            log.info("worker %s: stopping: no more claims", self._queue.worker_id)

    def _hurry(self) -> None:
        self._begin_stop()
        self._grace_scope.cancel()

    async def _drain(self) -> None:
        """Wait up to the grace period for the job tasks, then interrupt what is left."""
        if self._busy:
            log.info(
                "stopping: waiting up to %gs for %d running handler(s)", self._grace, self._busy
            )
        with self._grace_scope, anyio.move_on_after(self._grace):
            while self._busy:
                await self._next_slot_freed()
        if self._running:
            self._interrupting = (
                "stopped at once"
                if self._stop_now.is_set()
                else f"still running after the {self._grace:g}s grace period"
            )
            log.warning(
                "stopping: %d handler(s) %s; interrupting them, releasing their jobs",
                len(self._running),
                self._interrupting,
            )
            for running in list(self._running):
                running.interrupt()

    async def _next_slot_freed(self) -> None:
        self._slot_freed = anyio.Event()
        await self._slot_freed.wait()

    # -- claiming --------------------------------------------------------------------

    async def _claim_loop(self, jobs: TaskGroup) -> None:
        failures = 0
        while not self._should_stop():
            free = self._concurrency - self._busy
            if free <= 0:
                await self._next_slot_freed()
                continue
            try:
                claimed = await self._queue.claim_many(free, queues=self._queues, wait=self._poll)
            except Exception as error:
                if not _transient(error):
                    raise
                failures += 1
                delay = min(CLAIM_RETRY_CAP, 0.1 * 2 ** min(failures - 1, 10))
                log.warning("claim failed: %s; trying again in %.1fs", error, delay)
                await anyio.sleep(delay)
                continue
            failures = 0
            for job in claimed:
                self._busy += 1
                jobs.start_soon(self._run_job, job, name=f"osqueue job {job.id}")

    # -- one job ---------------------------------------------------------------------

    async def _run_job(self, job: ClaimedJob[T]) -> None:
        running = _Running(job)
        self._running.add(running)
        try:
            if self._should_stop():
                await self._outcomes.release(job, "claimed, not started before the stop")
            else:
                await self._process(running)
        except anyio.get_cancelled_exc_class():
            # run_worker itself is being cancelled (a stop never cancels this task):
            # hand the job back before going, unless it already has its outcome.
            if not running.settled:
                with anyio.CancelScope(shield=True), anyio.move_on_after(RELEASE_TIMEOUT):
                    await self._outcomes.release(job, "the worker was cancelled")
            raise
        finally:
            self._running.discard(running)
            self._busy -= 1
            self._slot_freed.set()

    async def _process(self, running: _Running[T]) -> None:
        job = running.job
        outcomes = self._outcomes
        thread = None if self._is_async else self._start_thread(job)
        value: object = None
        log.debug("job %s: started (attempt %d)", job.id, job.attempts)
        try:
            async with self._queue.keep_alive(job):
                with running.handler_scope:
                    if thread is None:
                        value = await cast(Awaitable[object], self._handler(job))
                    else:
                        value = await thread.outcome()
        except JobCancelled:
            await outcomes.cancel(job, in_thread=thread is not None)
        except LeaseLost as error:
            outcomes.lose(job, "its lease was lost while its handler ran", error)
        except Exception as error:
            await outcomes.fail(job, error, retry=True)
        except anyio.get_cancelled_exc_class():
            raise  # run_worker's own cancellation: it releases what it holds
        except BaseException:
            # SystemExit, KeyboardInterrupt, a custom BaseException from the handler:
            # the job goes back (not counted) before the error goes on up.
            running.settled = True
            with anyio.CancelScope(shield=True):
                await outcomes.release(job, "its handler raised a BaseException")
            raise
        else:
            if running.handler_scope.cancelled_caught:
                why = self._interrupting or "interrupted"
                await outcomes.release(job, why, interrupted=True)
            else:
                await outcomes.complete(job, value)
        running.settled = True
        if thread is not None and not thread.done.is_set() and not self._interrupting:
            # The job has its outcome, but the thread runs on: its slot stays taken
            # until it returns (or the grace period ends), so threads never outnumber
            # slots.
            log.info("job %s: waiting for its handler's thread to return", job.id)
            with running.linger_scope:
                await thread.done.wait()

    def _start_thread(self, job: ClaimedJob[T]) -> _ThreadCall:
        assert self._threads is not None
        call = _ThreadCall()
        self._threads_running += 1
        self._threads.start_soon(self._run_in_thread, call, job, name=f"osqueue thread {job.id}")
        return call

    async def _run_in_thread(self, call: _ThreadCall, job: ClaimedJob[T]) -> None:
        """Carry a plain handler's thread in the threads task group, which outlives the
        job task: when run_worker returns, cancelling that group abandons the thread."""
        try:
            call.value = await anyio.to_thread.run_sync(
                self._handler, job, abandon_on_cancel=True, limiter=self._thread_limiter
            )
        except Exception as error:
            call.error = error
        finally:
            self._threads_running -= 1
            call.done.set()
