"""``python -m benchmarks``: the benchmark suite (see docs/performance.md).

Runs every workload (or those ``--only`` names) on every store (``--stores``) in both
modes (``--modes``), each ``--runs`` times, prints one table row per workload x store x
mode as it finishes, then the whole table, and writes it all to ``--json``. Every row
shows the physical limit measured in the same run and ``ratio = result / limit``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio

from benchmarks.context import Context
from benchmarks.deploy import DEFAULT_CONNECTIONS, MODES
from benchmarks.limits import NoopServer
from benchmarks.report import Row, median_row, table, write_json
from benchmarks.stores import STORE_KINDS, Stores
from benchmarks.workloads import WORKLOADS

# .benchmarks/ is git-ignored: results of a run are not source.
DEFAULT_JSON = Path(__file__).resolve().parents[1] / ".benchmarks" / "results.json"


def _names(allowed: Sequence[str], what: str) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(unknown) or '(none)'}: use {','.join(allowed)}"
            )
        return names

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="osqueue's benchmark suite: throughput, latency, idle cost and memory, "
        "each beside its physical limit measured in the same run.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and one run (a smoke test, < 60 s)"
    )
    parser.add_argument(
        "--only",
        type=_names(list(WORKLOADS), "workload"),
        default=list(WORKLOADS),
        metavar="NAME[,NAME]",
        help=f"workloads to run (default: all: {','.join(WORKLOADS)})",
    )
    parser.add_argument(
        "--stores",
        type=_names(STORE_KINDS, "store"),
        default=list(STORE_KINDS),
        metavar="KIND[,KIND]",
        help=f"stores to run on (default: {','.join(STORE_KINDS)})",
    )
    parser.add_argument(
        "--modes",
        type=_names(MODES, "mode"),
        default=list(MODES),
        metavar="MODE[,MODE]",
        help=f"embedded and/or grpc (default: {','.join(MODES)})",
    )
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per row, the median is kept (default: 3)"
    )
    parser.add_argument(
        "--big",
        action="store_true",
        help="add the 1M-job backlog to push_latency (minutes: every commit rewrites the "
        "whole state today)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=DEFAULT_CONNECTIONS,
        help=f"gRPC connections the callers share (default: {DEFAULT_CONNECTIONS})",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        metavar="PATH",
        help="where to write the results (default: .benchmarks/results.json)",
    )
    return parser


async def run(context: Context, names: Sequence[str]) -> list[Row]:
    rows = []
    for name in names:
        for case in WORKLOADS[name](context):
            runs = case.runs or context.runs
            started = time.perf_counter()
            measurements = [await case.measure() for _ in range(runs)]
            row = median_row(
                case.workload,
                case.store,
                case.mode,
                case.unit,
                case.limit_kind,
                measurements,
                seconds=time.perf_counter() - started,
            )
            print(table([row]).splitlines()[-1], flush=True)
            rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    stores, noop = Stores(), NoopServer()
    context = Context(
        quick=args.quick,
        runs=runs,
        big=args.big,
        store_kinds=args.stores,
        modes=args.modes,
        stores=stores,
        noop=noop,
        connections=args.connections,
    )
    started, load_before = time.perf_counter(), os.getloadavg()
    print(
        f"python -m benchmarks: {', '.join(args.only)}; runs={runs}; one row per line; "
        f"load average {load_before[0]:.1f} on {len(os.sched_getaffinity(0))} cpus"
    )
    try:
        rows = anyio.run(run, context, args.only, backend="asyncio")
    finally:
        noop.close()
        stores.close()
    print()
    print(table(rows))
    settings = {
        "quick": args.quick,
        "runs": runs,
        "big": args.big,
        "only": args.only,
        "stores": args.stores,
        "modes": args.modes,
        "connections": args.connections,
        "seconds": round(time.perf_counter() - started, 1),
        # Other work on the machine slows results and limits alike: say how busy it was.
        "load_average_before": round(load_before[0], 2),
        "load_average_after": round(os.getloadavg()[0], 2),
    }
    write_json(args.json, rows, settings)
    print(f"\nwritten to {args.json} in {settings['seconds']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
