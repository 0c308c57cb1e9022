"""Attack (style): phase.py says "Nothing else in the core compares phases to decide
what a command may do" and docs/architecture.md calls TRANSITIONS and ON_SUBMIT the two
tables "every phase-dependent rule comes from". broker.py and commit.py still compare
phases directly for admission of queued commands, the final write, linger, ownership
checks, takeover-request polls and deadlines."""

from __future__ import annotations

import re
from pathlib import Path

import osqueue_core

ALLOWED = {"Phase.STARTING"}  # the initial value


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
