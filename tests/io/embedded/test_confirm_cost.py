"""What proving ownership costs: a version check (HEAD), never a download of the state.

A batch holding only heartbeats, and an idle broker's periodic ownership check, must
prove the state object unchanged without reading it: with a large backlog a whole-object
read per heartbeat batch would cost more than the heartbeats themselves.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from osqueue_core import BrokerConfig
from osqueue_io import EmbeddedQueue
from osqueue_io.storage import LocalFileStore, ObjectStore, ObjectVersion, StoredObject

pytestmark = pytest.mark.anyio


class CountingStore:
    """A real store that counts each call by (method, key) and the bytes read back."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.calls: Counter[tuple[str, str]] = Counter()
        self.bytes_read = 0
        self.heads = anyio.Event()
        self.heads_wanted = 0

    @property
    def url(self) -> str:
        return f"counting+{self.inner.url}"

    async def read(self, key: str) -> StoredObject | None:
        self.calls["read", key] += 1
        found = await self.inner.read(key)
        self.bytes_read += len(found.data) if found is not None else 0
        return found

    async def head(self, key: str) -> ObjectVersion | None:
        self.calls["head", key] += 1
        if self.heads_wanted and self.calls["head", key] >= self.heads_wanted:
            self.heads.set()
        return await self.inner.head(key)

    async def create(self, key: str, data: bytes) -> ObjectVersion:
        self.calls["create", key] += 1
        return await self.inner.create(key, data)

    async def update(self, key: str, data: bytes, expected: ObjectVersion) -> ObjectVersion:
        self.calls["update", key] += 1
        return await self.inner.update(key, data, expected)

    async def delete(self, key: str) -> None:
        self.calls["delete", key] += 1
        await self.inner.delete(key)

    async def list(
        self, prefix: str, *, limit: int | None = None, start_after: str | None = None
    ) -> list[str]:
        self.calls["list", prefix] += 1
        return await self.inner.list(prefix, limit=limit, start_after=start_after)

    async def read_many(self, keys: Sequence[str]) -> dict[str, StoredObject | None]:
        for key in keys:
            self.calls["read", key] += 1
        found = await self.inner.read_many(keys)
        self.bytes_read += sum(len(f.data) for f in found.values() if f is not None)
        return found

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_heartbeats_are_confirmed_by_a_head_not_a_download(tmp_path: Path) -> None:
    store = CountingStore(LocalFileStore(tmp_path))
    # No spilling: a spill's segment write and the state write that attaches it run off
    # the acknowledgement path and could land during the heartbeats; an inline backlog
    # also keeps the state object large, the case a download would hurt.
    config = BrokerConfig(spill_jobs=None)
    async with EmbeddedQueue(store, bytes, config=config) as queue:
        for _ in range(4):  # a backlog worth not downloading
            await queue.push_many([b"x" * 100] * 500)
        job = await queue.claim()
        assert job is not None
        before = store.calls.copy()
        bytes_before = store.bytes_read
        for _ in range(20):
            assert await queue.heartbeat(job) > 0
        heads = store.calls["head", "state.json"] - before["head", "state.json"]
        assert heads >= 1, "each heartbeat batch is confirmed by a version check"
        assert store.calls["read", "state.json"] == before["read", "state.json"]
        assert store.calls["update", "state.json"] == before["update", "state.json"]
        assert store.bytes_read == bytes_before, "nothing was downloaded"


async def test_an_idle_broker_checks_its_ownership_by_head_only(tmp_path: Path) -> None:
    store = CountingStore(LocalFileStore(tmp_path))
    config = BrokerConfig(ownership_check=0.02)
    async with EmbeddedQueue(store, bytes, config=config) as queue:
        await queue.push(b"one job")
        before = store.calls.copy()
        bytes_before = store.bytes_read
        store.heads_wanted = before["head", "state.json"] + 5
        with anyio.fail_after(10):
            await store.heads.wait()  # five idle ownership checks went by
        idle = store.calls - before
        assert set(idle) == {("head", "state.json")}, idle
        assert store.bytes_read == bytes_before
