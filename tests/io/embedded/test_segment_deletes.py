"""Segments leave the bucket (stage 2), on real storage: a local directory, moto's S3
server and azurite. A running broker deletes the segments its writes dropped once those
writes landed; a broker taking over deletes its predecessor's orphans, and nothing that
is referenced, of a later epoch, or not a segment key."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest

from osqueue_core import BrokerConfig, segment_key
from osqueue_io import EmbeddedQueue
from osqueue_io.storage import LocalFileStore, ObjectStore
from tests.io.conftest import fresh_prefix

pytestmark = pytest.mark.anyio

SEGMENTS = "segments/"
CONFIG = BrokerConfig(spill_jobs=4, segment_jobs=8, read_ahead=1)
#: Plenty for a few dozen storage calls on a loaded machine.
TIMEOUT = 60.0


@pytest.fixture(params=["local", "s3", "azure"])
def open_place(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], ObjectStore]:
    """Call it for a new client of one test's storage (each call sees the same objects)."""
    if request.param == "local":
        return lambda: LocalFileStore(tmp_path / "queue")
    prefix = fresh_prefix()
    name = "s3_store_factory" if request.param == "s3" else "azure_store_factory"
    factory = request.getfixturevalue(name)
    return lambda: factory(prefix)


@pytest.fixture
async def connect(
    open_place: Callable[[], ObjectStore],
) -> AsyncIterator[Callable[[], ObjectStore]]:
    """Call it for a new client of the test's storage; every one is closed at the end."""
    opened: list[ObjectStore] = []

    def new_client() -> ObjectStore:
        opened.append(open_place())
        return opened[-1]

    yield new_client
    for store in opened:
        await store.aclose()


@contextlib.asynccontextmanager
async def broker(store: ObjectStore) -> AsyncIterator[EmbeddedQueue[bytes]]:
    """A broker on ``store`` (taking it over), released at the end, all within TIMEOUT."""
    with anyio.fail_after(TIMEOUT):
        async with EmbeddedQueue(store, bytes, config=CONFIG) as queue:
            yield queue


async def spill(queue: EmbeddedQueue[bytes], count: int) -> None:
    """Push ``count`` jobs and wait until every one is untouched in a segment."""
    await queue.push_many([b"job %d" % n for n in range(count)])
    await queue.runtime.wait_until(lambda s: s.untouched == count)


async def drain(queue: EmbeddedQueue[bytes], count: int) -> None:
    for _ in range(count):
        job = await queue.claim()
        assert job is not None
        await queue.complete(job)
    assert await queue.claim() is None


async def test_a_running_broker_deletes_the_segments_its_writes_dropped(
    connect: Callable[[], ObjectStore],
) -> None:
    store = connect()
    async with broker(store) as queue:
        await spill(queue, 24)
        spilled = await store.list(SEGMENTS)
        assert len(spilled) >= 3
        await drain(queue, 24)
        stats = await queue.runtime.wait_until(
            lambda s: s.segments == 0 and s.segment_deletes_pending == 0
        )
        # Still running: its own deletes, not a successor's sweep, emptied the prefix.
        assert await store.list(SEGMENTS) == []
        assert stats.segments_deleted >= len(spilled)
        assert stats.sweeps == 0  # a new queue: nobody to sweep after


async def test_a_takeover_sweeps_its_predecessors_orphans_and_nothing_else(
    connect: Callable[[], ObjectStore],
) -> None:
    first = connect()
    async with broker(first) as queue:
        await spill(queue, 16)
    referenced = await first.list(SEGMENTS)
    assert len(referenced) == 2
    found = await first.read(referenced[0])
    assert found is not None
    # What a broker killed between a create and the write attaching it leaves behind,
    # and what is not the sweep's to delete.
    orphans = [segment_key(SEGMENTS, 1, 50), segment_key(SEGMENTS, 1, 51)]
    later_epoch = segment_key(SEGMENTS, 7, 1)
    not_a_segment = f"{SEGMENTS}README.txt"
    for key in [*orphans, later_epoch, not_a_segment]:
        await first.create(key, found.data)

    second = connect()
    async with broker(second) as queue:
        stats = await queue.runtime.wait_until(
            lambda s: s.sweeps == 1 and s.segment_deletes_pending == 0
        )
        assert (stats.swept, stats.segments_deleted) == (2, 2)
        assert await second.list(SEGMENTS) == sorted([*referenced, later_epoch, not_a_segment])
        await drain(queue, 16)  # every referenced segment was still there to serve
        await queue.runtime.wait_until(lambda s: s.segments == 0 and s.segment_deletes_pending == 0)
        assert await second.list(SEGMENTS) == [later_epoch, not_a_segment]
