"""Read-only answers about jobs: a job's description, pages of dead letters, pages of
the jobs in the state (for dashboards), and the dead letters a redrive or purge names."""

from __future__ import annotations

import heapq

import attrs

from osqueue_core.commands import ListDead
from osqueue_core.config import BrokerConfig
from osqueue_core.errors import InvalidArgument, JobNotDead, JobNotFound
from osqueue_core.job import Job, JobStatus
from osqueue_core.limits import check_int, check_queue_name
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


#: What :func:`list_jobs` filters on: a job status, or ``delayed`` (a ready job not
#: due yet; ``ready`` then means due).
JOB_FILTERS = ("ready", "delayed", "claimed", "dead", "completed", "cancelled")
#: The most jobs one page may hold.
MAX_JOBS_PAGE = 500


@attrs.frozen
class JobsPage:
    """A page of the jobs in the state, in push order (``seq``).

    ``next_after`` is the ``after`` of the next page (None: this is the last).
    ``untouched`` ready jobs of the filter's queue wait in segments and are not listed
    (a ``ready`` or unfiltered listing would hold them too): the spilled backlog is
    counted, not read.
    """

    jobs: tuple[JobInfo, ...]
    next_after: int | None
    untouched: int = 0


def _matches(job: Job, status: str | None, wall: float) -> bool:
    if status is None:
        return True
    if job.status is not JobStatus.READY:
        return status != "delayed" and job.status is JobStatus(status)
    due_at = job.ready_at
    delayed = due_at is not None and due_at > wall
    return status == ("delayed" if delayed else "ready")


def list_jobs(
    table: JobTable,
    config: BrokerConfig,
    wall: float,
    *,
    queue: str | None = None,
    status: str | None = None,
    after: int | None = None,
    limit: int = 50,
) -> JobsPage:
    """The first ``limit`` jobs in the state with ``seq`` above ``after``, of ``queue``
    and ``status`` (each None: any), as clients see them at wall time ``wall``.

    It looks at every job in the state (a scan, O(n log limit)): for an operator's
    page, never for a request path. The state holds the work in flight and the jobs
    that did not spill; untouched segment jobs are only counted. Raises
    ``InvalidArgument`` for a filter or limit out of range.
    """
    if queue is not None:
        check_queue_name(queue)
    if status is not None and status not in JOB_FILTERS:
        raise InvalidArgument(f"status must be one of {', '.join(JOB_FILTERS)}")
    check_int("limit", limit, 1, MAX_JOBS_PAGE)
    floor = -1 if after is None else check_int("after", after, 0, 2**53)
    chosen = heapq.nsmallest(
        limit + 1,
        (
            job
            for job in table
            if job.seq > floor
            and (queue is None or job.queue == queue)
            and _matches(job, status, wall)
        ),
        key=lambda job: job.seq,
    )
    more = len(chosen) > limit
    page = chosen[:limit]
    untouched = 0
    if status in (None, "ready"):
        segments = table.segments
        untouched = segments.total if queue is None else segments.untouched_in(queue)
    return JobsPage(
        tuple(job_info(job, config, wall) for job in page),
        page[-1].seq if more else None,
        untouched,
    )


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
