"""Latency-bound closed loop: 256 producers push single jobs to a store whose every write
takes +50 ms (:class:`benchmarks.wrappers.WriteLatencyStore`).

Each producer waits for its push before the next, so no queue can do better than every
producer's push in every write: 256 per write. The limit is that closed-loop bound,
256 / (the wrapper's raw conditional write, timed in the same run at the run's mean state
size) ~ 256 / 0.05 s = 5,120 pushes/s; the cpu ceiling (asyncio floor or no-op gRPC for
256 callers) is in the extras and becomes the limit if it is lower. In gRPC mode the
broker runs as ``python -m benchmarks.serve`` (the same server with the wrapper).
"""

from __future__ import annotations

from benchmarks.context import Case, Context, every_store_and_mode
from benchmarks.report import Measurement
from benchmarks.workloads.producers import push_closed_loop

PRODUCERS = 256
WRITE_LATENCY = 0.05


async def measure(context: Context, kind: str, mode: str) -> Measurement:
    per_producer = context.pick(20, 2)
    return await push_closed_loop(
        context,
        kind,
        mode,
        producers=PRODUCERS,
        per_producer=per_producer,
        write_latency=WRITE_LATENCY,
    )


def cases(context: Context) -> list[Case]:
    return every_store_and_mode(
        context, "closed_loop", "pushes/s", "min(256 / raw write +50 ms, cpu)", measure
    )
