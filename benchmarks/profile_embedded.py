"""CPU per operation of the embedded queue on ``memory://`` (no I/O to wait for).

``python -m benchmarks.profile_embedded [push|cycle|burst|batch|rss] [--count N]
[--profile out.html]``

* ``push``: sequential single pushes, µs each (wall and process CPU);
* ``cycle``: sequential push + claim + complete, µs per cycle;
* ``burst``: 64 tasks pushing single jobs at once, pushes/s;
* ``batch``: push_many / claim_many / complete_many of 100, jobs/s through the
  whole lifecycle;
* ``rss``: RSS and traced Python memory per queued 100-byte job at ``--count`` jobs.

``--profile FILE`` runs the workload under pyinstrument (``pip install pyinstrument``)
and writes its HTML (or text, for a ``.txt`` name) report there.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from osqueue_core import BrokerConfig
from osqueue_io import EmbeddedQueue

PAYLOAD = b"x" * 100
CONFIG = BrokerConfig(max_batch_ops=10_000, max_queued_commands=100_000)


def rss_bytes() -> int:
    """This process's resident set size, from /proc."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def push(queue: EmbeddedQueue[bytes], count: int) -> None:
    for _ in range(count):
        await queue.push(PAYLOAD)


async def cycle(queue: EmbeddedQueue[bytes], count: int) -> None:
    for _ in range(count):
        await queue.push(PAYLOAD)
        job = await queue.claim()
        assert job is not None
        await queue.complete(job)


async def burst(queue: EmbeddedQueue[bytes], count: int, tasks: int = 64) -> None:
    async def pusher(share: int) -> None:
        for _ in range(share):
            await queue.push(PAYLOAD)

    async with anyio.create_task_group() as group:
        for _ in range(tasks):
            group.start_soon(pusher, count // tasks)


async def batch(queue: EmbeddedQueue[bytes], count: int, size: int = 100) -> None:
    for _ in range(count // size):
        await queue.push_many([PAYLOAD] * size)
        jobs = await queue.claim_many(size)
        complete_many = getattr(queue, "complete_many", None)
        if complete_many is not None:
            await complete_many(jobs)
        else:
            for job in jobs:
                await queue.complete(job)


WORKLOADS: dict[str, tuple[Callable[[EmbeddedQueue[bytes], int], Awaitable[None]], str]] = {
    "push": (push, "push"),
    "cycle": (cycle, "push+claim+complete"),
    "burst": (burst, "push (64 concurrent)"),
    "batch": (batch, "job through push_many/claim_many/complete_many of 100"),
}


async def timed(name: str, count: int, profile: str | None) -> str | None:
    """Run workload ``name``; print its cost; return the profiler's report, if asked."""
    work, what = WORKLOADS[name]
    async with EmbeddedQueue("memory://", bytes, config=CONFIG) as queue:
        await work(queue, min(count, 500))  # warm up
        profiler: Any = None
        if profile:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0005, async_mode="disabled")
            profiler.start()
        wall, cpu = time.perf_counter(), time.process_time()
        await work(queue, count)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if profiler is not None:
            profiler.stop()
    report: str | None = None
    if profiler is not None:
        text = profile is not None and profile.endswith(".txt")
        report = profiler.output_text(unicode=True) if text else profiler.output_html()
    print(
        f"{name}: {count} x {what}: {wall / count * 1e6:,.1f} µs wall, "
        f"{cpu / count * 1e6:,.1f} µs CPU each; {count / wall:,.0f}/s"
    )
    return report


async def rss(count: int) -> None:
    """Memory per queued job: pushed in batches of 1,000, nothing claimed."""
    async with EmbeddedQueue("memory://", bytes, config=CONFIG) as queue:
        await queue.push_many([PAYLOAD] * 1000)  # warm up: imports, first write
        gc.collect()
        before_rss = rss_bytes()
        tracemalloc.start()
        before_traced = tracemalloc.get_traced_memory()[0]
        for _ in range(count // 1000):
            await queue.push_many([PAYLOAD] * 1000)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - before_traced
        tracemalloc.stop()
        # RSS is measured without tracemalloc's own bookkeeping: push as many again.
        mid_rss = rss_bytes()
        for _ in range(count // 1000):
            await queue.push_many([PAYLOAD] * 1000)
        gc.collect()
        grown = rss_bytes() - mid_rss
    print(
        f"rss: {count:,} jobs of {len(PAYLOAD)} bytes: {grown / count:,.0f} B RSS per job "
        f"(the second {count:,}; {(mid_rss - before_rss) / count:,.0f} with tracemalloc on), "
        f"{traced / count:,.0f} B traced Python memory per job"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=[*WORKLOADS, "rss"], nargs="?", default="push")
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--profile", default=None, help="write a pyinstrument report here")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    backend_options = {"use_uvloop": True} if args.uvloop else {}
    if args.workload == "rss":
        anyio.run(rss, args.count or 50_000, backend_options=backend_options)
    else:
        count = args.count or (20_000 if args.workload in ("burst", "batch") else 5_000)
        report = anyio.run(
            timed, args.workload, count, args.profile, backend_options=backend_options
        )
        if report is not None:
            Path(args.profile).write_text(report)


if __name__ == "__main__":
    main()
