"""What a soak run found: the state each kill left, the figures, the verdict."""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path

import attrs

from tests.io.soak.checks import Verdict
from tests.io.soak.ledger import Ledger
from tests.io.soak.plan import SoakConfig
from tests.io.soak.processes import BrokerProcess


@attrs.define
class Snapshot:
    """The state object as a kill left it."""

    round: int
    mode: str
    served: bool
    epoch: int | None
    revision: int | None
    jobs: Counter[str]
    phase: str
    #: Local store only: "state" / "archive" writes the kill interrupted (a temp file
    #: it left behind, new since the last kill).
    interrupted: list[str] = attrs.Factory(list)


@attrs.define
class SoakReport:
    config: SoakConfig
    run_dir: Path
    verdict: Verdict = attrs.Factory(Verdict)
    snapshots: list[Snapshot] = attrs.Factory(list)
    brokers: list[BrokerProcess] = attrs.Factory(list)
    ledger: Ledger = attrs.Factory(Ledger)
    wall_time: float = 0.0

    @property
    def passed(self) -> bool:
        return self.verdict.passed

    def render(self) -> str:
        config = self.config
        figures: dict[str, object] = {
            "store": config.store,
            "seed": config.seed,
            "rounds": config.rounds,
            "kills": sum(1 for b in self.brokers if b.killed),
        }
        phases = Counter(snapshot.phase for snapshot in self.snapshots)
        for phase in sorted(phases, key=_phase_order):
            figures[f"  kills {phase}"] = phases[phase]
        if config.store == "local":
            for what in ("state", "archive"):
                count = sum(what in s.interrupted for s in self.snapshots)
                figures[f"  kills mid {what} write (temp file left)"] = count
        statuses = Counter(b.process.returncode for b in self.brokers if b.killed)
        figures["  exit statuses of killed brokers"] = ", ".join(
            f"{code}: {count}" for code, count in statuses.most_common()
        )
        if self.snapshots:
            # Consumers hold at most one job each; the rest lost their claim's answer in
            # a kill or were abandoned, and every takeover renews their leases.
            figures[f"jobs claimed at the last kill (consumers hold <= {config.consumers})"] = (
                self.snapshots[-1].jobs["claimed"]
            )
        starts = [b.startup_time for b in self.brokers if b.startup_time is not None]
        if starts:
            figures["broker start to serving, median/max (s)"] = (
                f"{statistics.median(starts):.2f}/{max(starts):.2f}"
            )
        figures.update(self.verdict.figures)
        figures["wall time (s)"] = f"{self.wall_time:.1f}"
        width = max(len(name) for name in figures)
        lines = [f"crash soak: {config.store}, seed {config.seed}"]
        lines += [f"  {name:<{width}}  {value}" for name, value in figures.items()]
        lines.append("checks:")
        for check in self.verdict.checks:
            lines += check.render()
        lines.append(f"{'PASSED' if self.passed else 'FAILED'}; run directory {self.run_dir}")
        return "\n".join(lines)


_PHASES = [
    "before the takeover",
    "takeover write, before it landed",
    "takeover write landed, unanswered",
    "while starting, after the takeover",
    "while serving, nothing to archive",
    "while serving, archive writes pending",
    "state write, before it landed",
    "state write landed, unanswered",
    "archive write, before it landed",
    "archive write landed, unanswered",
]


def _phase_order(phase: str) -> tuple[int, str]:
    return (_PHASES.index(phase) if phase in _PHASES else len(_PHASES), phase)
