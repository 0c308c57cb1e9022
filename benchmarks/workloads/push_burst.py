"""Push burst: 64 producers, each pushing single 100-byte jobs as fast as answers come.

Result: pushes/s over the whole burst (the pushes stay in the queue, so the state grows
from empty to 6,400 jobs). Limit: the lower of the store ceiling (64 pushes per raw
conditional write of the run's mean state size: every producer waits on at most one
push) and the cpu ceiling (asyncio floor, or the no-op gRPC server, for 64 callers).
"""

from __future__ import annotations

from benchmarks.context import Case, Context, every_store_and_mode
from benchmarks.report import Measurement
from benchmarks.workloads.producers import push_closed_loop

PRODUCERS = 64


async def measure(context: Context, kind: str, mode: str) -> Measurement:
    per_producer = context.pick(100, 5)
    return await push_closed_loop(
        context, kind, mode, producers=PRODUCERS, per_producer=per_producer
    )


def cases(context: Context) -> list[Case]:
    return every_store_and_mode(
        context, "push_burst", "pushes/s", "min(store: 64/raw write, cpu)", measure
    )
