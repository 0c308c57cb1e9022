"""Keeping a claimed job's lease alive while it is processed, and saying when it is lost.

Shared by the embedded queue and the remote worker: both hand over a ``heartbeat``
coroutine function. The keeper heartbeats every ``interval`` seconds in a background
task. A definite "you no longer hold this job" (``LeaseLost``, ``JobNotFound``, any
non-retryable error) marks the lease lost at once; transient failures are retried
until the last known deadline has passed, then the lease counts as lost too. When the
lease is lost, the block being protected is cancelled and ``LeaseLost`` is raised from
the ``async with``, so no caller goes on working on a job somebody else now holds.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio
import attrs

from osqueue_core import JobCancelled, LeaseLost, OsqueueError, clip_error_text

log = logging.getLogger("osqueue.keepalive")


@attrs.define
class Lease:
    """The live state of a kept-alive job: check ``lost`` in long loops if you like."""

    job_id: str
    worker_id: str
    #: Local ``time.monotonic()`` by which the lease runs out without another heartbeat.
    expires_at: float
    lost: bool = False
    error: BaseException | None = None
    heartbeats: int = 0

    def check(self) -> None:
        """Raise ``LeaseLost`` if the lease is gone."""
        if self.lost:
            raise LeaseLost(self.job_id, self.worker_id)


@asynccontextmanager
async def keep_alive(
    job_id: str,
    worker_id: str,
    heartbeat: Callable[[], Awaitable[object]],
    *,
    interval: float,
    lease_timeout: float,
    expires_at: float | None = None,
) -> AsyncIterator[Lease]:
    """Heartbeat in the background while the block runs; cancel it if the lease is lost.

    ``expires_at`` (``time.monotonic()``) is when the current lease runs out: the
    broker's clock started it when the job was claimed, not when this block began, so
    callers pass what they know (by default a full ``lease_timeout`` from now).

    Raises ``LeaseLost`` (chained to the cause) when the lease was lost, even if the
    block finished in the meantime: the job may already be with another worker. Raises
    ``JobCancelled`` when a heartbeat said the job was cancelled.
    """
    now = time.monotonic()
    lease = Lease(job_id, worker_id, now + lease_timeout if expires_at is None else expires_at)
    body_error: Exception | None = None
    with anyio.CancelScope() as body_scope:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_beat, lease, heartbeat, interval, lease_timeout, body_scope)
            try:
                yield lease
            except Exception as error:
                # Re-raised below, outside the task group, so callers see the block's
                # own exception rather than an exception group.
                body_error = error
            finally:
                tasks.cancel_scope.cancel()
    if body_error is not None:
        raise body_error
    if isinstance(lease.error, JobCancelled):
        raise lease.error
    if lease.lost:
        raise LeaseLost(job_id, worker_id) from lease.error


async def _beat(
    lease: Lease,
    heartbeat: Callable[[], Awaitable[object]],
    interval: float,
    lease_timeout: float,
    body_scope: anyio.CancelScope,
) -> None:
    # Give up a little before the broker would: its clock and ours are sampled at
    # different moments, and the job must be let go before it can be handed out.
    margin = min(1.0, lease_timeout * 0.05)

    def remaining() -> float:
        return lease.expires_at - margin - time.monotonic()

    delay = min(interval, max(0.0, remaining()) / 2)  # early if the lease is half gone
    while True:
        await anyio.sleep(delay)
        sent_at = time.monotonic()
        # A heartbeat still in flight when the lease runs out does not save it. If our
        # conservative local deadline has already passed without a failed heartbeat
        # (a long-poll claim granted late, say), one bounded attempt decides: the
        # broker extends a lease only for the worker that still holds it.
        budget = remaining() if remaining() > 0 else lease_timeout / 2
        error: BaseException | None = None
        with anyio.move_on_after(budget) as attempt:
            try:
                await heartbeat()
            except Exception as failure:
                error = failure
        if attempt.cancelled_caught:
            error = error or TimeoutError("no heartbeat got through before the lease ran out")
        elif error is None:
            lease.heartbeats += 1
            lease.expires_at = sent_at + lease_timeout
            # Never wait past half of what is left, whatever the configured interval.
            delay = min(interval, max(0.0, remaining()) / 2)
            continue
        retryable = not isinstance(error, OsqueueError) or error.retryable
        if retryable and remaining() > 0:
            log.warning("heartbeat for %s failed, retrying: %s", lease.job_id, error)
            delay = max(0.01, min(interval, remaining() / 2))  # sooner, within the lease
            continue
        lease.lost, lease.error = True, error
        if isinstance(error, JobCancelled):
            log.info("job %s was cancelled: stopping its handler", lease.job_id)
        else:
            log.warning("lease on job %s lost: %s", lease.job_id, error)
        body_scope.cancel()
        return


@asynccontextmanager
async def process_job(
    keeper: AbstractAsyncContextManager[Lease],
    complete: Callable[[], Awaitable[object]],
    fail: Callable[[str], Awaitable[object]],
    cancel: Callable[[], Awaitable[object]] | None = None,
) -> AsyncIterator[Lease]:
    """Run a block under ``keeper`` (a :func:`keep_alive`), then ``complete`` the job;
    if the block raises, ``fail`` it with the error's description and re-raise.

    A lost lease is re-raised as is: the job is neither completed nor failed here,
    another worker may hold it. A cancelled job is failed without retry (``cancel``
    is then called; the broker ends the job cancelled) and ``JobCancelled`` re-raised.
    """
    try:
        async with keeper as lease:
            yield lease
    except LeaseLost:
        raise
    except JobCancelled:
        if cancel is not None:
            await cancel()
        raise
    except Exception as error:
        await fail(clip_error_text(f"{type(error).__name__}: {error}"))
        raise
    await complete()


def default_interval(lease_timeout: float) -> float:
    """Heartbeat three times per lease timeout: one lost beat is not a lost job."""
    return lease_timeout / 3 if math.isfinite(lease_timeout) else 10.0
