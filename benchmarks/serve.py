"""``python -m benchmarks.serve``: the gRPC broker around a wrapped store.

The same :class:`osqueue_io.server.BrokerServer` as ``python -m osqueue_io.server``, with
its default flags, but the store is wrapped first: ``--write-latency SECONDS`` adds a
fixed delay to every write (:class:`benchmarks.wrappers.WriteLatencyStore`);
``--counts PATH`` counts storage calls (:class:`benchmarks.wrappers.CountingStore`) and
writes the counters to PATH as JSON twice a second; ``--backlog N`` first writes a state
of N ready jobs (:mod:`benchmarks.backlog`: how a ``memory://`` store in this process
gets one). Only the benchmarks use it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import anyio

from benchmarks.backlog import write_backlog
from benchmarks.wrappers import CountingStore, WriteLatencyStore
from osqueue_io.server import BrokerServer
from osqueue_io.server.cli import exit_process, parse_listen
from osqueue_io.storage import ObjectStore, open_store


async def _dump_counts(store: CountingStore, path: Path) -> None:
    while True:
        temp = path.with_suffix(".tmp")
        temp.write_text(json.dumps(store.counts))
        os.replace(temp, path)
        await anyio.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve")
    parser.add_argument("--listen", type=parse_listen, default="127.0.0.1:0")
    parser.add_argument("--data", required=True)
    parser.add_argument("--write-latency", type=float, default=None)
    parser.add_argument("--counts", type=Path, default=None)
    parser.add_argument("--backlog", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(
        level="INFO", format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    raw = open_store(args.data)
    store: ObjectStore = raw
    if args.write_latency is not None:
        store = WriteLatencyStore(store, args.write_latency)
    counting = None
    if args.counts is not None:
        store = counting = CountingStore(store)
    host, port = args.listen
    server = BrokerServer(store, host=host, port=port)

    async def run() -> int:
        try:
            if args.backlog:
                await write_backlog(raw, args.backlog)  # unwrapped: not counted, not slowed
            async with anyio.create_task_group() as group:
                if counting is not None:
                    group.start_soon(_dump_counts, counting, args.counts)
                code = await server.run()
                group.cancel_scope.cancel()
            return code
        finally:
            await store.aclose()

    return anyio.run(run, backend="asyncio")


if __name__ == "__main__":
    exit_process(main())
