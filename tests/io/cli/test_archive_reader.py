"""``osqueue archive cat`` over an archive that a crash wrote twice.

A broker that crashes after writing an archive object but before the state records it
leaves the jobs in the state; the successor archives them again under its own epoch's
key, in the same hour (the jobs keep their ``finished_at``). Here that second object is
written with the store, create-only, exactly as the successor's write would be: the
same job records under another key. The reader must print each job once and say how
many it dropped, on stderr, leaving stdout to the records.
"""

from __future__ import annotations

import os
import pty
import subprocess
import time
from collections.abc import Callable

import anyio
import attrs
import orjson
import pytest

from osqueue_core import (
    Job,
    JobSpec,
    JobStatus,
    archive_bucket,
    archive_key,
    encode_archive,
    encode_job,
)
from osqueue_io.storage import ObjectStore, open_store
from tests.io.cli.conftest import OSQUEUE, osqueue
from tests.io.conftest import S3Server, fresh_prefix

HOUR = 3600.0


def _job(seq: int, finished_at: float, queue: str = "default") -> Job:
    return Job(
        id=f"{seq:012d}-1",
        seq=seq,
        born=JobSpec(b"payload %d" % seq, finished_at - 5, queue=queue),
        status=JobStatus.COMPLETED,
        attempts=1,
        claimed_by="worker-1",
        claimed_at=finished_at - 1,
        finished_at=finished_at,
        archive_key="set below",
    )


async def _archive(store: ObjectStore, epoch: int, revision: int, jobs: list[Job]) -> str:
    """Write ``jobs`` create-only as the archive object epoch ``epoch``'s ``revision``
    commits (every job in the hour of the first)."""
    bucket = archive_bucket(jobs[0].finished_at or 0.0, "%Y-%m-%dT%H")
    key = archive_key("archive/", bucket, epoch, revision)
    fragments = [encode_job(_with_key(job, key)) for job in jobs]
    await store.create(key, encode_archive(key, fragments))
    return key


def _with_key(job: Job, key: str) -> Job:
    return attrs.evolve(job, archive_key=key)


@pytest.fixture(params=["local", "s3"])
def archive_store(
    request: pytest.FixtureRequest, tmp_path: os.PathLike[str]
) -> tuple[str, dict[str, str], Callable[[], ObjectStore]]:
    """(URL, environment, opener) of an empty store."""
    if request.param == "local":
        url = str(os.path.join(tmp_path, "queue"))
        return url, {}, lambda: open_store(url)
    s3: S3Server = request.getfixturevalue("moto_s3")
    url = s3.url(fresh_prefix())
    return url, s3.env, lambda: open_store(url, **s3.options)


def test_a_crash_retried_archive_write_is_read_once(
    archive_store: tuple[str, dict[str, str], Callable[[], ObjectStore]],
) -> None:
    url, env, open_it = archive_store
    now = time.time()
    earlier = now - now % HOUR - HOUR + 60  # one minute into the previous hour
    first, second, third, other = (
        _job(1, earlier),
        _job(2, earlier + 1),
        _job(3, earlier + 2, queue="mail"),
        _job(4, now - 1),
    )

    async def write() -> None:
        store = open_it()
        try:
            await _archive(store, 1, 10, [first, second])
            # The successor (epoch 2) archives the same two again, with one of its own.
            await _archive(store, 2, 3, [first, second, third])
            await _archive(store, 2, 4, [other])
        finally:
            await store.aclose()

    anyio.run(write)
    ran = osqueue("archive", "cat", "--since", "2h", "--data", url, env=env)
    assert ran.code == 0, ran.stderr
    ids = [record["id"] for record in ran.lines()]
    assert ids == [first.id, second.id, third.id, other.id]  # hour by hour, commit order
    assert "removed 2 duplicate record(s)" in ran.stderr
    # Kept: the first write's copy.
    assert ran.lines()[0]["archive_key"].endswith("000001-0000000010.json")

    only_mail = osqueue(
        "archive", "cat", "--since", "2h", "--queue", "mail", "--data", url, env=env
    )
    assert [record["id"] for record in only_mail.lines()] == [third.id]
    assert only_mail.stderr == ""  # the duplicates were of other queues: none removed

    listed = osqueue("archive", "ls", "--data", url, "--json", env=env).json()
    assert [bucket["objects"] for bucket in listed["buckets"]] == [2, 1]
    assert listed["objects"] == 3


def test_an_unreadable_archive_object_is_skipped_and_reported(tmp_path: os.PathLike[str]) -> None:
    url = str(os.path.join(tmp_path, "queue"))
    now = time.time()
    job = _job(1, now - 10)

    async def write() -> None:
        store = open_store(url)
        key = await _archive(store, 1, 1, [job])
        bucket = key.split("/")[1]
        await store.create(f"archive/{bucket}/000001-0000000002.json", b'{"jobs": "garbage"}')
        await store.create(f"archive/{bucket}/000001-0000000003.json", b"\x00not json")

    anyio.run(write)
    ran = osqueue("archive", "cat", "--since", "1h", "--data", url)
    assert ran.code == 4
    assert [orjson.loads(line)["id"] for line in ran.stdout.splitlines()] == [job.id]
    assert "skipped 2 unreadable archive object(s)" in ran.stderr
    assert "Traceback" not in ran.stderr


def test_progress_goes_to_a_terminal_on_stderr_never_to_stdout(
    tmp_path: os.PathLike[str],
) -> None:
    url = str(os.path.join(tmp_path, "queue"))
    job = _job(1, time.time() - 10)

    async def write() -> None:
        await _archive(open_store(url), 1, 1, [job])

    anyio.run(write)
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [str(OSQUEUE), "archive", "cat", "--since", "5h", "--data", url],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=60,
            check=False,
            env={**os.environ, "COLUMNS": "100", "TERM": "xterm"},
        )
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: everything was read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert done.returncode == 0
    assert [orjson.loads(line)["id"] for line in done.stdout.splitlines()] == [job.id]
    assert b"archive" in shown
    assert b"hours" in shown  # the bar's label: 6 hourly buckets were scanned
