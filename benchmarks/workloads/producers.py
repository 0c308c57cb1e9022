"""Closed-loop producers: N callers each pushing single 100-byte jobs, one at a time.

Shared by ``push_burst`` (64 producers) and ``closed_loop`` (256 over a slow store):
the result is pushes/s, the limit ``N / raw write`` (each producer has at most one push
waiting for a write) or the cpu ceiling if lower, and ``ops/write`` says how many pushes
group commit put in each state write.
"""

from __future__ import annotations

import time

import anyio

from benchmarks.context import Context, estimated_state_bytes
from benchmarks.deploy import deployment, revision
from benchmarks.report import Measurement

PAYLOAD = b"x" * 100


async def push_closed_loop(
    context: Context,
    kind: str,
    mode: str,
    *,
    producers: int,
    per_producer: int,
    write_latency: float | None = None,
) -> Measurement:
    total = producers * per_producer
    location = context.stores.fresh(kind)
    async with deployment(
        mode, location, write_latency=write_latency, connections=context.connections
    ) as queue:
        first_size = await queue.state_size()
        first_revision = await revision(queue)

        async def producer(index: int) -> None:
            client = queue.client(index)
            for _ in range(per_producer):
                await client.push(PAYLOAD)

        started = time.perf_counter()
        async with anyio.create_task_group() as group:
            for index in range(producers):
                group.start_soon(producer, index)
        elapsed = time.perf_counter() - started
        writes = await revision(queue) - first_revision
        last_size = await queue.state_size()
    if first_size is None or last_size is None:
        mean_size = estimated_state_bytes(total // 2)
    else:
        mean_size = (first_size + last_size) // 2
    limit, extras = await context.throughput_limit(
        kind,
        mode,
        state_bytes=mean_size,
        jobs_per_write=producers,
        concurrency=producers,
        requests_per_job=1,
        write_latency=write_latency,
    )
    return Measurement(total / elapsed, limit, {**extras, "ops/write": total / max(writes, 1)})
