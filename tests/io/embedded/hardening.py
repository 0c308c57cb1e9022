"""Helpers of the hardening tests: holding storage calls at a gate, acting at the moment
a write lands, and reading what storage really holds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from obstore.store import MemoryStore

from osqueue_core import (
    DecodedState,
    Job,
    decode_segment,
    decode_state,
    segment_job,
    untouched_positions,
)
from osqueue_io import EmbeddedQueue
from osqueue_io.storage import Faults, FaultyStore, ObjectStore, ObjectVersion, ObstoreStore

STATE_KEY = "state.json"


def only_state(key: str) -> bool:
    """A ``Faults.keys`` filter: the state object only."""
    return key == STATE_KEY


class Gate:
    """A ``sleep`` for :class:`FaultyStore` that the test opens and closes.

    While the gate is open, injected latency costs nothing. While it is closed, every
    call the store delays waits at the gate until it opens: a write is held in flight
    exactly as long as the test needs (no timing involved), then let through.
    """

    def __init__(self) -> None:
        self._opened = anyio.Event()
        self._opened.set()
        self._arrived = anyio.Event()
        #: Calls waiting at the gate now.
        self.held = 0

    def close(self) -> None:
        if self._opened.is_set():
            self._opened = anyio.Event()

    def open(self) -> None:
        self._opened.set()

    async def sleep(self, seconds: float) -> None:
        opened = self._opened
        if opened.is_set():
            return
        self.held += 1
        self._arrived.set()
        self._arrived = anyio.Event()
        try:
            await opened.wait()
        finally:
            self.held -= 1

    async def wait_held(self, count: int = 1) -> None:
        """Wait until ``count`` calls wait at the (closed) gate."""
        while self.held < count:
            await self._arrived.wait()


def gated_store(inner: ObjectStore, gate: Gate) -> FaultyStore:
    """``inner`` whose state-object calls wait at ``gate`` while it is closed."""
    return FaultyStore(inner, Faults(latency=1.0, keys=only_state), seed=0, sleep=gate.sleep)


class AfterWriteStore(ObstoreStore):
    """A real in-memory store that calls ``after_write(key)`` the moment a write has
    landed, before its answer goes back to the caller.

    A hook, not a fake: it is the only way to act inside the window between "the object
    is written" and "the broker has heard so" (no public event marks it).
    """

    def __init__(self) -> None:
        super().__init__(MemoryStore(), url="memory://")
        self.after_write: Callable[[str], None] | None = None

    def _landed(self, key: str) -> None:
        if self.after_write is not None:
            self.after_write(key)

    async def create(self, key: str, data: bytes) -> ObjectVersion:
        version = await super().create(key, data)
        self._landed(key)
        return version

    async def update(self, key: str, data: bytes, expected: ObjectVersion) -> ObjectVersion:
        version = await super().update(key, data, expected)
        self._landed(key)
        return version


async def read_state(store: ObjectStore) -> DecodedState:
    """The state object as stored (not the broker's head state)."""
    found = await store.read(STATE_KEY)
    assert found is not None, "the state object exists"
    return decode_state(found.data)


async def stored_jobs(store: ObjectStore, state: DecodedState) -> list[Job]:
    """Every job of a stored state: inline, and untouched in its segments."""
    jobs = list(state.jobs)
    for ref in state.segments:
        found = await store.read(ref.key)
        assert found is not None, f"referenced segment {ref.key} exists"
        records = decode_segment(found.data, ref).records
        jobs += [segment_job(records[p], ref.key) for p in untouched_positions(ref)]
    return jobs


async def open_and_close(queue: EmbeddedQueue[Any]) -> None:
    """Open ``queue`` and close it again: for tests that expect opening to fail."""
    async with queue:
        pass


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (the local store's own files too) and its bytes."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }
