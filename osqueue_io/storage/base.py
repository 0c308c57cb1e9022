"""The storage interface the runtime codes against, and the bounded fan-out for reads.

Every backend offers the same operations with the same guarantees; only latency
and the limits in ``docs/storage.md`` differ. Keys follow :mod:`osqueue_io.storage.keys`.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, runtime_checkable

import anyio

from osqueue_io.storage.errors import StorageError
from osqueue_io.storage.version import ObjectVersion, StoredObject

#: How many reads ``read_many`` keeps in flight unless a store is told otherwise.
DEFAULT_READ_CONCURRENCY = 16


@runtime_checkable
class ObjectStore(Protocol):
    """An object store with compare-and-swap writes.

    ``read`` an object to get its bytes and version; ``update`` it with that version to
    change it only if nobody else did in between; ``create`` a key only if it is absent
    (archive objects are written this way: immutable, create-only); ``delete`` one the
    broker knows nothing references any more (a dropped segment). Every failure is a
    :class:`~osqueue_io.storage.errors.StorageError` whose class says whether a write
    landed. Open one with :func:`osqueue_io.storage.open_store`.
    """

    @property
    def url(self) -> str:
        """Where the store points, for logs and error messages (never holds credentials)."""
        ...

    async def read(self, key: str) -> StoredObject | None:
        """Return the object's bytes and version, or ``None`` if the key is absent."""
        ...

    async def head(self, key: str) -> ObjectVersion | None:
        """Return the object's current version without its bytes, or ``None`` if absent.

        Cheap next to ``read`` for a large object: use it to check that an object is
        still at a version (the broker confirming it still owns the state).
        """
        ...

    async def create(self, key: str, data: bytes) -> ObjectVersion:
        """Write ``data`` only if ``key`` is absent; raise ``AlreadyExists`` otherwise."""
        ...

    async def update(self, key: str, data: bytes, expected: ObjectVersion) -> ObjectVersion:
        """Replace the object only if it is still at ``expected``; else ``WriteConflict``.

        An absent key is a conflict too: there is no version it could match.
        """
        ...

    async def delete(self, key: str) -> None:
        """Remove the object at ``key``. An absent key is no error: it is gone either way.

        A failure is a :class:`~osqueue_io.storage.errors.StorageError`:
        ``WriteNotApplied`` when the object certainly stays, ``OutcomeUnknown`` when it
        may be gone.
        """
        ...

    async def list(
        self, prefix: str, *, limit: int | None = None, start_after: str | None = None
    ) -> list[str]:
        """Return the sorted keys under ``prefix`` (whole segments; ``""`` for all).

        With ``limit`` (at least 1), return at most ``limit`` keys, sorted, and never
        fewer than ``min(limit, number of keys under prefix)``, and stop listing once
        there are enough: ``list(prefix, limit=1)`` asks "is anything there?" cheaply.
        Every backend here returns the first ``limit`` keys in sorted order, but the
        contract promises only some ``limit`` of them. ``limit < 1`` is a ``ValueError``.
        With ``start_after``, only the keys that sort after it count (the next page of a
        listing whose last key it is).
        """
        ...

    async def read_many(self, keys: Sequence[str]) -> dict[str, StoredObject | None]:
        """Read several keys concurrently (bounded); absent keys map to ``None``."""
        ...

    async def aclose(self) -> None:
        """Release what the store holds. The store must not be used afterwards."""
        ...


def as_seconds(value: object) -> float | None:
    """``value`` as a finite, non-negative number of seconds, or ``None`` if it is not one.

    For option checks: refuses bools, strings, NaN, infinities and ints too large for a
    float, without ever raising.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if seconds >= 0 and math.isfinite(seconds) else None


def check_list_limit(limit: int | None) -> int | None:
    """Return ``limit`` if it is ``None`` or an int of at least 1, else raise ``ValueError``."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise ValueError(f"list limit must be None or an int, not {type(limit).__name__}")
    if limit < 1:
        raise ValueError("list limit must be at least 1 (or None for every key)")
    return limit


async def read_concurrently(
    read: Callable[[str], Awaitable[StoredObject | None]],
    keys: Sequence[str],
    limit: int,
) -> dict[str, StoredObject | None]:
    """Run ``read`` over ``keys`` with at most ``limit`` in flight: ``read_many`` for backends.

    Raises the first failure in key order as itself (not as an exception group), after
    every read has finished, so callers handle one :class:`StorageError`.
    """
    unique = list(dict.fromkeys(keys))
    results: dict[str, StoredObject | None] = {}
    failures: dict[str, StorageError] = {}
    limiter = anyio.CapacityLimiter(limit)

    async def read_one(key: str) -> None:
        async with limiter:
            try:
                results[key] = await read(key)
            except StorageError as error:
                failures[key] = error

    async with anyio.create_task_group() as group:
        for key in unique:
            group.start_soon(read_one, key)
    for key in unique:
        if key in failures:
            raise failures[key]
    return {key: results[key] for key in unique}
