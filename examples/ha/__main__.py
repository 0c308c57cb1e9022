"""High availability: a broker pair, and a client that finds the owner in the bucket.

Run each in its own terminal, from the repository root::

    python -m examples.ha broker 9091   # the first one owns the queue in ./ha-data
    python -m examples.ha broker 9092   # stands by: watches the owner's lease
    python -m examples.ha client 20     # pushes and processes 20 tasks, finding the
                                        # owner through the bucket

Stop the owner (Ctrl-C: it releases the queue, the standby takes over at once) or kill
it (``kill -9``: the standby takes over once the 5 s lease has lapsed); the client
follows the new owner by itself, and no task is lost or pushed twice. Start the stopped
broker again: it stands by. ``OSQUEUE_DATA`` overrides the storage (any URL ``--data``
accepts); both brokers and the client must name the same one.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from osqueue_core import OsqueueError
from osqueue_io.server.cli import exit_process
from osqueue_io.server.cli import main as run_broker
from osqueue_io.sync import RemoteQueue

DATA = os.environ.get("OSQUEUE_DATA", "./ha-data")


def broker(port: int) -> NoReturn:
    # The same as `python -m osqueue_io.server --standby ...`: without a state, or with a
    # released one, it takes over at once; otherwise it waits for the owner's lease.
    flags = ["--listen", f"127.0.0.1:{port}", "--data", DATA, "--standby", "--owner-lease", "5s"]
    exit_process(run_broker(flags))


def client(count: int) -> int:
    # No address: the owner is looked up in the bucket, and again after a failover.
    with RemoteQueue(None, str, storage=DATA, failover_timeout=30) as queue:
        for i in range(count):
            job_id = queue.push(f"task-{i}")  # keyed for you: a retry stores it once
            print(f"pushed {job_id}: task-{i}", flush=True)
        done = 0
        while done < count:
            try:
                job = queue.claim(wait=5)
                if job is None:
                    continue
                queue.complete(job)
            except OsqueueError as error:
                print(f"retrying: {error}", flush=True)
                continue
            done += 1
            print(f"completed {job.id}: {job.item} at {queue.stats().identity}", flush=True)
    return 0


def main(argv: list[str]) -> int:
    match argv:
        case ["broker", port] if port.isdigit():
            return broker(int(port))
        case ["client"]:
            return client(10)
        case ["client", count] if count.isdigit():
            return client(int(count))
    print("usage: python -m examples.ha broker PORT | client [N]")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
