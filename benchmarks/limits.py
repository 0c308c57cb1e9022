"""The physical limits printed beside each result, measured in the same run.

* :func:`raw_write_seconds`: one conditional write (an update with the expected
  version) of a given size, on a fresh location of the same store with the same
  wrappers, timed alone: the least a commit can cost there (the local store pays the
  same fsyncs as the queue's own writes: it *is* the same store).
* :func:`store_bound`: closed-loop callers can have at most ``ops_per_write``
  operations waiting for a write, so ``ops_per_write / raw write`` is the most any
  group commit could deliver.
* :func:`asyncio_request_rate`: callers that each wait on a future which one "broker"
  task resolves in batches: the least work an asyncio runtime does per request, so the
  ceiling of an embedded queue on a store that costs nothing.
* :func:`job_encode_rate`: how fast this machine encodes one 100-byte job's JSON
  fragment with the core's codec. Every change of a job (push, claim, complete) must be
  written into the state, so each costs at least one such encoding: the per-job floor
  that batching cannot amortise.
* :func:`noop_rpc_rate`: the same ``Push`` RPC through the same client, answered by a
  server that does nothing (:mod:`benchmarks.noop_server`): the gRPC ceiling.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence

import anyio

from benchmarks.broker import BrokerProcess
from benchmarks.deploy import wrap
from benchmarks.stores import Location
from osqueue_core import Job, JobSpec, default_job_id, encode_job
from osqueue_io import RemoteQueue

RAW_KEY = "bench/raw-write"


async def raw_write_seconds(
    location: Location, size: int, writes: int, *, write_latency: float | None = None
) -> float:
    """Median seconds of one conditional update of ``size`` bytes on ``location``."""
    store = wrap(location.open(), write_latency, count=False)
    data = b"x" * max(size, 1)
    try:
        version = await store.create(RAW_KEY, data)
        times = []
        for _ in range(writes):
            started = time.perf_counter()
            version = await store.update(RAW_KEY, data, version)
            times.append(time.perf_counter() - started)
    finally:
        await store.aclose()
    return statistics.median(times)


def store_bound(ops_per_write: float, write_seconds: float) -> float:
    """Operations per second if every write carried every operation that could wait."""
    return ops_per_write / write_seconds


async def asyncio_request_rate(concurrency: int, seconds: float) -> float:
    """Requests per second of ``concurrency`` callers served by one task through futures."""
    loop = asyncio.get_running_loop()
    pending: list[asyncio.Future[None]] = []
    wake = asyncio.Event()
    done = 0
    stop = False

    async def caller() -> None:
        nonlocal done
        while not stop:
            future = loop.create_future()
            pending.append(future)
            wake.set()
            await future
            done += 1

    async def server() -> None:
        while not stop:
            await wake.wait()
            wake.clear()
            batch = pending[:]
            pending.clear()
            for future in batch:
                if not future.done():  # its caller was cancelled at the end
                    future.set_result(None)

    async with anyio.create_task_group() as group:
        group.start_soon(server)
        for _ in range(concurrency):
            group.start_soon(caller)
        await anyio.sleep(0.05)  # every caller started
        first, started = done, time.perf_counter()
        await anyio.sleep(seconds)
        count, elapsed = done - first, time.perf_counter() - started
        stop = True
        group.cancel_scope.cancel()
    return count / elapsed


def job_encode_rate(seconds: float) -> float:
    """Jobs per second ``osqueue_core.encode_job`` encodes (100-byte payloads)."""
    job = Job(id=default_job_id(1, 1), seq=1, born=JobSpec(payload=b"x" * 100, created_at=1.0))
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            encode_job(job)
        count += 100
    return count / (time.perf_counter() - started)


class NoopServer:
    """:mod:`benchmarks.noop_server` in a subprocess, started on first use."""

    def __init__(self) -> None:
        self._process: BrokerProcess | None = None

    @property
    def address(self) -> str:
        if self._process is None:
            self._process = BrokerProcess("unused", module="benchmarks.noop_server")
        return self._process.address

    def close(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None


async def noop_rpc_rate(
    address: str, concurrency: int, connections: int, seconds: float, batch: int = 0
) -> float:
    """RPCs per second: ``concurrency`` callers over ``connections`` clients, each pushing
    a 100-byte payload (or ``batch`` of them in one PushBatch) in a loop."""
    clients = [RemoteQueue(address, bytes) for _ in range(connections)]
    payload = b"x" * 100
    done = 0
    stop = False

    async def caller(client: RemoteQueue[bytes]) -> None:
        nonlocal done
        items: Sequence[bytes] = [payload] * batch
        while not stop:
            if batch:
                await client.push_many(items)
            else:
                await client.push(payload)
            done += 1

    for client in clients:
        await client.open()
    try:
        async with anyio.create_task_group() as group:
            for index in range(concurrency):
                group.start_soon(caller, clients[index % connections])
            await anyio.sleep(0.2)  # connections made, callers running
            first, started = done, time.perf_counter()
            await anyio.sleep(seconds)
            count, elapsed = done - first, time.perf_counter() - started
            stop = True
            group.cancel_scope.cancel()
    finally:
        for client in clients:
            await client.aclose()
    return count / elapsed
