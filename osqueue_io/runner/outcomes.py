"""Recording what became of each job the runner claimed, and counting it.

Each method tells the broker one outcome (complete, fail, cancelled, release) and counts
it. None of them raises: an outcome that cannot reach the broker is logged and counted
as lost instead (the broker keeps the job until its lease runs out, then it runs again,
an attempt counted), so the runner goes on with its other jobs and nothing is dropped
silently.
"""

from __future__ import annotations

import logging
from typing import Generic, TypeVar

import attrs

from osqueue_core import JobNotFound, LeaseLost, OsqueueError, clip_error_text
from osqueue_io.client import ClaimedJob, JobQueue
from osqueue_io.runner.handler import job_result

__all__ = ["Outcomes", "RunSummary"]

T = TypeVar("T")

log = logging.getLogger("osqueue.runner")


@attrs.frozen
class RunSummary:
    """What one ``run_worker`` call did with the jobs it claimed; each job counts once."""

    #: The handler returned and the job was completed (with its result, if any).
    completed: int = 0
    #: The handler raised (or returned something other than bytes or None) and the
    #: failure was recorded: the job is retried per its queue's policy, or dead.
    failed: int = 0
    #: The job was cancelled while its handler ran; it ends cancelled.
    cancelled: int = 0
    #: Handed back without counting an attempt: claimed but not started when the stop
    #: came, or (see ``interrupted``) still running when the grace period ended.
    released: int = 0
    #: Of ``released``: handlers still running when the grace period ended.
    interrupted: int = 0
    #: Jobs whose outcome could not be recorded (the lease was lost, or the broker could
    #: not be reached): each was logged; the job runs again once its lease has run out.
    lost: int = 0
    #: Plain handlers still running in their threads when ``run_worker`` returned
    #: (their jobs released, their outcome ignored).
    threads_left_running: int = 0


@attrs.define
class Outcomes(Generic[T]):
    """The outcomes of one run's jobs on ``queue``: call one method per job, then
    :meth:`summary`."""

    queue: JobQueue[T]
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    released: int = 0
    interrupted: int = 0
    lost: int = 0

    def summary(self, threads_left_running: int) -> RunSummary:
        return RunSummary(
            self.completed,
            self.failed,
            self.cancelled,
            self.released,
            self.interrupted,
            self.lost,
            threads_left_running,
        )

    async def complete(self, job: ClaimedJob[T], value: object) -> None:
        """The handler returned ``value``: complete the job with it as the result."""
        try:
            result = job_result(value)
        except TypeError as error:
            # The same code would return the same thing again: no retry.
            await self.fail(job, error, retry=False)
            return
        try:
            await self.queue.complete(job, result)
        except (LeaseLost, JobNotFound) as error:
            self.lose(job, "it could not be completed", error)
            return
        except OsqueueError as error:
            if error.retryable:
                self.lose(job, "it could not be completed", error)
            else:
                # The broker refused the result itself (too large, say): it always would.
                await self.fail(job, error, retry=False)
            return
        except Exception as error:
            self.lose(job, "it could not be completed", error)
            return
        self.completed += 1
        log.info("job %s: completed", job.id)

    async def fail(self, job: ClaimedJob[T], error: BaseException, *, retry: bool) -> None:
        """The handler raised ``error`` (or its result was refused): fail the attempt,
        with the error's type and text as the job's last error."""
        # The same text as JobQueue.processing records, so both read alike.
        text = clip_error_text(f"{type(error).__name__}: {error}")
        try:
            dead = await self.queue.fail(job, text, retry=retry)
        except Exception as failure:
            self.lose(job, f"its failure ({text}) could not be recorded", failure)
            return
        self.failed += 1
        log.warning(
            "job %s: attempt %d failed: %s; %s",
            job.id,
            job.attempts,
            text,
            "it is dead" if dead else "it will be retried",
            exc_info=error if retry else None,
        )

    async def cancel(self, job: ClaimedJob[T], *, in_thread: bool) -> None:
        """The job was cancelled while its handler ran: fail it without retry, so that
        it ends cancelled (as ``JobQueue.processing`` does)."""
        self.cancelled += 1
        if in_thread:
            log.info("job %s: cancelled; its thread runs on, its outcome ignored", job.id)
        else:
            log.info("job %s: cancelled; its handler was stopped", job.id)
        try:
            await self.queue.fail(job, "cancelled", retry=False)
        except Exception as failure:
            log.error(
                "job %s: recording its cancellation failed: %s; it ends cancelled when its "
                "lease runs out",
                job.id,
                failure,
            )

    async def release(self, job: ClaimedJob[T], why: str, *, interrupted: bool = False) -> None:
        """Hand the job back without counting an attempt (``interrupted``: its handler
        was running)."""
        try:
            await self.queue.release(job)
        except Exception as error:
            self.lose(job, f"it could not be released ({why})", error)
            return
        self.released += 1
        self.interrupted += interrupted
        log.info("job %s: released: %s", job.id, why)

    def lose(self, job: ClaimedJob[T], what: str, error: BaseException) -> None:
        """Nothing could be recorded for the job: say so, loudly."""
        self.lost += 1
        log.error(
            "job %s: %s: %s; it runs again once its lease has run out (an attempt counted)",
            job.id,
            what,
            error,
        )
