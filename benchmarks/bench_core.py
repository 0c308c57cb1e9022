"""How the core's cost grows with the backlog: ``python -m benchmarks.bench_core``.

For each backlog size the core is loaded with that many ready jobs, then drives
push -> claim -> complete cycles where every operation is its own batch (the worst
case for group commit: one state write per operation, plus archive writes). Storage is
the in-memory ``SimStore`` of the tests, so the numbers are the core's own CPU cost:
applying commands, encoding the state, parsing confirm/resolve headers.

The original Go broker re-encoded its whole state on every write and slowed down ~38x
between a 1k and a 50k backlog; here the per-write work is the changed jobs' JSON plus
one ``bytes.join`` of cached fragments.
"""

from __future__ import annotations

import statistics
import sys
import time

from osqueue_core import BrokerConfig, Claim, Complete, Push, encode_job, encode_state
from tests.core.harness import Harness


def loaded(backlog: int) -> Harness:
    h = Harness.started(config=BrokerConfig(max_batch_ops=100_000, max_batch_bytes=1 << 40))
    h.auto = False
    for i in range(backlog):  # one big batch: fast to load
        h.broker.submit(Push(("load", i), b'{"task":"payload of a typical size ..."}'), h.now)
    h.auto = True
    h.flush()
    return h


def cycles(h: Harness, count: int) -> float:
    """Seconds per push+claim+complete cycle, each op written on its own."""
    start = time.perf_counter()
    for _ in range(count):
        h.submit(Push(h.request_id(), b'{"task":"new"}'))
        claimed = h.submit(Claim(h.request_id(), "w"))
        assert claimed is not None
        assert claimed.result is not None
        h.submit(Complete(h.request_id(), claimed.result.job_id, "w"))  # type: ignore[union-attr]
    return (time.perf_counter() - start) / count


def batched(h: Harness, count: int, batch: int = 100) -> float:
    """Seconds per operation when ``batch`` pushes share one write (group commit)."""
    start = time.perf_counter()
    for _ in range(count // batch):
        h.auto = False
        for _ in range(batch):
            h.broker.submit(Push(h.request_id(), b'{"task":"new"}'), h.now)
        h.auto = True
        h.flush()
    return (time.perf_counter() - start) / count


def full_encode(h: Harness) -> float:
    """Seconds to encode the whole state from scratch (what the original did per write)."""
    state = h.store.get("state.json")
    assert state is not None
    from osqueue_core import decode_state

    decoded = decode_state(state)
    header, jobs = decoded.header, decoded.jobs
    start = time.perf_counter()
    encode_state(header, [encode_job(j) for j in jobs])
    return time.perf_counter() - start


def main(sizes: list[int]) -> None:
    print(f"python {sys.version.split()[0]}")
    print(
        "| backlog | state size | µs per push+claim+complete, one write each "
        "| µs per push, 100 per write | full re-encode (what the original did per write) |"
    )
    print("|---:|---:|---:|---:|---:|")
    base_cycle = base_push = None
    for size in sizes:
        h = loaded(size)
        state = h.store.get("state.json") or b""
        per_cycle = statistics.median(cycles(h, 200) for _ in range(3))
        per_push = statistics.median(batched(h, 2000) for _ in range(3))
        base_cycle, base_push = base_cycle or per_cycle, base_push or per_push
        print(
            f"| {size:,} | {len(state) / 1e6:.1f} MB "
            f"| {per_cycle * 1e6:,.0f} ({per_cycle / base_cycle:.1f}x) "
            f"| {per_push * 1e6:,.1f} ({per_push / base_push:.1f}x) "
            f"| {full_encode(h) * 1e3:,.0f} ms |"
        )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1_000, 10_000, 50_000])
