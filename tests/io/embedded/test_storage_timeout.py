"""A storage call that never answers: the runtime gives up on it after
``storage_timeout`` and reports "outcome unknown"; the core reads back and retries."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest

from osqueue_io import EmbeddedQueue
from osqueue_io.storage import ObjectStore, ObjectVersion, StoredObject, open_store

pytestmark = pytest.mark.anyio


class StallingStore:
    """A real store whose next ``stall_updates`` updates hang forever (a black-holed
    connection), without landing."""

    def __init__(self, inner: ObjectStore, stall_updates: int) -> None:
        self.inner = inner
        self.stall_updates = stall_updates
        self.stalled = 0

    @property
    def url(self) -> str:
        return f"stalling+{self.inner.url}"

    async def read(self, key: str) -> StoredObject | None:
        return await self.inner.read(key)

    async def create(self, key: str, data: bytes) -> ObjectVersion:
        return await self.inner.create(key, data)

    async def update(self, key: str, data: bytes, expected: ObjectVersion) -> ObjectVersion:
        if self.stalled < self.stall_updates:
            self.stalled += 1
            await anyio.sleep_forever()
        return await self.inner.update(key, data, expected)

    async def head(self, key: str) -> ObjectVersion | None:
        return await self.inner.head(key)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def list(
        self, prefix: str, *, limit: int | None = None, start_after: str | None = None
    ) -> list[str]:
        return await self.inner.list(prefix, limit=limit, start_after=start_after)

    async def read_many(self, keys: Sequence[str]) -> dict[str, StoredObject | None]:
        return await self.inner.read_many(keys)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_hung_write_is_given_up_resolved_and_retried() -> None:
    store = StallingStore(open_store("memory://"), stall_updates=2)
    async with EmbeddedQueue(store, str, storage_timeout=0.2) as queue:
        with anyio.fail_after(10):
            job_id = await queue.push("survives two hung writes")
        assert store.stalled == 2
        job = await queue.claim("w1")
        assert job is not None
        assert (job.id, job.item) == (job_id, "survives two hung writes")
