"""Broker memory and start-up at a large backlog: the gRPC broker subprocess opens a state
of 1M ready jobs with 100-byte payloads (10k under ``--quick``).

Two rows per store:

* ``memory_<size>``: the broker's RSS (VmRSS from /proc) after it opened the state and
  committed one push. Reference limit: an empty broker's RSS, measured in the same run,
  plus one copy of the state object's bytes (ratio > 1: it holds more than one copy's
  worth). On ``memory://`` the stored object itself lives in the broker process too.
* ``open_<size>``: seconds from spawning the broker to its "listening" line, minus the
  same for an empty queue (interpreter start and imports cancel out). Limit: a raw read
  of the state object from the same store in this process (the least opening can cost).

On ``s3`` only with ``--big``: 220 MB through moto takes minutes.
"""

from __future__ import annotations

import statistics
import time

import attrs

from benchmarks.backlog import write_backlog
from benchmarks.context import Case, Context
from benchmarks.deploy import deployment
from benchmarks.report import Measurement
from benchmarks.stores import Location
from benchmarks.workloads.push_latency import label

STATE_KEY = "state.json"


def backlog_size(context: Context) -> int:
    return context.pick(1_000_000, 10_000)


@attrs.frozen
class _Started:
    """What one broker start showed: seconds to serve, RSS after one push."""

    ready_seconds: float
    rss: int
    location: Location


async def _start(context: Context, kind: str, backlog: int) -> _Started:
    """Start a broker on a fresh location holding ``backlog`` jobs, push once, stop it."""
    location = context.stores.fresh(kind)
    async with deployment("grpc", location, backlog=backlog, connections=1) as queue:
        await queue.client(0).push(b"x" * 100)
        assert queue.broker is not None
        return _Started(queue.broker.ready_seconds, queue.broker.rss_bytes(), location)


async def _raw_read_seconds(location: Location, backlog: int) -> tuple[float, int]:
    """Median seconds to read the state object from ``location`` in this process, and
    its size (``memory://``: a state of ``backlog`` jobs written here first)."""
    store = location.open()
    try:
        if location.kind == "memory":
            await write_backlog(store, backlog)
        times, size = [], 0
        for _ in range(3):
            started = time.perf_counter()
            found = await store.read(STATE_KEY)
            times.append(time.perf_counter() - started)
            size = len(found.data) if found is not None else 0
            del found
    finally:
        await store.aclose()
    return statistics.median(times), size


class _Memory:
    """Both rows of a store come from one pair of broker starts: measured once, shared."""

    def __init__(self, context: Context, kind: str) -> None:
        self.context = context
        self.kind = kind
        self._result: tuple[Measurement, Measurement] | None = None

    async def measure(self) -> tuple[Measurement, Measurement]:
        if self._result is None:
            self._result = await self._measure()
        return self._result

    async def _measure(self) -> tuple[Measurement, Measurement]:
        backlog = backlog_size(self.context)
        empty = await _start(self.context, self.kind, 0)
        loaded = await _start(self.context, self.kind, backlog)
        raw_read, size = await _raw_read_seconds(loaded.location, backlog)
        memory = Measurement(
            loaded.rss / 1e6,
            (empty.rss + size) / 1e6,
            {"empty_broker_MB": empty.rss / 1e6, "state_MB": size / 1e6, "jobs": backlog},
        )
        opening = Measurement(
            loaded.ready_seconds - empty.ready_seconds,
            raw_read,
            {
                "ready_s": loaded.ready_seconds,
                "empty_ready_s": empty.ready_seconds,
                "state_MB": size / 1e6,
            },
        )
        return memory, opening


def cases(context: Context) -> list[Case]:
    size = label(backlog_size(context))
    result = []
    # 220 MB through moto's in-process S3 server takes minutes: s3 only with --big.
    kinds = [kind for kind in context.store_kinds if kind != "s3" or context.big]
    for kind in kinds:
        shared = _Memory(context, kind)

        async def rss(shared: _Memory = shared) -> Measurement:
            return (await shared.measure())[0]

        async def opening(shared: _Memory = shared) -> Measurement:
            return (await shared.measure())[1]

        result += [
            Case(f"memory_{size}", kind, "grpc", "RSS MB", "empty broker + 1 state copy", rss, 1),
            Case(f"open_{size}", kind, "grpc", "s", "raw read of the state", opening, 1),
        ]
    return result
