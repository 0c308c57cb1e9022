"""Worker processes for the distributed tests: ``python -m tests.io.distributed.workers``.

=========================================  ===============================================
``publish ADDRESS COUNT NAME``             push COUNT jobs ``NAME-i`` (async Worker), one
                                           ``pushed ID DATA`` line each
``consume ADDRESS``                        claim, heartbeat, complete (sync Worker) until
                                           a claim waits 1 s for nothing; one
                                           ``completed ID DATA ATTEMPTS`` line per job
``hold ADDRESS``                           claim one job, print ``holding ID ATTEMPTS``,
                                           heartbeat it in the background until killed
=========================================  ===============================================
"""

from __future__ import annotations

import sys
import time

import anyio

from osqueue_io.sync import Worker as SyncWorker
from osqueue_io.worker import Worker


async def publish(address: str, count: int, name: str) -> None:
    async with Worker(address) as worker:
        for i in range(count):
            data = f"{name}-{i}"
            print("pushed", await worker.push(data.encode()), data, flush=True)


def consume(address: str) -> None:
    with SyncWorker(address) as worker:
        while (job := worker.claim(wait=1.0)) is not None:
            assert worker.heartbeat(job.id) == job.lease_timeout
            worker.complete(job.id)
            print("completed", job.id, job.data.decode(), job.attempts, flush=True)


def hold(address: str) -> None:
    with SyncWorker(address, heartbeat_interval=0.1) as worker:
        job = worker.claim(wait=10)
        assert job is not None, "no job to hold"
        with worker.keep_alive(job) as lease:
            print("holding", job.id, job.attempts, flush=True)
            while True:  # "working" until the test kills this process
                lease.check()
                time.sleep(0.05)


def main(mode: str, address: str, *args: str) -> None:
    if mode == "publish":
        anyio.run(publish, address, int(args[0]), args[1])
    elif mode == "consume":
        consume(address)
    elif mode == "hold":
        hold(address)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
