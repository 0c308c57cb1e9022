"""The read-only commands: ``stats``, ``jobs ls``, ``jobs show``, ``dead ls``.

Each reads the state object at ``--data`` (and, for jobs, the segments it needs, one at a
time) and writes nothing anywhere: a broker need not run, and a running one is not
disturbed. What they show is one version of the state, as of the read.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import click

from osqueue_core import Job, JobStatus, quote
from osqueue_io.cli.archive import ArchiveScan
from osqueue_io.cli.exits import EXIT_NOT_FOUND, CliError
from osqueue_io.cli.options import (
    Target,
    json_option,
    limit_option,
    parse_job_id,
    parse_queue,
    parse_when,
    run_io,
    storage_options,
    until_option,
    with_target,
)
from osqueue_io.cli.output import (
    JOB_COLUMNS,
    clean,
    emit_json,
    job_record,
    job_rows,
    job_view,
    print_job,
    print_table,
)
from osqueue_io.cli.snapshot import Snapshot, with_snapshot
from osqueue_io.cli.stats import state_summary
from osqueue_io.cli.times import MAX_SPAN, format_time
from osqueue_io.storage import ObjectStore

__all__ = ["dead_ls", "jobs_ls", "jobs_show", "stats"]

#: What ``--status`` takes: the stored statuses, and ``delayed`` (ready, not due yet).
STATUSES = ("ready", "delayed", "claimed", "completed", "dead", "cancelled")
#: Most dead letters ``dead ls`` shows (the broker keeps at most ``max_dead``).
MAX_DEAD_LIMIT = 10_000
#: How far back ``jobs show --archive`` looks by default.
DEFAULT_ARCHIVE_LOOKBACK = "24h"


@click.command()
@storage_options
@json_option
@with_target
def stats(target: Target, as_json: bool) -> None:
    """What the state object holds: its owner and lease, revision, segments, and per
    queue the ready, delayed, claimed and dead jobs and how long the oldest ready job
    has waited.

    \b
    Examples:
      osqueue stats --data s3://bucket/queue
      OSQUEUE_DATA=./queue-data osqueue stats --json
    """
    now = time.time()

    async def read(store: ObjectStore) -> dict[str, Any]:
        return await with_snapshot(
            store, target.state_key, lambda snapshot: state_summary(snapshot, now)
        )

    summary = run_io(target, read)
    if as_json:
        emit_json(summary)
        return
    owner = summary["owner"]
    lease = (
        "released (stopped cleanly)"
        if owner["released"]
        else (f"{owner['lease']:g}s" if owner["lease"] is not None else "none")
    )
    print_table(
        None,
        ("", ""),
        [
            ("storage", clean(summary["storage"], 200)),
            ("owner", f"{clean(owner['identity'])} (epoch {owner['epoch']})"),
            ("address", clean(owner["address"] or "-")),
            ("lease", lease),
            ("revision", str(summary["revision"])),
            ("schema", str(summary["schema_version"])),
            ("inline jobs", str(summary["inline_jobs"])),
            ("segments", f"{summary['segments']} ({summary['untouched']} untouched jobs)"),
        ],
        header=False,
    )
    rows = [
        (
            clean(line["queue"]),
            str(line["ready"]),
            str(line["delayed"]),
            str(line["claimed"]),
            str(line["dead"]),
            str(line["finishing"]),
            str(line["untouched"]),
            _age(line["oldest_ready_age"]),
        )
        for line in summary["queues"]
    ]
    totals = (
        "total",
        *(
            str(summary[name])
            for name in ("ready", "delayed", "claimed", "dead", "finishing", "untouched")
        ),
        "",
    )
    print_table(
        None,
        ("queue", "ready", "delayed", "claimed", "dead", "finishing", "untouched", "oldest ready"),
        [*rows, totals],
    )


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _matches(job: Job, queue: str | None, status: str | None, now: float) -> bool:
    if queue is not None and job.queue != queue:
        return False
    if status is None:
        return True
    if status in ("ready", "delayed"):
        if job.status is not JobStatus.READY:
            return False
        ready_at = job.ready_at
        return (ready_at is not None and ready_at > now) == (status == "delayed")
    return job.status.value == status


@click.command("ls")
@storage_options
@click.option("--queue", callback=parse_queue, metavar="NAME", help="only this queue's jobs")
@click.option(
    "--status",
    type=click.Choice(STATUSES),
    help="only jobs in this state (delayed: ready but not due yet)",
)
@limit_option()
@json_option
@with_target
def jobs_ls(
    target: Target, queue: str | None, status: str | None, limit: int, as_json: bool
) -> None:
    """The jobs in the state: inline ones first, in push order, then those untouched in
    segments (read one segment at a time, and only as many as --limit needs).

    \b
    Examples:
      osqueue jobs ls --data ./queue-data
      osqueue jobs ls --queue emails --status delayed --limit 1000 --json
    """
    now = time.time()

    async def read(snapshot: Snapshot) -> tuple[list[dict[str, Any]], bool]:
        views: list[dict[str, Any]] = []
        async for view in _listed(snapshot, queue, status, now):
            if len(views) == limit:
                return views, True
            views.append(view)
        return views, False

    views, more = run_io(target, lambda store: with_snapshot(store, target.state_key, read))
    _print_jobs(views, more, as_json, f"(more: raise --limit above {limit}, or filter)")


def _print_jobs(views: list[dict[str, Any]], more: bool, as_json: bool, hint: str) -> None:
    """A listing of jobs: JSON, or a table with ``hint`` under it if it was cut."""
    if as_json:
        emit_json({"jobs": views, "more": more})
        return
    print_table(None, JOB_COLUMNS, job_rows(views), footer=hint if more else None)


async def _listed(
    snapshot: Snapshot, queue: str | None, status: str | None, now: float
) -> AsyncIterator[dict[str, Any]]:
    for job in snapshot.inline():
        if _matches(job, queue, status, now):
            yield job_view(job_record(job), now, "inline")
    if status not in (None, "ready", "delayed"):
        return  # untouched jobs are all ready
    for ref in snapshot.refs:
        if queue is not None and all(group.queue != queue for group in ref.groups):
            continue
        for job in await snapshot.untouched(ref):
            if _matches(job, queue, status, now):
                yield job_view(job_record(job), now, "segment", segment=ref.key)


@click.command("show")
@click.argument("job_id", metavar="ID", callback=parse_job_id)
@storage_options
@click.option(
    "--archive",
    is_flag=True,
    help="if the job is not in the state, look for it in the archive (finished between "
    "--since and --until)",
)
@click.option(
    "--since",
    callback=parse_when,
    default=DEFAULT_ARCHIVE_LOOKBACK,
    show_default=True,
    metavar="TIME",
    help="with --archive: the earliest it may have finished (ISO 8601, or 30m, 2d ago)",
)
@until_option("with --archive: the latest it may have finished")
@json_option
@with_target
def jobs_show(
    target: Target, job_id: str, archive: bool, since: float, until: float, as_json: bool
) -> None:
    """Everything stored about job ID, its payload (base64) included: from the state
    (inline or in a segment), or with --archive from the archive.

    \b
    Examples:
      osqueue jobs show 000000000042-3 --data ./queue-data
      osqueue jobs show 000000000042-3 --archive --since 2d --json
    """
    now = time.time()
    check_range(since, until)

    async def find(store: ObjectStore) -> dict[str, Any] | None:
        async def in_state(snapshot: Snapshot) -> dict[str, Any] | None:
            found = await snapshot.find(job_id)
            if found is None:
                return None
            where = "inline" if found.segment is None else "segment"
            record = job_record(found.job)
            return job_view(record, now, where, segment=found.segment, payload=True)

        view = await with_snapshot(store, target.state_key, in_state)
        if view is not None or not archive:
            return view
        scan = ArchiveScan(store, target.archive_prefix, since, until)
        async for record in scan.records():
            if record["id"] == job_id:
                return job_view(record, now, "archive", payload=True)
        return None

    view = run_io(target, find)
    if view is None:
        hint = (
            f"nor in the archive between {format_time(since)} and {format_time(until)}: "
            "widen --since/--until"
            if archive
            else "finished jobs leave it for the archive: add --archive"
        )
        raise CliError(f"job {quote(job_id)} is not in the state, {hint}", EXIT_NOT_FOUND)
    if as_json:
        emit_json(view)
    else:
        print_job(view)


def check_range(since: float, until: float) -> None:
    """A scan's time range must be forward and at most :data:`MAX_SPAN` long."""
    if since >= until:
        raise click.BadParameter("--since must be before --until", param_hint="--since")
    if until - since > MAX_SPAN:
        raise click.BadParameter(
            f"the range is longer than {MAX_SPAN / 86400:g} days: scan it in parts",
            param_hint="--since",
        )


@click.command("ls")
@storage_options
@click.option("--queue", callback=parse_queue, metavar="NAME", help="only this queue's")
@limit_option(highest=MAX_DEAD_LIMIT)
@json_option
@with_target
def dead_ls(target: Target, queue: str | None, limit: int, as_json: bool) -> None:
    """The dead letters (jobs out of attempts, or failed without retry), oldest death
    first. Redrive them with `osqueue dead redrive`, drop them with `osqueue dead purge`.

    \b
    Examples:
      osqueue dead ls --data ./queue-data
      osqueue dead ls --queue emails --json
    """
    now = time.time()

    async def read(store: ObjectStore) -> list[Job]:
        snapshot = await Snapshot.read(store, target.state_key)
        return sorted(_dead(snapshot.inline(), queue), key=_death_order)

    dead = run_io(target, read)
    views = [job_view(job_record(job), now, "inline") for job in dead[:limit]]
    _print_jobs(views, len(dead) > limit, as_json, f"(more: raise --limit above {limit})")


def _dead(jobs: list[Job], queue: str | None) -> Iterator[Job]:
    for job in jobs:
        if job.dead_letter and (queue is None or job.queue == queue):
            yield job


def _death_order(job: Job) -> tuple[float, int]:
    return (job.finished_at or 0.0, job.seq)
