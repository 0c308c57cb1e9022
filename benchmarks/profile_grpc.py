"""CPU per operation over gRPC: a broker subprocess on ``memory://`` and one client process.

``python -m benchmarks.profile_grpc [single|batch] [--seconds S] [--callers N]
[--connections C] [--uvloop] [--broker-loop asyncio|uvloop]``

* ``single``: ``--callers`` tasks (64) each pushing single jobs (``--seconds`` times 2,000
  in all, so every run writes the same backlog), spread over ``--connections``
  connections (4): pushes/s, and the broker's and the client's CPU per push;
* ``batch``: producers ``push_many`` 100 jobs at a time, consumers ``claim_many`` 100
  and complete them (``complete_many`` when the client has it, else one call per job,
  concurrently): jobs/s through the whole lifecycle, and CPU per job.

The broker's CPU comes from ``/proc/<pid>/stat`` (user + system), the client's from
``time.process_time()``. Set ``OSQUEUE_PROFILE=out.txt`` to run the broker under
pyinstrument (its report is written when it stops), or attach
``py-spy record --pid <pid>`` (the pid is printed).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from osqueue_io import RemoteQueue

PAYLOAD = b"x" * 100
REPO_ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Broker:
    """``python -m osqueue_io.server`` on 127.0.0.1, memory storage."""

    def __init__(self, *flags: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "osqueue_io.server",
                "--listen",
                "127.0.0.1:0",
                "--data",
                "memory://",
                "--log-level",
                "INFO",
                *flags,
            ],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if match := re.search(r"listening on 127\.0\.0\.1:(\d+)", line):
                self.address = f"127.0.0.1:{match.group(1)}"
                break
        else:
            raise SystemExit(f"the broker exited ({self.process.wait()}) before listening")

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        self.process.send_signal(2)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def single(queues: list[RemoteQueue[bytes]], callers: int, until: float) -> int:
    done = 0

    async def pusher(queue: RemoteQueue[bytes]) -> None:
        # A fixed number per caller (as many as the time allows at about 2,000/s), so
        # the backlog, and with it the cost of each whole-state write, grows the same
        # way in every run: the figure compares per-request cost, not backlogs.
        nonlocal done
        for _ in range(max(1, round((until - time.monotonic()) * 2000 / callers))):
            await queue.push(PAYLOAD)
            done += 1

    async with anyio.create_task_group() as group:
        for index in range(callers):
            group.start_soon(pusher, queues[index % len(queues)])
    return done


async def batch(queues: list[RemoteQueue[bytes]], callers: int, until: float) -> int:
    done = 0
    size = 100

    async def producer(queue: RemoteQueue[bytes]) -> None:
        while time.monotonic() < until:
            await queue.push_many([PAYLOAD] * size)

    async def consumer(queue: RemoteQueue[bytes]) -> None:
        nonlocal done
        complete_many = getattr(queue, "complete_many", None)
        while time.monotonic() < until:
            jobs = await queue.claim_many(size, wait=0.5)
            if complete_many is not None:
                await complete_many(jobs)
            else:
                async with anyio.create_task_group() as group:
                    for job in jobs:
                        group.start_soon(queue.complete, job)
            done += len(jobs)

    half = max(1, callers // 2)
    async with anyio.create_task_group() as group:
        for index in range(half):
            group.start_soon(producer, queues[index % len(queues)])
            group.start_soon(consumer, queues[(index + 1) % len(queues)])
    return done


async def run(args: Any, broker: Broker) -> None:
    work = {"single": single, "batch": batch}[args.workload]
    clients = [RemoteQueue(broker.address, bytes) for _ in range(args.connections)]
    for client in clients:
        await client.open()
    try:
        await work(clients, args.callers, time.monotonic() + 1.0)  # warm up
        server_cpu, client_cpu = broker.cpu(), time.process_time()
        wall = time.perf_counter()
        count = await work(clients, args.callers, time.monotonic() + args.seconds)
        wall = time.perf_counter() - wall
        server_cpu, client_cpu = broker.cpu() - server_cpu, time.process_time() - client_cpu
    finally:
        for client in clients:
            await client.aclose()
    what = "pushes" if args.workload == "single" else "jobs (push_many+claim_many+complete)"
    print(
        f"{args.workload}: {count / wall:,.0f} {what}/s with {args.callers} callers on "
        f"{args.connections} connections; CPU per job: broker {server_cpu / count * 1e6:,.0f} "
        f"µs, client {client_cpu / count * 1e6:,.0f} µs (broker busy "
        f"{server_cpu / wall:.0%} of one core)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=["single", "batch"], nargs="?", default="single")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--uvloop", action="store_true", help="the client on uvloop")
    parser.add_argument(
        "--broker-loop",
        choices=["auto", "asyncio", "uvloop"],
        default="asyncio",
        help="the broker's event loop (its OSQUEUE_EVENT_LOOP; default: asyncio)",
    )
    args = parser.parse_args()
    broker = Broker(env={"OSQUEUE_EVENT_LOOP": args.broker_loop})
    print(f"broker pid {broker.process.pid} at {broker.address}")
    try:
        options = {"use_uvloop": True} if args.uvloop else {}
        anyio.run(run, args, broker, backend_options=options)
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
