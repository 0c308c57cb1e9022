"""Every phase-dependent decision comes from phase.py's tables (TRANSITIONS, RULES):
no module of the core compares phases itself. Found by review: broker.py and commit.py
used to compare phases directly for queued commands, the final write, linger,
ownership checks, takeover-request polls and deadlines."""

from __future__ import annotations

import re
from pathlib import Path

import osqueue_core

ALLOWED: set[str] = set()  # phase.py decides even the initial phase


def test_no_phase_comparisons_outside_the_phase_tables() -> None:
    root = Path(osqueue_core.__file__).parent
    found = []
    for path in sorted(root.glob("*.py")):
        if path.name == "phase.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in re.findall(r"Phase\.[A-Z]+", line):
                if match not in ALLOWED:
                    found.append(f"{path.name}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
