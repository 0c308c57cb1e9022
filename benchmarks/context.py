"""What every workload gets: the run's settings, fresh stores, and the limit helpers.

A workload module (``benchmarks/workloads/*.py``) turns a :class:`Context` into
:class:`Case` values, one per row of the table; the runner (``benchmarks/__main__.py``)
runs each case ``runs`` times and keeps the medians.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import attrs

from benchmarks.backlog import backlog_state
from benchmarks.limits import (
    NoopServer,
    asyncio_request_rate,
    job_encode_rate,
    noop_rpc_rate,
    raw_write_seconds,
    store_bound,
)
from benchmarks.report import Measurement
from benchmarks.stores import Stores


@attrs.define
class Context:
    """Settings of this run and shared helpers (an S3 server, a no-op gRPC server)."""

    quick: bool
    runs: int
    big: bool
    store_kinds: Sequence[str]
    modes: Sequence[str]
    stores: Stores
    noop: NoopServer
    connections: int

    @property
    def scratch(self) -> Path:
        return self.stores.temp_root

    def pick(self, default: int, quick: int) -> int:
        """``quick`` under ``--quick``, else ``default`` (sizes, counts)."""
        return quick if self.quick else default

    @property
    def seconds(self) -> float:
        """How long a ceiling is sampled."""
        return 0.2 if self.quick else 1.5

    async def raw_write(self, kind: str, size: int, *, write_latency: float | None = None) -> float:
        """Seconds of one raw conditional write of ``size`` bytes on a fresh ``kind`` store."""
        writes = self.pick(15, 3) if size < 20_000_000 else 3
        return await raw_write_seconds(
            self.stores.fresh(kind), size, writes, write_latency=write_latency
        )

    async def throughput_limit(
        self,
        kind: str,
        mode: str,
        *,
        state_bytes: int,
        jobs_per_write: float,
        concurrency: int,
        requests_per_job: float,
        encodes_per_job: int = 1,
        batch: int = 0,
        write_latency: float | None = None,
    ) -> tuple[float, dict[str, float]]:
        """The lower of two ceilings on jobs/s, and both in ``extras``:

        * store: ``jobs_per_write`` jobs per raw conditional write of ``state_bytes``;
        * cpu: embedded, one job's share of the asyncio floor (``requests_per_job``
          requests of ``concurrency`` callers) plus ``encodes_per_job`` job encodings,
          paid one after the other on the event loop's one core; over gRPC, a no-op
          server's RPC rate for ``concurrency`` callers divided by ``requests_per_job``.
        """
        raw = await self.raw_write(kind, state_bytes, write_latency=write_latency)
        by_store = store_bound(jobs_per_write, raw)
        if mode == "embedded":
            requests = await asyncio_request_rate(concurrency, self.seconds)
            encodes = job_encode_rate(self.seconds)
            by_cpu = 1 / (requests_per_job / requests + encodes_per_job / encodes)
        else:
            requests = await noop_rpc_rate(
                self.noop.address, concurrency, self.connections, self.seconds, batch=batch
            )
            by_cpu = requests / requests_per_job
        extras = {
            "raw_write_ms": raw * 1e3,
            "state_MB": state_bytes / 1e6,
            "store_bound": by_store,
            "cpu_bound": by_cpu,
        }
        return min(by_store, by_cpu), extras


def estimated_state_bytes(jobs: int) -> int:
    """Size of a state holding ``jobs`` ready 100-byte jobs (when the real one cannot be
    read: ``memory://`` inside a broker subprocess)."""
    return len(backlog_state(jobs))


@attrs.frozen
class Case:
    """One row of the table: how to measure it once, and how to label it."""

    workload: str
    store: str
    mode: str
    unit: str
    limit_kind: str
    measure: Callable[[], Awaitable[Measurement]]
    #: Runs of this case (None: the run's ``--runs``); expensive cases run once.
    runs: int | None = None


def every_store_and_mode(
    context: Context,
    workload: str,
    unit: str,
    limit_kind: str,
    measure: Callable[[Context, str, str], Awaitable[Measurement]],
    runs: int | None = None,
) -> list[Case]:
    """One case per selected store x mode, measured by ``measure(context, kind, mode)``."""
    return [
        Case(
            workload,
            kind,
            mode,
            unit,
            limit_kind,
            functools.partial(measure, context, kind, mode),
            runs,
        )
        for kind in context.store_kinds
        for mode in context.modes
    ]
