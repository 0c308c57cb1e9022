"""``python -m benchmarks`` runs end to end: a cheap subset, as a real subprocess.

No timing is asserted (speed is what the suite measures, not what tests check): only
that every row has a positive result and limit, and that the table printed them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = ("push_burst", "lifecycle", "lifecycle_batch", "closed_loop")


def test_quick_subset_writes_positive_results_and_limits(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    command = [
        sys.executable,
        "-m",
        "benchmarks",
        "--quick",
        "--only",
        "push_burst,lifecycle,closed_loop",
        "--stores",
        "memory",
        "--json",
        str(output),
    ]
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr

    document = json.loads(output.read_text())
    rows = document["rows"]
    found = {(row["workload"], row["mode"]) for row in rows}
    assert found == {(name, mode) for name in WORKLOADS for mode in ("embedded", "grpc")}
    table = done.stdout.split("\n\n")[-1]
    for row in rows:
        assert row["store"] == "memory"
        assert row["result"] > 0, row
        assert row["limit"] > 0, row
        assert row["ratio"] == row["result"] / row["limit"]
        line = next(
            (
                line
                for line in table.splitlines()
                if line.split()[:3] == [row["workload"], "memory", row["mode"]]
            ),
            None,
        )
        assert line is not None, f"no table line for {row['workload']} {row['mode']}"
        assert row["unit"] in line
    assert document["settings"]["quick"] is True
