"""The soak's rounds: kill the broker at the planned moment, read the state the kill
left, start the next broker on the same data.

A broker that exits by itself, or does not serve within ``START_TIMEOUT`` of its start,
is a finding: it is recorded with its log and the rounds stop there (no retry hides it).
"""

from __future__ import annotations

import statistics
import sys
from collections import Counter
from pathlib import Path

import anyio

from osqueue_core import OsqueueError, decode_state
from osqueue_io.storage import ObjectStore, StorageError
from tests.io.soak.checks import Check
from tests.io.soak.plan import TARGETED, KillPlan, plan_rounds
from tests.io.soak.processes import BrokerProcess, Brokers
from tests.io.soak.proxy import KillProxy, Trigger
from tests.io.soak.report import Snapshot, SoakReport

#: How long a (re)started broker may take to serve before that is a finding.
START_TIMEOUT = 30.0
#: How long a targeted kill waits for its write once armed.
TARGET_TIMEOUT = 5.0
_AFTER_SERVING = tuple(mode for mode in TARGETED if not mode.startswith("takeover-"))


class Rounds:
    """Runs the plan against ``brokers``; see :meth:`run`."""

    def __init__(
        self,
        report: SoakReport,
        brokers: Brokers,
        store: ObjectStore,
        proxy: KillProxy | None,
    ) -> None:
        self.report = report
        self.config = report.config
        self.brokers = brokers
        self.store = store
        self.proxy = proxy
        self.health = Check("every broker started, served, and stopped cleanly; no errors logged")
        self.history = Check(
            "every state a kill left parses; epochs and revisions never go back; a takeover "
            "write landed exactly when the store answered it"
        )
        #: Local store: temp files seen after earlier kills, with their mtimes.
        self._temp_files: dict[Path, int] = {}

    def say(self, message: str) -> None:
        if self.config.verbose:
            print(message, file=sys.stderr, flush=True)

    async def serves(self, broker: BrokerProcess, which: str) -> bool:
        """Wait until ``broker`` serves; False (and a finding) if it does not in time."""
        with anyio.move_on_after(START_TIMEOUT):
            if await self.brokers.wait_serving(broker):
                return True
        code = broker.process.returncode
        if code is not None:
            state = f"exited with {code} before serving"
        else:
            state = f"is not serving {START_TIMEOUT:.0f}s after its start"
        self.health.fail(
            f"{which} (broker {broker.number}) {state}; "
            f"see {broker.log_path}: {broker.log_text()[-2000:]!r}"
        )
        return False

    async def run(self, broker: BrokerProcess) -> BrokerProcess | None:
        """Kill and restart as planned; returns the broker serving at the end, or None
        if one exited by itself or never served."""
        plans = plan_rounds(self.config)
        epoch = await self._epoch()
        for number, plan in enumerate(plans, 1):
            served, phase = await self._wait_for_kill(broker, plan)
            if broker.exited and not broker.killed:
                self.health.fail(
                    f"round {number}: broker {broker.number} exited by itself "
                    f"(code {broker.process.returncode}); see {broker.log_path}"
                )
                return None
            if phase is not None and phase.startswith("missed") and not served:
                self.health.fail(
                    f"round {number}: broker {broker.number} neither wrote its takeover nor "
                    f"served within {START_TIMEOUT:.0f}s; see {broker.log_path}"
                )
                return None
            if not served and plan.mode in ("early", "serving", *_AFTER_SERVING):
                return None  # serves() said why
            await self.brokers.kill(broker)
            epoch = await self._snapshot(number, plan, served, phase, epoch)
            await anyio.sleep(plan.outage)
            upcoming = plans[number] if number < len(plans) else None
            broker = await self._spawn(upcoming)
        if not await self.serves(broker, "the last broker"):
            return None
        return broker

    # -- one kill ----------------------------------------------------------------------

    async def _spawn(self, plan: KillPlan | None) -> BrokerProcess:
        if plan is not None and plan.mode.startswith("takeover-"):
            self._arm(plan.mode)  # before the spawn: its takeover write is the target
        return await self.brokers.spawn()

    def _arm(self, mode: str) -> None:
        assert self.proxy is not None, "targeted kills need the S3 relay"
        suffix, moment, _ = TARGETED[mode]
        self.proxy.arm(Trigger(suffix, moment), lambda: self.brokers.started[-1].send_kill())

    async def _wait_for_kill(
        self, broker: BrokerProcess, plan: KillPlan
    ) -> tuple[bool, str | None]:
        """Wait for the planned moment. Returns whether the broker was serving by then,
        and the phase for targeted kills (None: the snapshot tells)."""
        if plan.mode == "startup":
            starts = [b.startup_time for b in self.brokers.started if b.startup_time]
            typical = statistics.median(starts) if starts else 0.5
            await anyio.sleep_until(broker.spawned_at + plan.delay * typical)
            return broker.serving.is_set(), None
        if plan.mode.startswith("takeover-"):
            return broker.serving.is_set(), await self._fired(plan.mode, START_TIMEOUT)
        if not await self.serves(broker, f"broker {broker.number}"):
            return False, None
        await anyio.sleep(plan.delay)
        if plan.mode in TARGETED:
            self._arm(plan.mode)
            return True, await self._fired(plan.mode, TARGET_TIMEOUT)
        return True, None

    async def _fired(self, mode: str, limit: float) -> str:
        """Wait for an armed kill; its phase, or a "missed" phase after ``limit``
        seconds (the broker is then killed in the ordinary way)."""
        assert self.proxy is not None
        with anyio.move_on_after(limit):
            await self.proxy.fired.wait()
        description = TARGETED[mode][2]
        if self.proxy.fired.is_set():
            return description
        self.proxy.disarm()
        return f"missed: no {description.split(',')[0]} within {limit:.0f}s"

    # -- what a kill left --------------------------------------------------------------

    async def _epoch(self) -> int | None:
        found = await self.store.read("state.json")
        return None if found is None else decode_state(found.data).header.owner.epoch

    async def _snapshot(
        self, number: int, plan: KillPlan, served: bool, phase: str | None, epoch: int | None
    ) -> int | None:
        """Read the state the kill left and record it; returns its epoch."""
        try:
            found = await self.store.read("state.json")
            state = None if found is None else decode_state(found.data)
        except (OsqueueError, StorageError) as error:
            self.history.fail(f"round {number} ({plan.mode}): {type(error).__name__}: {error}")
            return epoch
        jobs = Counter(job.status.value for job in state.jobs) if state else Counter()
        new_epoch = state.header.owner.epoch if state else None
        revision = state.header.revision if state else None
        took_over = new_epoch is not None and new_epoch != epoch
        aimed_at_takeover = plan.mode.startswith("takeover-") and phase is not None
        if phase is None:
            phase = _phase(served, took_over, jobs)
        elif (
            aimed_at_takeover
            and not phase.startswith("missed")
            and (took_over != (plan.mode == "takeover-response"))
        ):
            self.history.fail(f"round {number}: {phase}, yet the epoch went {epoch} -> {new_epoch}")
        previous = self.report.snapshots[-1] if self.report.snapshots else None
        if previous is not None and (
            (new_epoch or 0) < (previous.epoch or 0) or (revision or 0) < (previous.revision or 0)
        ):
            self.history.fail(
                f"round {number}: epoch/revision {new_epoch}/{revision} after "
                f"{previous.epoch}/{previous.revision}"
            )
        interrupted = self._interrupted_writes()
        self.report.snapshots.append(
            Snapshot(number, plan.mode, served, new_epoch, revision, jobs, phase, interrupted)
        )
        broker = self.brokers.started[-1]
        self.say(
            f"round {number}: broker {broker.number} (pid {broker.process.pid}, exit "
            f"{broker.process.returncode}), {plan.mode} {plan.delay:.3f}: {phase}; "
            f"epoch {new_epoch}, revision {revision}, jobs {dict(jobs)}, "
            f"interrupted writes {interrupted}"
        )
        return new_epoch

    def _interrupted_writes(self) -> list[str]:
        """Local store: which writes the kill cut short. The backend writes a temp file
        (``.osq-tmp``) in the key's directory and renames it over the object, so a new
        temp file left behind is a write that never finished. (If the backend names its
        temp files otherwise, this finds nothing; no check depends on it.)"""
        if self.config.store != "local":
            return []
        root = self.report.run_dir / "queue"
        interrupted = []
        for path in root.rglob(".osq-*tmp*"):
            mtime = path.stat().st_mtime_ns
            if self._temp_files.get(path) != mtime:
                self._temp_files[path] = mtime
                interrupted.append("state" if path.parent == root else "archive")
        return interrupted


def _phase(served: bool, took_over: bool, jobs: Counter[str]) -> str:
    if not served:
        return "while starting, after the takeover" if took_over else "before the takeover"
    if jobs["completed"]:
        return "while serving, archive writes pending"
    return "while serving, nothing to archive"
