"""Scale-out: a group of brokers splits four queues, and a client that routes by queue.

Run each in its own terminal, from the repository root::

    python -m examples.group member 9091   # alone: it creates and serves all 4 queues
    python -m examples.group member 9092   # joins: the first hands it 2 of them
    python -m examples.group client 20     # pushes 20 tasks over the 4 queues, then
                                           # one worker processes them: each call goes
                                           # to the owner of its queue

Every member runs ``python -m osqueue_io.server --group emails,video,reports,search``
on the same bucket (``./group-data``, or ``OSQUEUE_DATA``): each queue is its own
state object, owned by one member, and the members balance them by count. Stop a
member (Ctrl-C: its queues go to the others at once) or kill it (``kill -9``: the
others take its queues once its 5 s lease has lapsed); the client follows by itself,
and no task is lost or pushed twice.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import anyio

from osqueue_io import ClaimedJob, RemoteQueue, run_worker
from osqueue_io.server.cli import exit_process
from osqueue_io.server.cli import main as run_broker

DATA = os.environ.get("OSQUEUE_DATA", "./group-data")
QUEUES = ["emails", "video", "reports", "search"]


def member(port: int) -> NoReturn:
    flags = ["--listen", f"127.0.0.1:{port}", "--data", DATA, "--owner-lease", "5s"]
    exit_process(run_broker([*flags, "--group", ",".join(QUEUES)]))


async def client(count: int) -> int:
    # No address: each queue's owner is looked up in the bucket, and again after a
    # failover or a rebalance.
    async with RemoteQueue(None, str, storage=DATA, group=QUEUES, failover_timeout=30) as queue:
        for i in range(count):
            job_id = await queue.push(f"task-{i}", queue=QUEUES[i % len(QUEUES)])
            print(f"pushed {job_id}: task-{i}", flush=True)
        processed = 0
        enough = anyio.Event()

        async def handle(job: ClaimedJob[str]) -> None:
            nonlocal processed
            print(f"processed {job.id}: {job.item}", flush=True)
            processed += 1
            if processed == count:
                enough.set()

        # One worker over all four queues: its claims go to whichever owners have jobs.
        summary = await run_worker(queue, handle, queues=QUEUES, concurrency=4, stop=enough)
        owners = (await queue.stats()).identity
        print(f"completed {summary.completed}, served by {owners}", flush=True)
    return 0


def main(argv: list[str]) -> int:
    match argv:
        case ["member", port] if port.isdigit():
            return member(int(port))
        case ["client"]:
            return anyio.run(client, 8)
        case ["client", count] if count.isdigit():
            return anyio.run(client, int(count))
    print("usage: python -m examples.group member PORT | client [N]")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
