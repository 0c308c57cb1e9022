"""Single-push latency against the backlog: one producer pushes one job at a time onto a
queue already holding 1k or 100k ready jobs (1M with ``--big``); p50 and p99.

The backlog is written straight into the state object (:mod:`benchmarks.backlog`), not
pushed. Today every commit rewrites the whole state, ~220 bytes per job (22 MB at 100k,
220 MB at 1M), so the larger sizes take only a few pushes: the p99 of five samples is
their maximum. The limit is the floor of one commit: a raw conditional write of the
state object's size on the same store, in the same run (ratio: how many floors a push
costs; the floor shrinks by itself once the state stops growing with the backlog).
"""

from __future__ import annotations

import functools
import statistics
import time

from benchmarks.context import Case, Context, estimated_state_bytes
from benchmarks.deploy import deployment
from benchmarks.report import Measurement

PAYLOAD = b"x" * 100


def sizes(context: Context) -> list[int]:
    if context.quick:
        return [1_000, 10_000]
    return [1_000, 100_000, *([1_000_000] if context.big else [])]


def pushes_for(backlog: int, quick: bool) -> int:
    if backlog >= 1_000_000:
        return 5
    if backlog >= 100_000:
        return 20
    if backlog >= 10_000:
        return 10
    return 10 if quick else 100


def label(backlog: int) -> str:
    return f"{backlog // 1_000_000}M" if backlog >= 1_000_000 else f"{backlog // 1_000}k"


def percentile(samples: list[float], fraction: float) -> float:
    """The nearest-rank percentile (the maximum for small samples)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def measure(context: Context, kind: str, mode: str, backlog: int) -> Measurement:
    location = context.stores.fresh(kind)
    count = pushes_for(backlog, context.quick)
    times = []
    async with deployment(
        mode, location, backlog=backlog, connections=context.connections
    ) as queue:
        client = queue.client(0)
        await client.push(PAYLOAD)  # warm-up: connection, first write after the takeover
        for _ in range(count):
            started = time.perf_counter()
            await client.push(PAYLOAD)
            times.append(time.perf_counter() - started)
        size = await queue.state_size()
    if size is None:
        size = estimated_state_bytes(backlog + count + 1)
    raw = await context.raw_write(kind, size)
    p50 = statistics.median(times)
    return Measurement(
        p50 * 1e3,
        raw * 1e3,
        {
            "p99_ms": percentile(times, 0.99) * 1e3,
            "pushes": count,
            "state_MB": size / 1e6,
        },
    )


def cases(context: Context) -> list[Case]:
    return [
        Case(
            f"push_latency_{label(backlog)}",
            kind,
            mode,
            "p50 ms",
            "raw write of the state's size",
            functools.partial(measure, context, kind, mode, backlog),
            runs=1,  # p50 over many pushes already; rebuilding a large backlog is slow
        )
        for backlog in sizes(context)
        for kind in context.store_kinds
        for mode in context.modes
    ]
