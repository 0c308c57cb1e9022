"""What segments cost at a large backlog: ``python -m benchmarks.bench_segments [N] [off]``.

Fills a backlog of N ready jobs (100-byte payloads, ``PushBatch`` of 1,000), then
measures a single push's commit, opening the state (a successor's takeover: read,
decode, index, write), the broker's memory after opening (tracemalloc), and claim +
complete pairs one at a time. Storage is the tests' in-memory ``SimStore``, so the
figures are the core's own cost. ``off`` turns spilling off, for comparison (keep N
small then: every commit re-encodes the whole state). docs/architecture.md, "Stage 1 as
built", quotes the figures.
"""

from __future__ import annotations

import gc
import sys
import time
import tracemalloc

from osqueue_core import Broker, BrokerConfig, Claim, Claimed, Phase, PushBatch
from tests.core.harness import Harness, SimStore

PAYLOAD = b"x" * 100


def main(jobs: int, spill: bool) -> None:
    config = BrokerConfig(spill_jobs=1024 if spill else None, max_batch_ops=1000)
    store = SimStore()
    h = Harness.started(store, config)
    started = time.perf_counter()
    for _ in range(jobs // 1000):
        h.submit(PushBatch(h.request_id(), tuple(PAYLOAD for _ in range(1000))))
    elapsed = time.perf_counter() - started
    stats = h.broker.stats()
    state = store.get("state.json") or b""
    print(
        f"{jobs} jobs, spilling {'on' if spill else 'off'}: filled in {elapsed:.1f} s "
        f"({elapsed / jobs * 1e6:.0f} µs a job); {stats.segments} segments, "
        f"{stats.untouched} untouched; state {len(state) / 1024:.0f} KB"
    )
    started = time.perf_counter()
    for _ in range(200):
        h.push(PAYLOAD)
    per_push = (time.perf_counter() - started) / 200
    print(f"single push: {per_push * 1e3:.2f} ms (its commit, encode included)")
    del h
    gc.collect()
    started = time.perf_counter()
    Harness.started(store, config, identity="timed")
    print(f"open: {(time.perf_counter() - started) * 1e3:.0f} ms")
    gc.collect()
    tracemalloc.start()
    successor = Harness(Broker(config, identity="next", incarnation="next-1"), store)
    successor.auto = False
    successor.broker.start(successor.now)
    successor.flush()
    while successor.broker.phase is Phase.STARTING:
        successor.deliver(0)  # state operations only: segment reads stay held
    memory = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    reads = successor.broker.stats().segment_reads
    print(f"broker memory after open: {memory / 1e6:.1f} MB; segment reads issued: {reads}")
    successor.auto = True
    successor.deliver_all()
    pairs = min(20_000, jobs)
    started = time.perf_counter()
    for _ in range(pairs):
        reply = successor.submit(Claim(successor.request_id(), "w"))
        assert reply is not None
        assert isinstance(reply.result, Claimed)
        successor.complete(reply.result.job_id, "w")
    per_pair = (time.perf_counter() - started) / pairs
    reads = successor.broker.stats().segment_reads
    print(f"claim + complete: {per_pair * 1e3:.2f} ms a pair ({reads} segment reads)")


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 200_000,
        not (len(sys.argv) > 2 and sys.argv[2] == "off"),
    )
