"""What a benchmark run produces: one :class:`Row` per workload x store x mode, the
median of its runs, printed as a table and written as JSON.

Every row carries its **limit**: the physical ceiling (or floor, for times) measured in
the same run, so a figure reads as a ratio. ``ratio`` is always ``result / limit``: for
a rate (``/s``) it is the share of the ceiling reached (1.0 is the best possible); for a
time or a size it is how many times the floor it costs (1.0 is the best possible).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs


@attrs.frozen
class Measurement:
    """One run of one workload: its result, the limit measured beside it, and what
    else is worth recording (numbers only, so runs can be combined by median)."""

    result: float
    limit: float
    extras: Mapping[str, float] = attrs.field(factory=dict)


@attrs.frozen
class Row:
    """The median of several :class:`Measurement` of one workload x store x mode."""

    workload: str
    store: str
    mode: str
    #: What ``result`` counts, e.g. ``pushes/s``, ``p50 ms``, ``MB``.
    unit: str
    result: float
    limit: float
    #: How the limit was measured, in a few words.
    limit_kind: str
    runs: int
    extras: Mapping[str, float] = attrs.field(factory=dict)
    #: Wall-clock seconds the row took, its limits' measurements included.
    seconds: float = 0.0

    @property
    def ratio(self) -> float:
        return self.result / self.limit if self.limit else float("nan")


def median_row(
    workload: str,
    store: str,
    mode: str,
    unit: str,
    limit_kind: str,
    measurements: Sequence[Measurement],
    seconds: float = 0.0,
) -> Row:
    """Combine runs: the median of each number separately (result, limit, extras)."""
    keys = dict.fromkeys(key for m in measurements for key in m.extras)
    return Row(
        workload=workload,
        store=store,
        mode=mode,
        unit=unit,
        result=statistics.median(m.result for m in measurements),
        limit=statistics.median(m.limit for m in measurements),
        limit_kind=limit_kind,
        runs=len(measurements),
        extras={
            key: statistics.median(m.extras[key] for m in measurements if key in m.extras)
            for key in keys
        },
        seconds=seconds,
    )


def _number(value: float) -> str:
    if value != value:  # NaN
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _extras(extras: Mapping[str, float]) -> str:
    return ", ".join(f"{key}={_number(value)}" for key, value in extras.items())


def table(rows: Sequence[Row]) -> str:
    """A plain-text table, one line per row (extras last, as ``key=value``)."""
    header = ("workload", "store", "mode", "result", "unit", "limit", "ratio", "limit is", "extras")
    lines = [
        (
            row.workload,
            row.store,
            row.mode,
            _number(row.result),
            row.unit,
            _number(row.limit),
            f"{row.ratio:.2f}",
            row.limit_kind,
            _extras(row.extras),
        )
        for row in rows
    ]
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines, strict=True)]
    right = {3, 5, 6}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(width) if index in right else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, lines)])


def write_json(path: Path, rows: Sequence[Row], settings: Mapping[str, object]) -> None:
    """The rows, the settings they ran with and the machine, as one JSON document."""
    document = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": _cpu_count(),
        },
        "settings": dict(settings),
        "rows": [{**attrs.asdict(row), "ratio": row.ratio if row.limit else None} for row in rows],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0
