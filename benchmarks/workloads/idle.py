"""Idle cost: a queue holding 1,000 ready jobs and no clients, watched for a while;
storage calls per minute, counted by :class:`benchmarks.wrappers.CountingStore` (in
gRPC mode inside the broker: ``python -m benchmarks.serve --counts``).

Result: storage requests per minute (reads, heads, lists and writes). Limit: 60 per
minute, GCS's rate of about one write per second to one object: the budget an idle
broker must stay far below (ratio 0 is the goal: no writes, no whole-object reads).
Counting starts a second after the queue opened (the takeover's own calls excluded).
"""

from __future__ import annotations

import anyio

from benchmarks.context import Case, Context, every_store_and_mode
from benchmarks.deploy import deployment
from benchmarks.report import Measurement

BACKLOG = 1_000
#: GCS: about one write per second to one object name.
BUDGET_PER_MINUTE = 60.0


async def measure(context: Context, kind: str, mode: str) -> Measurement:
    window = context.pick(30, 1)
    location = context.stores.fresh(kind)
    async with deployment(
        mode,
        location,
        count=True,
        scratch=context.scratch,
        backlog=BACKLOG,
        connections=context.connections,
    ) as queue:
        await anyio.sleep(context.pick(10, 1) / 10)  # the takeover's own calls settle
        before = queue.storage_counts()
        await anyio.sleep(window)
        after = queue.storage_counts()
    per_minute = {
        key: (after.get(key, 0) - before.get(key, 0)) * 60 / window
        for key in ("read", "head", "list", "create", "update", "bytes_read")
    }
    requests = sum(v for k, v in per_minute.items() if k != "bytes_read")
    extras = {
        "writes/min": per_minute["create"] + per_minute["update"],
        "reads/min": per_minute["read"],
        "heads/min": per_minute["head"],
        "lists/min": per_minute["list"],
        "MB_read/min": per_minute["bytes_read"] / 1e6,
        "window_s": float(window),
    }
    return Measurement(requests, BUDGET_PER_MINUTE, extras)


def cases(context: Context) -> list[Case]:
    # runs=1: counts, not rates; one window says it.
    return every_store_and_mode(
        context, "idle", "requests/min", "GCS: 60 writes/min per object", measure, runs=1
    )
