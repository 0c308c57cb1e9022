"""Broker RSS under balanced load: ``python -m benchmarks.rss_soak --minutes 10``.

Starts the gRPC broker (``python -m osqueue_io.server``, or ``--broker-module`` for a
wrapper such as ``benchmarks.rss_trace``) as a subprocess on 127.0.0.1 with a free
port and a fresh local-filesystem store, then runs publishers and consumers (one
``Worker`` = one connection each) in this process: publishers push small jobs while
fewer than ``--max-ready`` are unclaimed, consumers claim with a wait, heartbeat some
jobs, and complete them, so the queue stays nearly empty. Every ``--interval`` seconds
it prints the broker's VmRSS (``/proc/<pid>/status``) next to the operations done.

Environment variables given with ``--env NAME=VALUE`` (e.g. ``MALLOC_ARENA_MAX=2``)
go to the broker only. ``--csv`` writes the samples for plotting or diffing.

What it found (grpclib 0.4.9, h2 4.4.1): RSS grows ~160 B per call until each
connection has made 65,536 calls, then stays flat, ~12 MB per long-lived connection
above the start. That is h2's record of closed streams (``H2Connection._closed_streams``,
bounded at ``MAX_CLOSED_STREAMS = 2**16`` per connection), not the osqueue core: its
heaps, tables and the runtime's dicts stay at the size of the queue. Run the broker
as ``--broker-module benchmarks.rss_trace`` to see where the memory is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from osqueue_io.worker import Worker


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile, VmHWM (kB), Threads, and open fds of ``pid``."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "VmHWM", "Threads", "VmSize"):
                fields[name] = int(value.split()[0])
    fields["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return fields


class Counters:
    def __init__(self) -> None:
        self.pushed = 0
        self.claimed = 0
        self.empty_claims = 0
        self.heartbeats = 0
        self.completed = 0
        self.errors = 0

    def ops(self) -> int:
        return self.pushed + self.claimed + self.empty_claims + self.heartbeats + self.completed


async def publisher(address: str, counters: Counters, max_ready: int, stop: asyncio.Event) -> None:
    async with Worker(address) as worker:
        n = 0
        while not stop.is_set():
            if counters.pushed - counters.claimed >= max_ready:
                await asyncio.sleep(0.002)
                continue
            n += 1
            try:
                await worker.push(b'{"task":"soak","n":%d}' % n)
                counters.pushed += 1
            except Exception:
                counters.errors += 1
                await asyncio.sleep(0.1)


async def consumer(
    address: str, counters: Counters, wait: float, heartbeat_ratio: float, stop: asyncio.Event
) -> None:
    rng = random.Random()
    async with Worker(address) as worker:
        while not stop.is_set():
            try:
                job = await worker.claim(wait=wait)
                if job is None:
                    counters.empty_claims += 1
                    continue
                counters.claimed += 1
                if rng.random() < heartbeat_ratio:
                    await worker.heartbeat(job.id)
                    counters.heartbeats += 1
                await worker.complete(job.id)
                counters.completed += 1
            except Exception:
                counters.errors += 1
                await asyncio.sleep(0.1)


async def broker_stats(address: str) -> tuple[int, int, int, int]:
    async with Worker(address, timeout=5) as worker:
        stats = await worker.stats()
    return stats.ready, stats.claimed, stats.completed_pending_archive, stats.waiting_claims


async def wait_ready(address: str, process: subprocess.Popen[bytes], limit: float = 20) -> None:
    deadline = time.monotonic() + limit
    while True:
        if process.poll() is not None:
            raise SystemExit(f"the broker exited with {process.returncode}")
        try:
            await broker_stats(address)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def soak(
    args: argparse.Namespace, process: subprocess.Popen[bytes], address: str
) -> list[dict[str, float]]:
    """Run the load against the broker ``process`` at ``address``; return the samples."""
    rows: list[dict[str, float]] = []
    await wait_ready(address, process)
    counters = Counters()
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(publisher(address, counters, args.max_ready, stop))
        for _ in range(args.publishers)
    ] + [
        asyncio.create_task(consumer(address, counters, args.wait, args.heartbeat_ratio, stop))
        for _ in range(args.consumers)
    ]
    start = time.monotonic()
    last_ops, last_t = 0, start
    max_ready = 0
    print(
        f"{'t_s':>6} {'rss_MB':>7} {'anon_MB':>7} {'thr':>4} {'fds':>4} "
        f"{'ops/s':>7} {'pushed':>9} {'done':>9} {'ready':>5} {'clmd':>4} "
        f"{'arch':>4} {'wait':>4} {'err':>4}",
        flush=True,
    )
    end = start + args.minutes * 60
    next_sample = start
    while True:
        now = time.monotonic()
        if now >= next_sample:
            status = proc_status(process.pid)
            ready, claimed, pending, waiting = await broker_stats(address)
            max_ready = max(max_ready, ready)
            ops = counters.ops()
            t = time.monotonic()
            rate = (ops - last_ops) / (t - last_t) if t > last_t else 0.0
            last_ops, last_t = ops, t
            row = {
                "t_s": round(t - start, 1),
                "rss_kb": status["VmRSS"],
                "anon_kb": status["RssAnon"],
                "hwm_kb": status["VmHWM"],
                "vmsize_kb": status["VmSize"],
                "threads": status["Threads"],
                "fds": status["fds"],
                "ops_per_s": round(rate, 1),
                "rpcs": ops,
                "pushed": counters.pushed,
                "completed": counters.completed,
                "heartbeats": counters.heartbeats,
                "empty_claims": counters.empty_claims,
                "ready": ready,
                "claimed": claimed,
                "pending_archive": pending,
                "waiting": waiting,
                "errors": counters.errors,
            }
            rows.append(row)
            print(
                f"{row['t_s']:>6.0f} {status['VmRSS'] / 1024:>7.2f} "
                f"{status['RssAnon'] / 1024:>7.2f} {status['Threads']:>4} "
                f"{status['fds']:>4} {rate:>7.0f} {counters.pushed:>9} "
                f"{counters.completed:>9} {ready:>5} {claimed:>4} {pending:>4} "
                f"{waiting:>4} {counters.errors:>4}",
                flush=True,
            )
            if process.poll() is not None:
                print("the broker exited", process.returncode)
                break
            if now >= end:
                break
            next_sample += args.interval
        await asyncio.sleep(min(1.0, max(0.0, next_sample - time.monotonic())))
    stop.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    elapsed = time.monotonic() - start
    print(
        f"done: {elapsed:.0f}s, {counters.pushed} pushed, {counters.completed} completed, "
        f"{counters.heartbeats} heartbeats, {counters.empty_claims} empty claims, "
        f"{counters.errors} errors, {counters.ops() / elapsed:.0f} ops/s, "
        f"{counters.completed / elapsed:.0f} jobs/s, max ready seen {max_ready}",
        flush=True,
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--publishers", type=int, default=3)
    parser.add_argument("--consumers", type=int, default=3)
    parser.add_argument("--max-ready", type=int, default=6, help="unclaimed jobs allowed")
    parser.add_argument("--wait", type=float, default=2.0, help="claim wait, seconds")
    parser.add_argument("--heartbeat-ratio", type=float, default=0.3)
    parser.add_argument("--broker-module", default="osqueue_io.server")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--csv", default=None)
    parser.add_argument("--keep-data", action="store_true")
    args = parser.parse_args()
    data = tempfile.mkdtemp(prefix="osq-rss-")
    address = f"127.0.0.1:{free_port()}"
    env = dict(os.environ)
    for item in args.env:
        name, _, value = item.partition("=")
        env[name] = value
    command = [sys.executable, "-m", args.broker_module, "--listen", address, "--data", data]
    command += ["--log-level", "WARNING"]
    print("broker:", " ".join(command), " ".join(args.env), flush=True)
    process = subprocess.Popen(command, env=env)
    rows: list[dict[str, float]] = []
    try:
        rows = asyncio.run(soak(args, process, address))
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        if args.csv and rows:
            with open(args.csv, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        if args.keep_data:
            print("data kept in", data)
        else:
            shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
