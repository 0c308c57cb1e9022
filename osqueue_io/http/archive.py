"""The archive as the dashboard shows it: time buckets, their objects, their jobs.

Archive objects live under ``<archive_prefix><bucket>/`` (docs/state-format.md,
"Archive objects"); a bucket is the UTC time a job finished, formatted with the
broker's ``archive_bucket_format`` (hourly by default). Storage can only list keys in
order from the start, so the dashboard does not list the whole archive: it names the
buckets of the hours it shows (24 at a time, going back page by page) and lists each
with a limit. Reading jobs stops at a byte budget. Everything read here is untrusted
(a bucket edited by hand): an object that does not decode is reported, not trusted.
"""

from __future__ import annotations

import re
from typing import Any

import anyio
import attrs
import orjson

from osqueue_core import BrokerConfig, Job, OsqueueError, archive_bucket
from osqueue_core.codec import decode_job
from osqueue_io.storage import ObjectStore

#: Buckets the dashboard can name: what the default format (and most others) produce.
BUCKET_NAME = re.compile(r"[0-9A-Za-z:_.\-]{1,64}")
#: Hours shown per page of the archive overview.
HOURS_PER_PAGE = 24
#: Objects counted per bucket on the overview (more shows as "N+").
MAX_COUNTED = 1000
#: Objects listed on a bucket's page, and bytes of them read to show their jobs.
MAX_LISTED = 500
MAX_READ_BYTES = 8 << 20
#: Listings in flight at once.
CONCURRENT_LISTS = 8


@attrs.frozen
class BucketCount:
    """One bucket and the archive objects under it (``more``: at least that many)."""

    bucket: str
    objects: int
    more: bool


@attrs.frozen
class BucketJobs:
    """What a bucket's page shows: its keys, the jobs read from them, and what could
    not be shown (``unread`` keys past the byte budget, ``unreadable`` keys that did not
    decode)."""

    keys: tuple[str, ...]
    more_keys: bool
    jobs: tuple[tuple[str, Job], ...]
    unread: int
    unreadable: tuple[str, ...]


def bucket_prefix(config: BrokerConfig, bucket: str) -> str:
    if not BUCKET_NAME.fullmatch(bucket):
        raise ValueError("not a bucket name")
    return f"{config.archive_prefix}{bucket}/"


def recent_buckets(config: BrokerConfig, wall: float, hours_ago: int) -> list[str]:
    """The buckets of the :data:`HOURS_PER_PAGE` hours ending ``hours_ago`` hours
    before ``wall``, newest first, each once (a daily format names fewer)."""
    names: dict[str, None] = {}
    for hour in range(hours_ago, hours_ago + HOURS_PER_PAGE):
        name = archive_bucket(wall - hour * 3600.0, config.archive_bucket_format)
        if BUCKET_NAME.fullmatch(name):
            names.setdefault(name)
    return list(names)


async def count_buckets(
    store: ObjectStore, config: BrokerConfig, buckets: list[str]
) -> list[BucketCount]:
    """How many archive objects each bucket holds (up to :data:`MAX_COUNTED`)."""
    found: dict[str, list[str]] = {}
    limiter = anyio.CapacityLimiter(CONCURRENT_LISTS)

    async def count(bucket: str) -> None:
        async with limiter:
            found[bucket] = await store.list(bucket_prefix(config, bucket), limit=MAX_COUNTED + 1)

    async with anyio.create_task_group() as group:
        for bucket in buckets:
            group.start_soon(count, bucket)
    return [
        BucketCount(b, min(len(found[b]), MAX_COUNTED), len(found[b]) > MAX_COUNTED)
        for b in buckets
    ]


def decode_archive(data: bytes) -> list[Job]:
    """The jobs of an archive object; ValueError if it is not one."""
    try:
        raw: Any = orjson.loads(data)
        records = raw["jobs"]
        if not isinstance(records, list):
            raise TypeError("jobs is not a list")
        return [decode_job(record) for record in records]
    except (orjson.JSONDecodeError, TypeError, KeyError, OsqueueError) as error:
        raise ValueError(f"not an archive object: {str(error)[:200]}") from None


async def bucket_jobs(store: ObjectStore, config: BrokerConfig, bucket: str) -> BucketJobs:
    """A bucket's keys (up to :data:`MAX_LISTED`) and the jobs of the first of them,
    read in key order (commit order) until :data:`MAX_READ_BYTES` have been read."""
    keys = await store.list(bucket_prefix(config, bucket), limit=MAX_LISTED + 1)
    more = len(keys) > MAX_LISTED
    keys = keys[:MAX_LISTED]
    jobs: list[tuple[str, Job]] = []
    unreadable: list[str] = []
    budget = MAX_READ_BYTES
    read = 0
    for key in keys:
        if budget <= 0:
            break
        found = await store.read(key)
        read += 1
        if found is None:
            continue
        budget -= len(found.data)
        try:
            jobs.extend((key, job) for job in decode_archive(found.data))
        except ValueError:
            unreadable.append(key)
    return BucketJobs(tuple(keys), more, tuple(jobs), len(keys) - read, tuple(unreadable))


async def archived_job(store: ObjectStore, config: BrokerConfig, key: str, job_id: str) -> Job:
    """Job ``job_id`` as the archive object ``key`` holds it. ValueError if ``key`` is
    not an archive key, LookupError if the object or the job is not there."""
    rest = key.removeprefix(config.archive_prefix)
    bucket, slash, name = rest.partition("/")
    if rest == key or not slash or not BUCKET_NAME.fullmatch(bucket):
        raise ValueError("not an archive key")
    if not re.fullmatch(r"[0-9]{1,20}-[0-9]{1,20}\.json", name):
        raise ValueError("not an archive key")
    found = await store.read(key)
    if found is None:
        raise LookupError(f"no archive object {key}")
    for job in decode_archive(found.data):
        if job.id == job_id:
            return job
    raise LookupError(f"job {job_id} is not in {key}")
