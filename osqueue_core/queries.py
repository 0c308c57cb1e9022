"""Read-only answers about jobs: a job's description, pages of dead letters, and the
dead letters a redrive or purge names."""

from __future__ import annotations

from osqueue_core.commands import ListDead
from osqueue_core.config import BrokerConfig
from osqueue_core.errors import JobNotDead, JobNotFound
from osqueue_core.job import Job, JobStatus
from osqueue_core.quoting import quote
from osqueue_core.results import DeadLetters, JobInfo
from osqueue_core.table import JobTable
from osqueue_core.transitions import max_attempts


def job_info(job: Job, config: BrokerConfig, wall: float) -> JobInfo:
    """What a client is told about ``job`` at wall time ``wall``."""
    due_at = job.ready_at if job.status is JobStatus.READY else None
    return JobInfo(
        id=job.id,
        queue=job.queue,
        priority=job.priority,
        status=job.status.value,
        attempts=job.attempts,
        max_attempts=max_attempts(job, config),
        created_at=job.created_at,
        run_at=due_at if due_at is not None and due_at > wall else None,
        last_error=job.last_error,
        holder=job.claimed_by if job.status is JobStatus.CLAIMED else None,
        key=job.born.key,
        cancel_requested=job.cancel_requested,
        finished_at=job.finished_at,
    )


def list_dead(table: JobTable, config: BrokerConfig, command: ListDead, wall: float) -> DeadLetters:
    """A page of dead letters, oldest death first. Raises ``JobNotFound`` when
    ``command.after`` is not a dead letter (any more)."""
    jobs = table.dead_letters(command.queue)
    if command.after is not None:
        after = table.get(command.after)
        if after is None or not after.dead_letter:
            raise JobNotFound(command.after)
        for job in jobs:
            if job.id == command.after:
                break
    page: list[JobInfo] = []
    for job in jobs:
        if len(page) == command.limit:
            return DeadLetters(tuple(page), more=True)
        page.append(job_info(job, config, wall))
    return DeadLetters(tuple(page))


def select_dead(table: JobTable, job_ids: tuple[str, ...], queue: str | None) -> list[Job]:
    """The dead letters a Redrive or Purge names (``job_ids``, or all of ``queue``);
    raises (changing nothing) if one is missing or not a dead letter."""
    if queue is not None:
        return list(table.dead_letters(queue))
    jobs = []
    for job_id in dict.fromkeys(job_ids):
        job = table.lookup(job_id)
        if job is None:
            raise JobNotFound(job_id)
        if not job.dead_letter:
            state = "leaving" if job.leaving else job.status.value
            raise JobNotDead(
                f"job {quote(job.id)} is {state}, not a dead letter: nothing was redriven or purged"
            )
        jobs.append(job)
    return jobs
