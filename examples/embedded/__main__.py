"""Embedded mode in one process: push, claim, heartbeat, complete, shut down.

Run ``python -m examples.embedded`` (state in a fresh temporary directory) or pass any
storage URL: ``python -m examples.embedded ./queue-data`` / ``memory://`` / ``s3://b/p``.
"""

from __future__ import annotations

import sys
import tempfile

import anyio
import attrs

from osqueue_io import EmbeddedQueue


@attrs.frozen
class Task:
    name: str
    size: int = 1


async def main(storage: str) -> None:
    async with EmbeddedQueue(storage, Task) as queue:
        print(f"broker running on {storage}")
        ids = [await queue.push(Task(f"build-index-{i}", size=i)) for i in range(3)]
        print(f"pushed {len(ids)} jobs: {', '.join(ids)}")

        # One job by hand: claim, heartbeat, complete.
        job = await queue.claim("worker-1")
        assert job is not None
        lasts = await queue.heartbeat(job)
        print(f"worker-1 claimed {job.id} ({job.item.name}); lease renewed for {lasts:.0f} s")
        await queue.complete(job)
        print(f"worker-1 completed {job.id}")

        # The rest the comfortable way: heartbeats run in the background, and the job
        # is completed when the block ends (or failed and requeued if it raises).
        while (job := await queue.claim("worker-2", wait=0.5)) is not None:
            async with queue.processing(job):
                await anyio.sleep(0.01 * job.item.size)  # the "work"
            print(f"worker-2 processed {job.id} ({job.item.name})")

        stats = queue.stats()
        print(f"queue empty: ready={stats.ready} claimed={stats.claimed}")
    print("broker stopped cleanly: ownership released, state durable")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        anyio.run(main, sys.argv[1])
    else:
        with tempfile.TemporaryDirectory(prefix="osqueue-demo-") as directory:
            anyio.run(main, directory)
