"""Scale-out: a group of brokers splits four queues, and a client that routes by queue.

Run each in its own terminal, from the repository root::

    python -m examples.group member 9091   # alone: it creates and serves all 4 queues
    python -m examples.group member 9092   # joins: the first hands it 2 of them
    python -m examples.group client 20     # pushes 20 tasks over the 4 queues and
                                           # processes them, each call going to the
                                           # owner of its queue

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

from osqueue_core import OsqueueError
from osqueue_io.server.cli import exit_process
from osqueue_io.server.cli import main as run_broker
from osqueue_io.sync import RemoteQueue

DATA = os.environ.get("OSQUEUE_DATA", "./group-data")
QUEUES = ["emails", "video", "reports", "search"]


def member(port: int) -> NoReturn:
    flags = ["--listen", f"127.0.0.1:{port}", "--data", DATA, "--owner-lease", "5s"]
    exit_process(run_broker([*flags, "--group", ",".join(QUEUES)]))


def client(count: int) -> int:
    # No address: each queue's owner is looked up in the bucket, and again after a
    # failover or a rebalance.
    with RemoteQueue(None, str, storage=DATA, group=QUEUES, failover_timeout=30) as queue:
        for i in range(count):
            job_id = queue.push(f"task-{i}", queue=QUEUES[i % len(QUEUES)])
            print(f"pushed {job_id}: task-{i}", flush=True)
        done = 0
        while done < count:
            try:
                job = queue.claim(queues=QUEUES, wait=5)  # from whichever owner has one
                if job is None:
                    continue
                queue.complete(job)
            except OsqueueError as error:
                print(f"retrying: {error}", flush=True)
                continue
            done += 1
            print(f"completed {job.id}: {job.item}", flush=True)
        owners = queue.stats().identity
        print(f"served by {owners}", flush=True)
    return 0


def main(argv: list[str]) -> int:
    match argv:
        case ["member", port] if port.isdigit():
            return member(int(port))
        case ["client"]:
            return client(8)
        case ["client", count] if count.isdigit():
            return client(int(count))
    print("usage: python -m examples.group member PORT | client [N]")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
