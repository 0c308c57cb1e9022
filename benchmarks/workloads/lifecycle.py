"""Full lifecycle: 16 producers and 8 consumers move jobs through push, claim, complete.

``lifecycle``: single-job calls (``push``; ``claim``; ``complete``). ``lifecycle_batch``:
``push_many`` of 100, ``claim_many(100)`` (20 under ``--quick``), then ``complete_many``
when the queue has one (looked up at run time), else the batch's ``complete`` calls all
at once. Result: jobs/s from the first push to the last completion.

Limit: the lower of the store ceiling (jobs per raw conditional write of the state's
mean size: single calls carry at most min(16, 8/2) = 4 jobs per write, a consumer
needing two writes per job; batches at most min(16 x 100, 8 x 100 / 2) = 400) and the
cpu ceiling (asyncio floor or no-op gRPC rate for 24 callers, divided by the requests
each job takes: 3 single, 1/100 + 1/100 + 1 or 1/100 batched; embedded, plus three
encodings of the job's JSON, one per change, which no batching amortises).
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Sequence
from typing import Any

import anyio

from benchmarks.context import Case, Context, estimated_state_bytes, every_store_and_mode
from benchmarks.deploy import Deployment, deployment, jobs_in_state, revision
from benchmarks.report import Measurement
from osqueue_io import ClaimedJob, JobQueue

PRODUCERS = 16
CONSUMERS = 8
#: Jobs per push_many and claim_many (20 under --quick).
BATCH = 100
QUICK_BATCH = 20
PAYLOAD = b"x" * 100
#: How long an idle consumer's claim waits before it looks again.
CLAIM_WAIT = 0.5
#: Seconds after which a run that has not completed every job fails.
TIME_LIMIT = 600


async def _complete_all(client: JobQueue[bytes], jobs: Sequence[ClaimedJob[bytes]]) -> bool:
    """Complete ``jobs``: with ``complete_many`` if the queue has it (True), else at once.

    ``complete_many(jobs)`` returns one outcome per job, None when completed; a job that
    was not completed would make the run wait forever, so it is raised here.
    """
    complete_many: Any = getattr(client, "complete_many", None)
    if complete_many is not None:
        if jobs:
            outcomes = await complete_many(jobs)
            errors = [outcome for outcome in outcomes or () if outcome is not None]
            if errors:
                raise errors[0]
        return True
    async with anyio.create_task_group() as group:
        for job in jobs:
            group.start_soon(client.complete, job)
    return False


async def _sample(queue: Deployment, samples: list[int]) -> None:
    while True:
        samples.append(await jobs_in_state(queue))
        await anyio.sleep(0.25)


async def measure(context: Context, kind: str, mode: str, batched: bool) -> Measurement:
    # Every producer pushes the same number of jobs (batches of 100 when batched).
    rounds = context.pick(10, 1) if batched else context.pick(100, 10)
    batch = context.pick(BATCH, QUICK_BATCH) if batched else 1
    total = rounds * PRODUCERS * batch
    location = context.stores.fresh(kind)
    used_complete_many = False
    async with deployment(mode, location, connections=context.connections) as queue:
        first_revision = await revision(queue)
        completed = 0
        all_done = anyio.Event()
        samples: list[int] = []

        async def producer(index: int) -> None:
            client = queue.client(index)
            for _ in range(rounds):
                if batched:
                    await client.push_many([PAYLOAD] * batch)
                else:
                    await client.push(PAYLOAD)

        async def consumer(index: int) -> None:
            nonlocal completed, used_complete_many
            client = queue.client(PRODUCERS + index)
            while True:
                if batched:
                    jobs = await client.claim_many(batch, wait=CLAIM_WAIT)
                    used_complete_many = await _complete_all(client, jobs) or used_complete_many
                    completed += len(jobs)
                else:
                    job = await client.claim(wait=CLAIM_WAIT)
                    if job is not None:
                        await client.complete(job)
                        completed += 1
                if completed >= total:
                    all_done.set()

        started = time.perf_counter()
        with anyio.fail_after(TIME_LIMIT):  # a lost job fails the run instead of hanging
            async with anyio.create_task_group() as group:
                group.start_soon(_sample, queue, samples)
                for index in range(PRODUCERS):
                    group.start_soon(producer, index)
                for index in range(CONSUMERS):
                    group.start_soon(consumer, index)
                await all_done.wait()
                elapsed = time.perf_counter() - started
                group.cancel_scope.cancel()
        writes = await revision(queue) - first_revision
    mean_jobs = int(statistics.mean(samples)) if samples else 0
    if batched:
        per_job = 2 / batch + (1 / batch if used_complete_many else 1)
        jobs_per_write = min(PRODUCERS * batch, CONSUMERS * batch / 2)
    else:
        per_job, jobs_per_write = 3, min(PRODUCERS, CONSUMERS / 2)
    limit, extras = await context.throughput_limit(
        kind,
        mode,
        state_bytes=estimated_state_bytes(mean_jobs),
        jobs_per_write=jobs_per_write,
        concurrency=PRODUCERS + CONSUMERS,
        requests_per_job=per_job,
        encodes_per_job=3,  # pushed, claimed, completed: three versions of the job
    )
    extras |= {"jobs/write": total / max(writes, 1), "mean_jobs_in_state": mean_jobs}
    if batched:
        extras["complete_many"] = float(used_complete_many)
    return Measurement(total / elapsed, limit, extras)


def cases(context: Context) -> list[Case]:
    kind_of_limit = "min(store: jobs/raw write, cpu/requests per job)"
    return [
        *every_store_and_mode(
            context, "lifecycle", "jobs/s", kind_of_limit, functools.partial(measure, batched=False)
        ),
        *every_store_and_mode(
            context,
            "lifecycle_batch",
            "jobs/s",
            kind_of_limit,
            functools.partial(measure, batched=True),
        ),
    ]
