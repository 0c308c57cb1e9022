"""The broker with memory probes: ``python -m benchmarks.rss_trace <broker args>``.

Runs ``osqueue_io.server.cli.main`` like ``python -m osqueue_io.server`` does, and from
a background thread writes, every ``OSQ_TRACE_INTERVAL`` seconds (default 60) into
``OSQ_TRACE_DIR`` (default /tmp/rss-trace):

* ``snap-NNN.tracemalloc`` (only with ``OSQ_TRACEMALLOC=<frames>``, e.g. 10): a
  tracemalloc snapshot, to diff with ``benchmarks.rss_diff``;
* ``probe-NNN.json``: RSS, glibc ``mallinfo2`` (arena / mmap / in-use / free bytes over
  all arenas), Python's obmalloc arenas (``sys._debugmallocstats``), live objects by
  type (``gc.get_objects``), asyncio task count, and the sizes of the broker's own
  containers (heaps, dicts) when the runtime can be found.

Use it as ``benchmarks.rss_soak --broker-module benchmarks.rss_trace``.
"""

from __future__ import annotations

import collections
import ctypes
import gc
import json
import os
import re
import sys
import tempfile
import threading
import time
import tracemalloc

TRACE_DIR = os.environ.get("OSQ_TRACE_DIR", "/tmp/rss-trace")
INTERVAL = float(os.environ.get("OSQ_TRACE_INTERVAL", "60"))
FRAMES = int(os.environ.get("OSQ_TRACEMALLOC", "0"))
#: Experiment knob: h2's bound on remembered closed streams per connection (2**16).
H2_MAX_CLOSED = os.environ.get("OSQ_H2_MAX_CLOSED_STREAMS")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def mallinfo() -> dict[str, int]:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return {name: int(getattr(info, name)) for name, _ in _MallInfo2._fields_}


def malloc_info_xml(path: str) -> None:
    """glibc's per-arena report (``malloc_info``), written to ``path``."""
    libc = ctypes.CDLL("libc.so.6")
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    stream = libc.fopen(path.encode(), b"w")
    if stream:
        libc.malloc_info(0, stream)
        libc.fclose(stream)


def obmalloc_stats() -> dict[str, int]:
    """Totals from ``sys._debugmallocstats`` (written to fd 2, so captured by dup2)."""
    with tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(capture.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode(errors="replace")
    result: dict[str, int] = {}
    for label, key in (
        ("arenas allocated total", "arenas_allocated_total"),
        ("arenas reclaimed", "arenas_reclaimed"),
        ("arenas highwater mark", "arenas_highwater"),
        ("arenas allocated current", "arenas_current"),
        ("bytes in allocated blocks", "bytes_in_blocks"),
        ("bytes in available blocks", "bytes_available"),
        ("unused pools", "unused_pools"),
        ("bytes lost to pool headers", "pool_headers"),
        ("bytes lost to quantization", "quantization"),
        ("bytes lost to arena alignment", "arena_alignment"),
        ("Total", "total"),
    ):
        match = re.search(rf"^# {re.escape(label)}\s*=\s*([\d,]+)", text, re.M)
        if match is None:
            match = re.search(rf"^{re.escape(label)}\s*=\s*([\d,]+)", text, re.M)
        if match:
            result[key] = int(match.group(1).replace(",", ""))
    return result


def rss() -> dict[str, int]:
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "Threads"):
                fields[name] = int(value.split()[0])
    return fields


def _find(kind: str) -> list[object]:
    return [o for o in gc.get_objects() if type(o).__name__ == kind]


def broker_containers() -> dict[str, int]:
    """Sizes of the core's and runtime's containers (the candidates for lazy growth)."""
    sizes: dict[str, int] = {}
    for runtime in _find("BrokerRuntime"):
        sizes["runtime._waiting"] = len(runtime._waiting)  # type: ignore[attr-defined]
        broker = runtime._broker  # type: ignore[attr-defined]
        rules, commit = broker._rules, broker._commit
        table = rules.table
        sizes["table._jobs"] = len(table._jobs)
        sizes["table._chunks"] = len(table._chunks)
        sizes["table._chunk_entries"] = sum(len(c) for c in table._chunks.values())
        sizes["table._joined"] = len(table._joined)
        sizes["table._ready"] = len(table._ready)
        sizes["table._leases"] = len(table._leases)
        sizes["table._lease_heap"] = len(table._lease_heap)
        sizes["table._archive"] = len(table._archive)
        sizes["waiters._waiting"] = len(rules.waiters._waiting)
        sizes["waiters._deadlines"] = len(rules.waiters._deadlines)
        sizes["recent._entries"] = len(rules.recent._entries)
        archiver = commit.archiver
        sizes["archiver._in_flight"] = len(archiver._in_flight)
        sizes["archiver._retry_at"] = len(archiver._retry_at)
        sizes["archiver._failures"] = len(archiver._failures)
        sizes["outbox._waiting"] = len(broker._out._waiting)
        sizes["broker._inbox"] = len(broker._inbox)
        sizes["commit.open.replies"] = len(commit.open.replies)
        sizes["commit.open.grants"] = len(commit.open.grants)
        sizes["runtime._abandoned"] = len(runtime._abandoned)  # type: ignore[attr-defined]
    connections = [c for c in _find("H2Connection") if hasattr(c, "_closed_streams")]
    sizes["h2.connections"] = len(connections)
    closed = sorted(len(c._closed_streams) for c in connections)  # type: ignore[attr-defined]
    sizes["h2._closed_streams_total"] = sum(closed)
    sizes["h2._closed_streams_max"] = max(closed, default=0)
    for admission in _find("Admission"):
        sizes["admission._running"] = len(admission._running)  # type: ignore[attr-defined]
    for server in _find("Server"):
        handlers = getattr(server, "_handlers", None)
        if isinstance(handlers, set):
            sizes["grpclib.Server._handlers"] = len(handlers)
            sizes["grpclib.Handler._tasks"] = sum(len(h._tasks) for h in handlers)
            sizes["grpclib.Handler._cancelled"] = sum(len(h._cancelled) for h in handlers)
    return sizes


def probe(index: int) -> None:
    record: dict[str, object] = {"time": time.time(), "index": index}
    record["rss"] = rss()
    record["mallinfo2"] = mallinfo()
    record["obmalloc"] = obmalloc_stats()
    record["gc_count"] = gc.get_count()
    import asyncio.tasks

    record["asyncio_tasks"] = len(asyncio.tasks._all_tasks)  # type: ignore[attr-defined]
    counts = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    record["types"] = dict(counts.most_common(200))
    record["objects"] = sum(counts.values())
    try:
        record["containers"] = broker_containers()
    except Exception as error:  # a probe must never take the broker down
        record["containers"] = {"error": repr(error)}
    if FRAMES:
        tracemalloc.take_snapshot().dump(os.path.join(TRACE_DIR, f"snap-{index:03d}.tracemalloc"))
        current, peak = tracemalloc.get_traced_memory()
        record["tracemalloc"] = {"current": current, "peak": peak}
    malloc_info_xml(os.path.join(TRACE_DIR, f"malloc-{index:03d}.xml"))
    with open(os.path.join(TRACE_DIR, f"probe-{index:03d}.json"), "w") as file:
        json.dump(record, file, indent=1)


def _loop() -> None:
    index = 0
    while True:
        try:
            probe(index)
        except Exception as error:
            print("probe failed:", repr(error), file=sys.stderr, flush=True)
        index += 1
        time.sleep(INTERVAL)


def main() -> None:
    os.makedirs(TRACE_DIR, exist_ok=True)
    if FRAMES:
        tracemalloc.start(FRAMES)
    if H2_MAX_CLOSED is not None:
        import h2.connection

        h2.connection.H2Connection.MAX_CLOSED_STREAMS = int(H2_MAX_CLOSED)
    from osqueue_io.server.cli import exit_process
    from osqueue_io.server.cli import main as broker_main

    threading.Thread(target=_loop, name="rss-probe", daemon=True).start()
    exit_process(broker_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
