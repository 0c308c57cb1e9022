"""A queue to benchmark, in one of two modes, on a fresh :class:`~benchmarks.stores.Location`.

``embedded``: one :class:`osqueue_io.EmbeddedQueue` in this process, shared by every
caller task (the store may be wrapped in this process). ``grpc``: a broker subprocess
(:class:`benchmarks.broker.BrokerProcess`) and ``connections`` :class:`osqueue_io.RemoteQueue`
clients, callers spread over them round-robin.

Use :func:`deployment` as an async context manager; :meth:`Deployment.client` gives the
queue caller ``i`` should use.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import attrs

from benchmarks.backlog import write_backlog
from benchmarks.broker import BrokerProcess, broker_flags
from benchmarks.stores import Location
from benchmarks.wrappers import CountingStore, WriteLatencyStore
from osqueue_io import EmbeddedQueue, JobQueue, RemoteQueue
from osqueue_io.storage import ObjectStore

MODES = ("embedded", "grpc")
#: gRPC clients (HTTP/2 connections) the callers share: "a few connections".
DEFAULT_CONNECTIONS = 4
STATE_KEY = "state.json"


@attrs.define
class Deployment:
    """An open queue: ``clients`` to call, and ways to look at what it stored."""

    mode: str
    location: Location
    clients: Sequence[JobQueue[bytes]]
    #: The embedded queue's store (as passed to it), None in gRPC mode.
    store: ObjectStore | None = None
    #: The broker subprocess, None in embedded mode.
    broker: BrokerProcess | None = None
    counts_file: Path | None = None

    def client(self, index: int) -> JobQueue[bytes]:
        return self.clients[index % len(self.clients)]

    def storage_counts(self) -> dict[str, int]:
        """Storage calls so far, when the deployment counts them (``count=True``)."""
        if isinstance(self.store, CountingStore):
            return dict(self.store.counts)
        if self.counts_file is not None and self.counts_file.exists():
            counts: dict[str, int] = json.loads(self.counts_file.read_text())
            return counts
        raise RuntimeError("this deployment does not count storage calls")

    async def state_size(self) -> int | None:
        """Bytes of the state object now (None when it cannot be read from here: a
        ``memory://`` store inside a broker subprocess)."""
        if self.store is not None:
            found = await self.store.read(STATE_KEY)
        elif self.location.kind == "memory":
            return None
        else:
            store = self.location.open()
            try:
                found = await store.read(STATE_KEY)
            finally:
                await store.aclose()
        return len(found.data) if found is not None else 0


def wrap(store: ObjectStore, write_latency: float | None, count: bool) -> ObjectStore:
    """``store`` with the benchmark wrappers asked for (latency inside, counting outside)."""
    if write_latency is not None:
        store = WriteLatencyStore(store, write_latency)
    if count:
        store = CountingStore(store)
    return store


@asynccontextmanager
async def deployment(
    mode: str,
    location: Location,
    *,
    write_latency: float | None = None,
    count: bool = False,
    connections: int = DEFAULT_CONNECTIONS,
    scratch: Path | None = None,
    backlog: int = 0,
) -> AsyncIterator[Deployment]:
    """Open a queue on ``location`` in ``mode``; close it (and stop its broker) after.

    ``write_latency`` adds that many seconds to every write; ``count`` counts storage
    calls (gRPC mode writes the counters to a file under ``scratch``); ``backlog`` ready
    jobs are written into the state before the queue opens (:mod:`benchmarks.backlog`).
    """
    if mode == "embedded":
        store = wrap(location.open(), write_latency, count)
        try:
            if backlog:
                await write_backlog(store, backlog)
            async with EmbeddedQueue(store, bytes) as queue:
                yield Deployment(mode, location, [queue], store=store)
        finally:
            await store.aclose()
    elif mode == "grpc":
        counts_file = None
        if count:
            assert scratch is not None, "counting in gRPC mode needs a scratch directory"
            counts_file = scratch / f"counts-{id(location)}.json"
        # A memory:// store lives in the broker process: benchmarks.serve loads it there.
        serve_backlog = backlog if location.kind == "memory" else 0
        if backlog and not serve_backlog:
            store = location.open()
            try:
                await write_backlog(store, backlog)
            finally:
                await store.aclose()
        wrapped = write_latency is not None or count or serve_backlog > 0
        broker = BrokerProcess(
            location.url,
            *broker_flags(write_latency, counts_file, serve_backlog),
            env=location.env,
            module="benchmarks.serve" if wrapped else "osqueue_io.server",
        )
        try:
            clients = [RemoteQueue(broker.address, bytes) for _ in range(connections)]
            for client in clients:
                await client.open()
            try:
                yield Deployment(mode, location, clients, broker=broker, counts_file=counts_file)
            finally:
                for client in clients:
                    await client.aclose()
        finally:
            broker.stop()
    else:
        raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")


async def revision(deployment: Deployment) -> int:
    """The state's revision now: it goes up by one with every state write."""
    client = deployment.clients[0]
    if isinstance(client, EmbeddedQueue):
        return client.stats().revision
    assert isinstance(client, RemoteQueue)
    return (await client.stats()).revision


async def jobs_in_state(deployment: Deployment) -> int:
    """Jobs the state object holds now: live, dead, and finished awaiting their archive."""
    client = deployment.clients[0]
    if isinstance(client, EmbeddedQueue):
        stats = client.stats()
        return (
            stats.ready
            + stats.delayed
            + stats.claimed
            + stats.dead
            + (stats.finished_pending_archive)
        )
    assert isinstance(client, RemoteQueue)
    remote = await client.stats()
    return (
        remote.ready
        + remote.delayed
        + remote.claimed
        + remote.dead
        + remote.completed_pending_archive
    )
