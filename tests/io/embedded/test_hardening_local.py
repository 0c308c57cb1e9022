"""Hardening on the local-filesystem backend: a frozen lock holder, a truncated state
file, a deleted state file, and a state file restored from a backup.

Each test names the hole it guards and what it looked like before the fix.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest

from osqueue_core import (
    BrokerConfig,
    BrokerNotRunning,
    CorruptState,
    StateMissing,
    archive_bucket,
)
from osqueue_io import EmbeddedQueue
from osqueue_io.storage import LocalFileStore
from tests.io.archive import archived_ids, archived_records

from .hardening import STATE_KEY, open_and_close, read_state, snapshot

pytestmark = pytest.mark.anyio

FAST = BrokerConfig(retry_initial=0.01, retry_max=0.1)

# Takes the lock of a queue directory exactly as a broker's write does (recording its
# pid as the holder), then freezes until its stdin closes: a broker stopped mid-write.
# It lets go after HOLDER_LIMIT seconds on its own: the hang guard of a wait that no
# anyio timeout can interrupt (a worker thread in flock), turning a regression to an
# unbounded wait into a failed assertion instead of a hung test.
HOLDER_LIMIT = 20
FROZEN_HOLDER = textwrap.dedent(
    f"""
    import select, sys
    from pathlib import Path
    from osqueue_io.storage.local_lock import directory_lock

    lock = Path(sys.argv[1]) / ".osq-lock"
    with directory_lock(lock, timeout=10, key="state.json", operation="update"):
        print("holding", flush=True)
        select.select([sys.stdin], [], [], {HOLDER_LIMIT})
    """
)


async def push_and_finish(queue: EmbeddedQueue[str], count: int) -> list[str]:
    """Push ``count`` jobs, complete each, wait until all are archived; their ids."""
    done = []
    for i in range(count):
        await queue.push(f"job {i}")
    while (job := await queue.claim("w")) is not None:
        await queue.complete(job)
        done.append(job.id)
    with anyio.fail_after(10):
        await queue.runtime.wait_until(lambda s: s.finished_pending_archive == 0)
    return done


def archive_files(root: Path) -> dict[str, bytes]:
    """The archive objects under ``root`` by key (not the store's lock and temp files)."""
    if not (root / "archive").exists():
        return {}
    files = snapshot(root / "archive")
    return {f"archive/{name}": data for name, data in files.items() if "/.osq-" not in name}


async def test_a_frozen_lock_holder_fails_the_takeover_in_bounded_time_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Hole 1: a broker frozen while holding ``<dir>/.osq-lock`` blocked its successor's
    takeover silently and forever (a worker thread waiting in ``flock``). Now the wait is
    bounded by ``lock_timeout``, logged with the holder's pid, and the open fails with
    ``BrokerNotRunning`` naming the lock and its holder; once the holder is gone the
    queue opens and nothing was lost."""
    path = tmp_path / "queue"
    async with EmbeddedQueue(path, str, config=FAST) as first:
        job_id = await first.push("kept")
    # A child on pipes; its one output line is read through a worker thread.
    holder = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-c", FROZEN_HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdin is not None
        with anyio.fail_after(20):
            line = await anyio.to_thread.run_sync(holder.stdout.readline)
        assert line.strip() == "holding"
        caplog.set_level(logging.WARNING, logger="osqueue.storage.local")
        successor = EmbeddedQueue(
            path,
            str,
            config=BrokerConfig(start_attempts=2, retry_initial=0.01, retry_max=0.1),
            storage_options={"lock_timeout": 0.3},
        )
        with anyio.fail_after(2 * HOLDER_LIMIT), pytest.raises(BrokerNotRunning) as failed:
            await open_and_close(successor)
        message = str(failed.value)
        assert ".osq-lock" in message, message
        assert f"pid {holder.pid}" in message, message
        warnings = [
            record.getMessage()
            for record in caplog.records
            if record.name == "osqueue.storage.local" and record.levelno == logging.WARNING
        ]
        assert any(f"pid {holder.pid}" in text for text in warnings), warnings
    finally:
        holder.stdin.close()
        holder.wait(timeout=20)
    async with EmbeddedQueue(path, str, config=FAST, storage_options={"lock_timeout": 0.3}) as q:
        job = await q.claim("w")
        assert job is not None
        assert job.id == job_id


@pytest.mark.parametrize("cut", ["data", "header"])
async def test_a_truncated_state_file_fails_at_once_as_corrupt_and_is_not_touched(
    tmp_path: Path, cut: str
) -> None:
    """Hole 9: a truncated ``state.json`` was reported as a read failure, retried five
    times with backoff, then "could not read". Now the local store raises
    ``CorruptObject`` and the broker fails at once with ``CorruptState`` without
    retrying (a first retry would wait ``retry_initial`` = 60 s, past the hang guard)
    and without writing anything."""
    path = tmp_path / "queue"
    async with EmbeddedQueue(path, str, config=FAST) as q:
        for i in range(3):
            await q.push(f"job {i}")
    state = path / STATE_KEY
    raw = state.read_bytes()
    state.write_bytes(raw[:-7] if cut == "data" else raw[:12])
    before = snapshot(path)
    patient = BrokerConfig(retry_initial=60, retry_max=60)
    with anyio.fail_after(10), pytest.raises(CorruptState) as failed:
        await open_and_close(EmbeddedQueue(path, str, config=patient))
    assert failed.value.grpc_status == "DATA_LOSS"
    assert STATE_KEY in str(failed.value)
    assert snapshot(path) == before, "nothing was written, the damaged file is as it was"


async def test_a_deleted_state_with_history_is_refused_then_recreated_above_every_epoch(
    tmp_path: Path,
) -> None:
    """Hole 11: a deleted ``state.json`` next to an existing archive used to start a new
    empty queue at epoch 1, reusing job ids and archive keys. Now opening refuses with
    ``StateMissing`` (DATA_LOSS) and writes nothing; with ``recreate=True`` the new queue
    takes an epoch above every epoch used before, its job ids are new, and the archive is
    untouched."""
    path = tmp_path / "queue"
    finished: list[str] = []
    used_epochs: list[int] = []
    for _ in range(2):  # two brokers: the history spans two epochs
        async with EmbeddedQueue(path, str, config=FAST) as q:
            used_epochs.append(q.stats().epoch)
            finished += await push_and_finish(q, 3)
    (path / STATE_KEY).unlink()
    archive_before = archive_files(path)
    assert archive_before
    before = snapshot(path)

    with anyio.fail_after(10), pytest.raises(StateMissing) as refused:
        await open_and_close(EmbeddedQueue(path, str, config=FAST))
    assert refused.value.grpc_status == "DATA_LOSS"
    assert snapshot(path) == before, "the refusal wrote nothing"

    recreate = BrokerConfig(recreate=True, retry_initial=0.01, retry_max=0.1)
    async with EmbeddedQueue(path, str, config=recreate) as q:
        assert q.stats().epoch > max(used_epochs)
        fresh = await push_and_finish(q, 3)
    assert not set(fresh) & set(finished), "job ids never repeat"
    after = archive_files(path)
    assert {key: after[key] for key in archive_before} == archive_before
    ids = Counter(await archived_ids(LocalFileStore(path)))
    assert set(ids) == set(finished) | set(fresh)
    assert set(ids.values()) == {1}


async def test_a_deleted_state_of_a_queue_without_epoch_markers_is_recreated_with_new_ids(
    tmp_path: Path,
) -> None:
    """Hole 11, for a queue whose only history is its archive (written by an osqueue
    from before epoch markers, or with ``epochs/`` lost too): the refusal must still
    happen, and a recreated queue must not reuse the epochs the archive's job ids and
    keys carry, or its job ids repeat archived ones."""
    path = tmp_path / "queue"
    async with EmbeddedQueue(path, str, config=FAST) as q:
        finished = await push_and_finish(q, 3)
    (path / STATE_KEY).unlink()
    shutil.rmtree(path / "epochs")
    archive_before = archive_files(path)

    with anyio.fail_after(10), pytest.raises(StateMissing):
        await open_and_close(EmbeddedQueue(path, str, config=FAST))

    recreate = BrokerConfig(recreate=True, retry_initial=0.01, retry_max=0.1)
    async with EmbeddedQueue(path, str, config=recreate) as q:
        fresh = await push_and_finish(q, 3)
    assert not set(fresh) & set(finished), f"job ids repeat: {sorted(set(fresh) & set(finished))}"
    after = archive_files(path)
    assert {key: after[key] for key in archive_before} == archive_before


async def test_a_state_restored_from_a_backup_never_overwrites_or_loses_archive_records(
    tmp_path: Path,
) -> None:
    """Hole 12: restoring ``state.json`` from a backup made (epoch, revision) pairs
    repeat, so a new archive write found its key present and took it for its own: the
    jobs were dropped from the state without being archived. Now each takeover reserves
    its epoch with a create-only marker, so the restored state continues at an unused
    epoch: every completed job is in exactly one archive object, no archive object is
    overwritten, and job ids never repeat."""
    path = tmp_path / "queue"
    async with EmbeddedQueue(path, str, config=FAST) as q:
        used_epochs = [q.stats().epoch]
        restored = [await q.push(f"restored {i}") for i in range(3)]
    backup = (path / STATE_KEY).read_bytes()
    finished: list[str] = []
    for broker in range(2):  # two more brokers archive jobs after the backup
        async with EmbeddedQueue(path, str, config=FAST) as q:
            used_epochs.append(q.stats().epoch)
            if broker == 0:
                # The backup's jobs are taken and held (never finished before the
                # restore), so that later jobs can be finished.
                held = [await q.claim("holder") for _ in restored]
                assert [job.id for job in held if job] == restored
            for i in range(4):  # one job at a time: archive keys at many revisions
                await q.push(f"later {i}")
                job = await q.claim("w")
                assert job is not None
                await q.complete(job)
                finished.append(job.id)
            with anyio.fail_after(10):
                await q.runtime.wait_until(lambda s: s.finished_pending_archive == 0)
    archive_before = archive_files(path)
    (path / STATE_KEY).write_bytes(backup)  # the operator restores the backup

    async with EmbeddedQueue(path, str, config=FAST) as q:
        assert q.stats().epoch > max(used_epochs)
        after_restore = await push_and_finish(q, 4)
    store = LocalFileStore(path)
    state = await read_state(store)
    assert state.jobs == [], "the restored jobs were completed and archived too"
    assert set(restored) <= set(after_restore)
    after = archive_files(path)
    assert {key: after[key] for key in archive_before} == archive_before, "none overwritten"
    ids = Counter(await archived_ids(store))
    assert set(ids) == set(finished) | set(after_restore)
    assert set(ids.values()) == {1}, "each completed job in exactly one archive object"
    fresh = [j for j in after_restore if j not in restored]
    assert len(set(fresh) | set(finished) | set(restored)) == len(fresh + finished + restored)


async def test_an_archive_key_holding_other_jobs_is_not_taken_for_ours(tmp_path: Path) -> None:
    """Hole 12, second half: an archive key that already holds somebody else's jobs
    (what a bucket restored with its epoch markers leaves at a key a new broker
    computes) used to be taken for our own earlier write, and our jobs were dropped
    from the state unarchived. Now the foreign object is left as it is and our jobs move
    to a fresh key."""
    path = tmp_path / "queue"
    store = LocalFileStore(path)
    async with EmbeddedQueue(path, str, config=FAST) as q:
        await push_and_finish(q, 1)
        foreign_key = next(iter(archive_files(path)))
        foreign = await store.read(foreign_key)
        assert foreign is not None
        job_id = await q.push("ours")
        job = await q.claim("w")
        assert job is not None
        assert job.id == job_id
        # The complete commits at the next revision; its archive key is deterministic:
        # plant the foreign object there first (under either hour, should one end now).
        stats = q.stats()
        revision = stats.revision + 1
        planted = set()
        for wall in (time.time(), time.time() + 60):
            bucket = archive_bucket(wall, FAST.archive_bucket_format)
            key = f"archive/{bucket}/{stats.epoch:06d}-{revision:010d}.json"
            if key not in planted:
                await store.create(key, foreign.data)
                planted.add(key)
        await q.complete(job)
        with anyio.fail_after(10):
            await q.runtime.wait_until(lambda s: s.finished_pending_archive == 0)
        assert q.stats().archive_collisions == 1
    for key in planted:
        found = await store.read(key)
        assert found is not None
        assert found.data == foreign.data, "the foreign object was not overwritten"
    records = await archived_records(store)
    ours = [r for r in records if r["id"] == job_id]
    assert len(ours) == 1, "our job is archived once, under a fresh key"
