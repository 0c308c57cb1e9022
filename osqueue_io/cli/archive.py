"""Reading the archive: its hourly buckets, and the job records in a time range.

Finished jobs are archived under ``<archive_prefix><bucket>/<epoch>-<revision>.json``,
``bucket`` being the UTC hour they finished in (``%Y-%m-%dT%H``, docs/state-format.md,
"Archive objects"); each object is immutable and holds the jobs one state revision
committed into that hour. A scan lists and reads one hour at a time, a few objects at
once, so its memory is one hour's key listing and a handful of objects, whatever the
range.

A job's record can be in two objects of one hour: a broker that crashed after writing an
archive object but before the state said so archives the same jobs again, and an
archive key found holding other jobs sends its jobs to a fresh key (both in
architecture.md, "Archive"). Records repeat only within an hour (the hour is the job's
``finished_at``, which a retried write keeps), so a scan removes a job id it has already
seen in the same hour, keeps the first (keys sort in commit order) and counts the rest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import attrs
import orjson

from osqueue_core import DEFAULT_QUEUE, BrokerConfig, archive_bucket, quote
from osqueue_io.cli.exits import CliError
from osqueue_io.storage import ObjectStore

__all__ = [
    "ARCHIVE_STATUSES",
    "ArchiveScan",
    "Bucket",
    "hour_buckets",
    "list_buckets",
]

#: The bucket format every broker uses (the server has no flag to change it).
BUCKET_FORMAT = BrokerConfig().archive_bucket_format
HOUR = 3600.0
#: Most keys one listing may hold (a bucket, or the whole archive for ``archive ls``
#: without a range); past it the command asks for a narrower range instead of growing.
MAX_LISTED_KEYS = 1_000_000
#: Archive objects read at once.
READ_BATCH = 16
#: Statuses an archived record can have.
ARCHIVE_STATUSES = ("completed", "cancelled", "dead")


@attrs.frozen
class Bucket:
    """One time bucket of the archive and how many objects it holds."""

    name: str
    objects: int


def hour_buckets(since: float, until: float) -> list[str]:
    """The hourly bucket names that can hold jobs finished in ``[since, until]``."""
    hour = since - since % HOUR
    names: list[str] = []
    while hour <= until:
        names.append(archive_bucket(hour, BUCKET_FORMAT))
        hour += HOUR
    return names


async def list_buckets(
    store: ObjectStore, prefix: str, hours: Iterable[str] | None = None
) -> list[Bucket]:
    """The buckets under ``prefix`` with their object counts: those of ``hours`` that
    hold anything (one listing each), or with None every bucket (one listing of the
    whole archive, at most :data:`MAX_LISTED_KEYS` keys)."""
    if hours is not None:
        found = []
        for name in hours:
            keys = await _list(store, f"{prefix}{name}/", "this hour")
            if keys:
                found.append(Bucket(name, len(keys)))
        return found
    counts: dict[str, int] = {}
    for key in await _list(store, prefix, "the archive: give --since and --until"):
        name = key[len(prefix) :].partition("/")[0]
        counts[name] = counts.get(name, 0) + 1
    return [Bucket(name, counts[name]) for name in sorted(counts)]


async def _list(store: ObjectStore, prefix: str, narrower: str) -> list[str]:
    keys = await store.list(prefix, limit=MAX_LISTED_KEYS + 1)
    if len(keys) > MAX_LISTED_KEYS:
        raise CliError(
            f"more than {MAX_LISTED_KEYS:,} objects under {quote(prefix)}: list a narrower "
            f"range than {narrower}"
        )
    return keys


@attrs.define
class ArchiveScan:
    """The archived job records that finished in ``[since, until)``, optionally of one
    ``queue`` and ``status``, bucket by bucket, duplicates removed (see the module
    docstring). After the scan, ``duplicates`` counts the records removed and
    ``unreadable`` names the objects that could not be read (skipped)."""

    store: ObjectStore
    prefix: str
    since: float
    until: float
    queue: str | None = None
    status: str | None = None
    duplicates: int = 0
    unreadable: list[str] = attrs.Factory(list)

    def buckets(self) -> list[str]:
        """The hourly buckets this scan reads, oldest first."""
        return hour_buckets(self.since, self.until)

    async def records(
        self, bucket_done: Callable[[], None] = lambda: None
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield each matching record (as stored: the job's archived JSON), in bucket
        order, then key order; ``bucket_done`` is called after each bucket."""
        for name in self.buckets():
            seen: set[str] = set()
            keys = await _list(self.store, f"{self.prefix}{name}/", "this hour")
            for start in range(0, len(keys), READ_BATCH):
                batch = keys[start : start + READ_BATCH]
                found = await self.store.read_many(batch)
                for key in batch:
                    stored = found.get(key)
                    if stored is None:
                        continue  # deleted since it was listed
                    for record in self._jobs(key, stored.data):
                        if not self._wanted(record):
                            continue
                        if record["id"] in seen:
                            self.duplicates += 1
                            continue
                        seen.add(record["id"])
                        yield record
            bucket_done()

    def _jobs(self, key: str, data: bytes) -> list[dict[str, Any]]:
        """The job records of one archive object; none (and ``key`` noted as
        unreadable) if it is not an archive object."""
        try:
            raw = orjson.loads(data)
            jobs = raw["jobs"]
        except (orjson.JSONDecodeError, TypeError, KeyError):
            jobs = None
        if not isinstance(jobs, list) or not all(_is_record(job) for job in jobs):
            self.unreadable.append(key)
            return []
        return jobs

    def _wanted(self, record: dict[str, Any]) -> bool:
        born = record.get("born", record)
        finished = record.get("finished_at")
        if isinstance(finished, int | float) and not self.since <= finished < self.until:
            return False
        if self.queue is not None and born.get("queue", DEFAULT_QUEUE) != self.queue:
            return False
        return self.status is None or record.get("status", "ready") == self.status


def _is_record(job: object) -> bool:
    """Whether ``job`` has the shape of a job record (id, seq, and its birth fields)."""
    return (
        isinstance(job, dict)
        and isinstance(job.get("id"), str)
        and type(job.get("seq")) is int
        and isinstance(job.get("born", job), dict)
    )
