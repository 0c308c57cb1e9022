"""Store wrappers for benchmarks: a fixed latency on every write, and counters.

:class:`~osqueue_io.storage.FaultyStore` can add latency, but to every call (reads,
heads and lists too), so it cannot model "a store whose writes take +50 ms" on its own:
:class:`WriteLatencyStore` delays ``create`` and ``update`` only. :class:`CountingStore`
counts calls and bytes, for the idle-cost workload.
"""

from __future__ import annotations

import builtins
import collections
from collections.abc import Mapping, Sequence

import anyio

from osqueue_io.storage import ObjectStore, ObjectVersion, StoredObject


class WriteLatencyStore:
    """``inner`` with ``latency`` seconds added before every write (create or update)."""

    def __init__(self, inner: ObjectStore, latency: float) -> None:
        self._inner = inner
        self.latency = latency

    @property
    def url(self) -> str:
        return f"slow-writes+{self._inner.url}"

    async def read(self, key: str) -> StoredObject | None:
        return await self._inner.read(key)

    async def head(self, key: str) -> ObjectVersion | None:
        return await self._inner.head(key)

    async def create(self, key: str, data: bytes) -> ObjectVersion:
        await anyio.sleep(self.latency)
        return await self._inner.create(key, data)

    async def update(self, key: str, data: bytes, expected: ObjectVersion) -> ObjectVersion:
        await anyio.sleep(self.latency)
        return await self._inner.update(key, data, expected)

    async def delete(self, key: str) -> None:
        await self._inner.delete(key)

    async def list(
        self, prefix: str, *, limit: int | None = None, start_after: str | None = None
    ) -> builtins.list[str]:
        return await self._inner.list(prefix, limit=limit, start_after=start_after)

    async def read_many(self, keys: Sequence[str]) -> dict[str, StoredObject | None]:
        return await self._inner.read_many(keys)

    async def aclose(self) -> None:
        await self._inner.aclose()


class CountingStore:
    """``inner``, counting each kind of call and the bytes read and written.

    ``counts`` keys: ``read``, ``head``, ``create``, ``update``, ``delete``, ``list``,
    ``read_many`` (calls), ``bytes_read``, ``bytes_written``. A ``read_many`` counts one
    ``read`` per key too.
    """

    def __init__(self, inner: ObjectStore) -> None:
        self._inner = inner
        self._counts: collections.Counter[str] = collections.Counter()

    @property
    def url(self) -> str:
        return f"counting+{self._inner.url}"

    @property
    def counts(self) -> Mapping[str, int]:
        """A snapshot of the counters."""
        return dict(self._counts)

    async def read(self, key: str) -> StoredObject | None:
        self._counts["read"] += 1
        found = await self._inner.read(key)
        self._counts["bytes_read"] += len(found.data) if found is not None else 0
        return found

    async def head(self, key: str) -> ObjectVersion | None:
        self._counts["head"] += 1
        return await self._inner.head(key)

    async def create(self, key: str, data: bytes) -> ObjectVersion:
        self._counts["create"] += 1
        self._counts["bytes_written"] += len(data)
        return await self._inner.create(key, data)

    async def update(self, key: str, data: bytes, expected: ObjectVersion) -> ObjectVersion:
        self._counts["update"] += 1
        self._counts["bytes_written"] += len(data)
        return await self._inner.update(key, data, expected)

    async def delete(self, key: str) -> None:
        self._counts["delete"] += 1
        await self._inner.delete(key)

    async def list(
        self, prefix: str, *, limit: int | None = None, start_after: str | None = None
    ) -> builtins.list[str]:
        self._counts["list"] += 1
        return await self._inner.list(prefix, limit=limit, start_after=start_after)

    async def read_many(self, keys: Sequence[str]) -> dict[str, StoredObject | None]:
        self._counts["read_many"] += 1
        found = await self._inner.read_many(keys)
        self._counts["read"] += len(found)
        self._counts["bytes_read"] += sum(len(o.data) for o in found.values() if o is not None)
        return found

    async def aclose(self) -> None:
        await self._inner.aclose()
