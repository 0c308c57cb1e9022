"""What segments cost at a large backlog:
``python -m benchmarks.bench_segments [N] [off|keyed]``.

Fills a backlog of N ready jobs (100-byte payloads, ``PushBatch`` of 1,000), then
measures a single push's commit, opening the state (a successor's takeover: read,
decode, index, write), the broker's memory after opening (tracemalloc), and claim +
complete pairs one at a time. Storage is the tests' in-memory ``SimStore``, so the
figures are the core's own cost. ``off`` turns spilling off, for comparison (keep N
small then: every commit re-encodes the whole state). ``keyed`` gives every job an
idempotency key, and measures pushes of new keys and of keys already spilled, and the
key index a successor reads back (time and memory). docs/architecture.md, "Stage 1 as
built" and "Stage 2 as built", quotes the figures.
"""

from __future__ import annotations

import gc
import sys
import time
import tracemalloc

import attrs

from osqueue_core import (
    Broker,
    BrokerConfig,
    Claim,
    Claimed,
    NewJob,
    Phase,
    Push,
    PushBatch,
    Pushed,
    ReadObject,
)
from tests.core.harness import Harness, SimStore

PAYLOAD = b"x" * 100


def _batch(first: int, keyed: bool) -> tuple[bytes | NewJob, ...]:
    if not keyed:
        return tuple(PAYLOAD for _ in range(1000))
    return tuple(NewJob(PAYLOAD, key=f"order-{first + n}") for n in range(1000))


def _keyed_pushes(h: Harness, jobs: int) -> None:
    """Pushes of new keys (no segment read), then of keys spilled long ago (each reads
    the segment holding it, unless it is cached)."""
    for label, keys in (
        ("new key", [f"fresh-{n}" for n in range(200)]),
        ("spilled key", [f"order-{n * 7919 % jobs}" for n in range(200)]),
    ):
        reads = h.broker.stats().segment_reads
        started, cpu = time.perf_counter(), time.process_time()
        for key in keys:
            reply = h.submit(Push(h.request_id(), PAYLOAD, key=key))
            assert reply is not None
            assert isinstance(reply.result, Pushed)
            assert reply.result.existing is label.startswith("spilled")
        per_push = (time.perf_counter() - started) / len(keys)
        cpu = (time.process_time() - cpu) / len(keys)
        reads = h.broker.stats().segment_reads - reads
        print(
            f"push of a {label}: {per_push * 1e3:.2f} ms, {cpu * 1e3:.2f} ms of CPU "
            f"({reads} segment reads)"
        )


def _opened(store: SimStore, config: BrokerConfig, identity: str) -> Harness:
    """A successor that has taken ``store`` over, its segment reads held."""
    h = Harness(Broker(config, identity=identity, incarnation=identity + "-1"), store)
    h.auto = False
    h.broker.start(h.now)
    h.flush()
    while h.broker.phase is Phase.STARTING:
        h.deliver(0)
    return h


def _read_key_index(h: Harness) -> None:
    while not h.broker.stats().key_index_complete:
        h.deliver(h.pending_of(ReadObject, h.broker.config.segment_prefix)[0])


def _key_index_read(store: SimStore, config: BrokerConfig) -> None:
    """A successor's key index, read back from every keyed segment's header after its
    takeover: the time it takes, and (another successor, traced) the memory it adds
    (read-ahead off: its loaded segments are not the index)."""
    config = attrs.evolve(config, read_ahead=0)
    h = _opened(store, config, "keys")
    started, cpu = time.perf_counter(), time.process_time()
    _read_key_index(h)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    stats = h.broker.stats()
    del h
    gc.collect()
    tracemalloc.start()
    traced = _opened(store, config, "traced")
    opened = tracemalloc.get_traced_memory()[0]
    _read_key_index(traced)
    added = tracemalloc.get_traced_memory()[0] - opened
    tracemalloc.stop()
    keys = stats.untouched_keyed
    print(
        f"key index read back: {elapsed:.2f} s, {cpu:.2f} s of CPU ({stats.segment_reads} "
        f"header reads, {cpu / max(1, keys) * 1e6:.1f} µs a key); {keys} keys, "
        f"{added / 1e6:.1f} MB ({added / max(1, keys):.1f} B a key)"
    )


def main(jobs: int, spill: bool, keyed: bool = False) -> None:
    config = BrokerConfig(spill_jobs=1024 if spill else None, max_batch_ops=1000)
    store = SimStore()
    h = Harness.started(store, config)
    started = time.perf_counter()
    for first in range(0, jobs - jobs % 1000, 1000):
        h.submit(PushBatch(h.request_id(), _batch(first, keyed)))
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
    if keyed:
        _keyed_pushes(h, jobs)
        _key_index_read(store, config)
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
    # Keyed jobs that complete are remembered, up to 10,000 keys written with every
    # commit: far fewer pairs then.
    pairs = min(2_000 if keyed else 20_000, jobs)
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
    mode = sys.argv[2] if len(sys.argv) > 2 else ""
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000, mode != "off", mode == "keyed")
