"""``archive ls`` and ``archive cat``: the archive's hourly buckets, and its records.

``archive cat`` writes one JSON line per archived job (the record exactly as archived,
docs/state-format.md, "Archive objects") as it reads them, bucket by bucket, so its
memory does not grow with the range. Records repeated by a crash-retried archive write
are removed and counted on stderr. A bar on stderr shows the buckets done when stderr is
a terminal; stdout carries the records alone.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from osqueue_io.cli.archive import ARCHIVE_STATUSES, ArchiveScan, Bucket, hour_buckets, list_buckets
from osqueue_io.cli.exits import EXIT_OK, EXIT_UNREADABLE
from osqueue_io.cli.options import (
    Target,
    json_option,
    parse_queue,
    parse_when,
    run_io,
    storage_options,
    until_option,
    with_target,
)
from osqueue_io.cli.output import clean, counted, emit_json, print_table
from osqueue_io.cli.read_commands import check_range
from osqueue_io.storage import ObjectStore

__all__ = ["archive_cat", "archive_ls"]

#: Scans of at least this many buckets show a progress bar (on a terminal).
PROGRESS_BUCKETS = 2


@click.command("ls")
@storage_options
@click.option(
    "--since",
    callback=parse_when,
    metavar="TIME",
    help="only buckets from this hour on (ISO 8601, or 30m, 2d ago); with --since or "
    "--until the archive is listed hour by hour, else in one listing",
)
@click.option(
    "--until",
    callback=parse_when,
    metavar="TIME",
    help="only buckets up to this hour (with --until alone: the day before it)",
)
@json_option
@with_target
def archive_ls(target: Target, since: float | None, until: float | None, as_json: bool) -> None:
    """The archive's time buckets (UTC hours jobs finished in) and how many objects
    each holds.

    \b
    Examples:
      osqueue archive ls --data s3://bucket/queue
      osqueue archive ls --since 2d --json
    """
    hours: list[str] | None = None
    if since is not None or until is not None:
        until = time.time() if until is None else until
        since = until - 86400.0 if since is None else since
        check_range(since, until)
        hours = hour_buckets(since, until)

    async def read(store: ObjectStore) -> list[Bucket]:
        return await list_buckets(store, target.archive_prefix, hours)

    buckets = run_io(target, read)
    total = sum(bucket.objects for bucket in buckets)
    if as_json:
        emit_json(
            {
                "buckets": [{"bucket": b.name, "objects": b.objects} for b in buckets],
                "objects": total,
            }
        )
        return
    print_table(
        None,
        ("bucket", "objects"),
        [(clean(bucket.name, 80), str(bucket.objects)) for bucket in buckets],
        footer=f"{counted(len(buckets), 'bucket')}, {counted(total, 'object')}",
    )


@click.command("cat")
@storage_options
@click.option(
    "--since",
    callback=parse_when,
    required=True,
    metavar="TIME",
    help="jobs finished at or after this time: ISO 8601 (UTC unless an offset is given) "
    "or a span ago (30m, 1h30m, 2d)",
)
@until_option("jobs finished before this time")
@click.option("--queue", callback=parse_queue, metavar="NAME", help="only this queue's jobs")
@click.option("--status", type=click.Choice(ARCHIVE_STATUSES), help="only jobs that ended so")
@json_option
@with_target
def archive_cat(
    target: Target,
    since: float,
    until: float,
    queue: str | None,
    status: str | None,
    as_json: bool,
) -> int:
    """Archived jobs that finished between --since and --until, one JSON record per line
    (the record as archived), oldest hour first. --json changes nothing: the output is
    JSON lines either way.

    \b
    Examples:
      osqueue archive cat --since 1h --data ./queue-data
      osqueue archive cat --since 2026-11-18T00:00 --until 2026-11-19T00:00 --status dead
      osqueue archive cat --since 2d --queue emails | jq .result
    """
    check_range(since, until)

    async def read(store: ObjectStore) -> ArchiveScan:
        scan = ArchiveScan(store, target.archive_prefix, since, until, queue, status)
        out = sys.stdout.buffer
        with _progress(len(scan.buckets())) as advance:

            def bucket_done() -> None:
                out.flush()  # a reader downstream gets each hour as it is read
                advance()

            async for record in scan.records(bucket_done):
                out.write(orjson.dumps(record) + b"\n")
        return scan

    scan = run_io(target, read)
    err = Console(stderr=True, highlight=False)
    if scan.duplicates:
        err.print(
            f"removed {scan.duplicates} duplicate record(s): the same job archived twice "
            "by a retried archive write",
            markup=False,
        )
    if scan.unreadable:
        first = clean(scan.unreadable[0], 120)
        err.print(
            f"skipped {len(scan.unreadable)} unreadable archive object(s), first {first}: "
            "they are not archive objects osqueue can read",
            markup=False,
        )
        return EXIT_UNREADABLE
    return EXIT_OK


def _progress(buckets: int) -> AbstractContextManager[Callable[[], None]]:
    """A bar of buckets done on stderr, when stderr is a terminal and the scan long."""
    if buckets < PROGRESS_BUCKETS or not sys.stderr.isatty():
        return nullcontext(lambda: None)
    return _Bar(buckets)


class _Bar(AbstractContextManager[Callable[[], None]]):
    def __init__(self, total: int) -> None:
        self.progress = Progress(
            TextColumn("archive"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("hours"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.task = self.progress.add_task("scan", total=total)

    def __enter__(self) -> Callable[[], None]:
        self.progress.start()
        return lambda: self.progress.advance(self.task)

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()
