"""Compare two probes of ``benchmarks.rss_trace``: ``python -m benchmarks.rss_diff A B``.

``A`` and ``B`` are probe indexes in ``OSQ_TRACE_DIR`` (or ``--dir``). Prints the RSS,
malloc and obmalloc deltas, object types whose count changed, the broker containers,
and (when both snapshots exist) the tracemalloc lines and tracebacks that grew most.
"""

from __future__ import annotations

import argparse
import json
import os
import tracemalloc


def load(directory: str, index: int) -> dict:
    with open(os.path.join(directory, f"probe-{index:03d}.json")) as file:
        return json.load(file)


def series(directory: str) -> None:
    """One line per probe: where the memory is (MiB)."""
    names = sorted(n for n in os.listdir(directory) if n.startswith("probe-"))
    probes = [load(directory, int(n[6:9])) for n in names]
    if not probes:
        return
    start = probes[0]["time"]
    mib = 1024 * 1024
    print(
        f"{'min':>5} {'VmRSS':>7} {'anon':>7} {'malloc_used':>11} {'malloc_free':>11} "
        f"{'mmap':>6} {'pymalloc':>8} {'py_used':>7} {'h2_closed':>9} {'h2_conns':>8} "
        f"{'objects':>8} {'tasks':>5} {'jobs':>5}"
    )
    for p in probes:
        m, o, c = p["mallinfo2"], p.get("obmalloc", {}), p.get("containers", {})
        print(
            f"{(p['time'] - start) / 60:>5.1f} {p['rss']['VmRSS'] / 1024:>7.1f} "
            f"{p['rss']['RssAnon'] / 1024:>7.1f} {m['uordblks'] / mib:>11.1f} "
            f"{m['fordblks'] / mib:>11.1f} {m['hblkhd'] / mib:>6.1f} "
            f"{o.get('arenas_current', 0):>8} {o.get('bytes_in_blocks', 0) / mib:>7.1f} "
            f"{c.get('h2._closed_streams_total', 0):>9} {c.get('h2.connections', 0):>8} "
            f"{p['objects']:>8} {p['asyncio_tasks']:>5} {c.get('table._jobs', 0):>5}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("a", type=int, nargs="?")
    parser.add_argument("b", type=int, nargs="?")
    parser.add_argument("--series", action="store_true", help="a table of every probe")
    parser.add_argument("--dir", default=os.environ.get("OSQ_TRACE_DIR", "/tmp/rss-trace"))
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--frames", type=int, default=8, help="traceback frames to print")
    args = parser.parse_args()
    if args.series or args.a is None or args.b is None:
        series(args.dir)
        return
    a, b = load(args.dir, args.a), load(args.dir, args.b)
    minutes = (b["time"] - a["time"]) / 60
    print(f"probe {args.a} -> {args.b}: {minutes:.1f} min")
    for section in ("rss", "mallinfo2", "obmalloc", "tracemalloc"):
        if section not in a or section not in b:
            continue
        print(f"\n[{section}]")
        for key, before in a[section].items():
            after = b[section].get(key, 0)
            scale = 1 if section == "rss" or key in ("ordblks", "hblks", "smblks") else 1024
            unit = "kB" if section == "rss" else ("" if scale == 1 else "kB")
            if section == "obmalloc" and key.startswith("arenas"):
                scale, unit = 1, ""
            print(
                f"  {key:26} {before / scale:>12.0f} -> {after / scale:>12.0f} "
                f"({(after - before) / scale:+.0f}{unit})"
            )
    print(f"\n[objects] {a['objects']} -> {b['objects']} ({b['objects'] - a['objects']:+d})")
    print(f"[asyncio tasks] {a['asyncio_tasks']} -> {b['asyncio_tasks']}")
    types = set(a["types"]) | set(b["types"])
    deltas = sorted(
        ((b["types"].get(t, 0) - a["types"].get(t, 0), t) for t in types),
        key=lambda d: -abs(d[0]),
    )
    for delta, name in deltas[: args.top]:
        if delta:
            print(f"  {name:40} {a['types'].get(name, 0):>9} -> {b['types'].get(name, 0):>9}")
    print("\n[containers]")
    for key, after in b.get("containers", {}).items():
        print(f"  {key:32} {a.get('containers', {}).get(key)!s:>8} -> {after}")
    snap_a = os.path.join(args.dir, f"snap-{args.a:03d}.tracemalloc")
    snap_b = os.path.join(args.dir, f"snap-{args.b:03d}.tracemalloc")
    if not (os.path.exists(snap_a) and os.path.exists(snap_b)):
        return
    ignore = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
        tracemalloc.Filter(False, "*/benchmarks/rss_trace.py"),
    ]
    first = tracemalloc.Snapshot.load(snap_a).filter_traces(ignore)
    second = tracemalloc.Snapshot.load(snap_b).filter_traces(ignore)
    total = sum(s.size for s in second.statistics("filename")) - sum(
        s.size for s in first.statistics("filename")
    )
    print(f"\n[tracemalloc] traced total {total / 1024:+.0f} kB")
    print("by line:")
    for stat in second.compare_to(first, "lineno")[: args.top]:
        print(
            f"  {stat.size_diff / 1024:+9.1f} kB {stat.count_diff:+7d} blocks  {stat.traceback[0]}"
        )
    print("by traceback (largest growth):")
    for stat in second.compare_to(first, "traceback")[: max(3, args.top // 3)]:
        print(f"  {stat.size_diff / 1024:+9.1f} kB {stat.count_diff:+7d} blocks")
        for line in stat.traceback.format(limit=args.frames, most_recent_first=True):
            print("     ", line)


if __name__ == "__main__":
    main()
