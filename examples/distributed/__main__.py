"""Distributed mode: a broker, a publisher and consumers, each in its own process.

Run each in its own terminal, from the repository root::

    python -m examples.distributed broker       # gRPC on 127.0.0.1:9090, queue in ./queue-data
    python -m examples.distributed publisher    # pushes 10 tasks (publisher 50: fifty)
    python -m examples.distributed consumer     # processes tasks until Ctrl-C

Start several consumers to share the work. Stop the broker with Ctrl-C (it drains and
releases the queue) and start it again: the consumers carry on. ``OSQUEUE_ADDRESS`` and
``OSQUEUE_DATA`` override the address and the storage (any URL ``--data`` accepts).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import NoReturn

from osqueue_core import LeaseLost, OsqueueError
from osqueue_io.server.cli import exit_process
from osqueue_io.server.cli import main as run_broker
from osqueue_io.sync import Worker

ADDRESS = os.environ.get("OSQUEUE_ADDRESS", "127.0.0.1:9090")
DATA = os.environ.get("OSQUEUE_DATA", "./queue-data")


def broker() -> NoReturn:
    # The same as `python -m osqueue_io.server --listen ADDRESS --data DATA`.
    exit_process(run_broker(["--listen", ADDRESS, "--data", DATA]))


def publisher(count: int) -> int:
    with Worker(ADDRESS) as worker:
        for i in range(count):
            task = {"name": f"task-{i}", "size": i % 3 + 1}
            job_id = worker.push(json.dumps(task).encode())
            print(f"pushed {job_id}: {task['name']}", flush=True)
    return 0


def consumer() -> int:
    with Worker(ADDRESS) as worker:
        print(f"consumer {worker.worker_id} waiting for tasks (Ctrl-C to stop)", flush=True)
        while True:
            try:
                job = worker.claim(wait=5)
                if job is None:
                    continue
                task = json.loads(job.data)
                with worker.processing(job):  # heartbeats meanwhile, completes at the end
                    time.sleep(0.1 * task["size"])  # the "work"
                print(f"completed {job.id}: {task['name']} (attempt {job.attempts})", flush=True)
            except LeaseLost as error:
                print(f"gave up a job: {error}", flush=True)
            except OsqueueError as error:
                if not error.retryable:
                    raise
                print(f"broker unavailable, retrying in 1s: {error}", flush=True)
                time.sleep(1)


def main(argv: list[str]) -> int:
    match argv:
        case ["broker"]:
            return broker()
        case ["publisher"]:
            return publisher(10)
        case ["publisher", count] if count.isdigit():
            return publisher(int(count))
        case ["consumer"]:
            try:
                return consumer()
            except KeyboardInterrupt:
                return 0
    print("usage: python -m examples.distributed broker | publisher [N] | consumer")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
