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
from contextlib import asynccontextmanager

import anyio
import attrs

from osqueue_core import LeaseLost, OsqueueError

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
) -> AsyncIterator[Lease]:
    """Heartbeat in the background while the block runs; cancel it if the lease is lost.

    Raises ``LeaseLost`` (chained to the cause) when the lease was lost, even if the
    block finished in the meantime: the job may already be with another worker.
    """
    lease = Lease(job_id, worker_id, time.monotonic() + lease_timeout)
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
    if lease.lost:
        raise LeaseLost(job_id, worker_id) from lease.error


async def _beat(
    lease: Lease,
    heartbeat: Callable[[], Awaitable[object]],
    interval: float,
    lease_timeout: float,
    body_scope: anyio.CancelScope,
) -> None:
    delay = interval
    while True:
        await anyio.sleep(delay)
        sent_at = time.monotonic()
        try:
            await heartbeat()
        except OsqueueError as error:
            if error.retryable and time.monotonic() < lease.expires_at:
                log.warning("heartbeat for %s failed, retrying: %s", lease.job_id, error)
                # Retry sooner, but never later than the lease allows.
                delay = min(interval, max(0.0, lease.expires_at - time.monotonic()) / 2)
                delay = max(delay, 0.01)
                continue
            lease.lost, lease.error = True, error
        except Exception as error:
            if time.monotonic() < lease.expires_at:
                log.warning("heartbeat for %s failed, retrying: %r", lease.job_id, error)
                delay = max(0.01, min(interval, (lease.expires_at - time.monotonic()) / 2))
                continue
            lease.lost, lease.error = True, error
        else:
            lease.heartbeats += 1
            lease.expires_at = sent_at + lease_timeout
            delay = interval
            continue
        log.warning("lease on job %s lost: %s", lease.job_id, lease.error)
        body_scope.cancel()
        return


def default_interval(lease_timeout: float) -> float:
    """Heartbeat three times per lease timeout: one lost beat is not a lost job."""
    return lease_timeout / 3 if math.isfinite(lease_timeout) else 10.0
