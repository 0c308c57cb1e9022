"""The workloads of ``python -m benchmarks``, by name (``--only`` takes these names).

Each module has ``cases(context) -> list[Case]``: one case per row (store x mode, and
sizes where the workload has them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from benchmarks.context import Case, Context
from benchmarks.workloads import (
    closed_loop,
    idle,
    lifecycle,
    memory,
    push_burst,
    push_latency,
)

WORKLOADS: dict[str, Callable[[Context], Sequence[Case]]] = {
    "push_burst": push_burst.cases,
    "lifecycle": lifecycle.cases,
    "closed_loop": closed_loop.cases,
    "push_latency": push_latency.cases,
    "idle": idle.cases,
    "memory": memory.cases,
}

__all__ = ["WORKLOADS"]
