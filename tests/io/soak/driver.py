"""The crash soak: a real broker process under load from real clients, SIGKILLed at
random points and restarted, then drained and checked against the storage.

::

    python -m tests.io.soak --store local --rounds 100 --seed 7
    python -m tests.io.soak --store s3 --rounds 40

One run:

1. start a broker on a fixed free port on 127.0.0.1 (local directory or a moto S3
   server), then publishers and consumers (:mod:`tests.io.soak.load`) as asyncio tasks;
2. every round, SIGKILL the broker at a planned moment and start a new one on the same
   data (:mod:`tests.io.soak.rounds`). The moments are drawn from the seed: some while
   it is still starting (before or just after its takeover write), some right after it
   begins serving (when the successor re-issues the archive writes its predecessor
   left), most at random while it serves (state and archive writes are in flight nearly
   all the time under load). On S3 the brokers reach moto through a relay
   (:mod:`tests.io.soak.proxy`) that also kills at exact points: when a takeover, state
   or archive write reaches the store, or when the store's answer comes back (the
   write landed; the broker never hears it). After each kill the state object is read
   to tell which moment it was;
3. stop the load (every client finishes what it has in hand), drain the queue with
   fresh consumers, stop the broker with SIGTERM (exit 0 expected);
4. read the state and every archive object straight from storage and run the checks of
   :mod:`tests.io.soak.checks`; then let one more broker (in this process) take the
   drained queue over and sweep, and check that no segment object is left that the state
   does not reference: every segment the killed brokers dropped, abandoned or never
   attached is gone (deleted by its broker, or swept after a takeover); print the
   figures and the verdict.

The seed fixes the plan (kill moments, what each client does); the interleaving with
the broker is up to the machine, so a run is repeatable in its choices, not to the
microsecond. Evidence (each broker's log, the final state, the ledger) stays in the run
directory when a check fails or ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import anyio

from osqueue_core import BrokerConfig, OsqueueError, decode_state
from osqueue_io import EmbeddedQueue
from osqueue_io.storage import ObjectStore, StorageError, open_store
from tests.io.soak.checks import Check, Verdict, verify
from tests.io.soak.load import Clients, LoadConfig
from tests.io.soak.plan import SoakConfig
from tests.io.soak.processes import BrokerProcess, Brokers, MotoServer, broker_port
from tests.io.soak.proxy import KillProxy
from tests.io.soak.report import SoakReport
from tests.io.soak.rounds import START_TIMEOUT, Rounds

#: How long the final broker may take to stop after SIGTERM.
STOP_TIMEOUT = 30.0
#: How long the sweeping broker may take to take over, sweep and stop.
SWEEP_TIMEOUT = 60.0
SEGMENTS = BrokerConfig().segment_prefix


class Soak:
    """One run; see the module docstring. Use :func:`run_soak`."""

    def __init__(self, config: SoakConfig, run_dir: Path) -> None:
        self.config = config
        self.report = SoakReport(config, run_dir)
        self.ledger = self.report.ledger
        self.moto: MotoServer | None = None
        self.data_url = ""
        self.store_options: dict[str, object] = {}
        #: Segment objects in storage when the load stopped (None: could not list).
        self.segments_before_drain: int | None = None

    async def run(self) -> SoakReport:
        started = time.monotonic()
        try:
            await self._set_up_storage()
            store = open_store(self.data_url, **self.store_options)
            try:
                await self._run(store)
            finally:
                await store.aclose()
        finally:
            if self.moto is not None:
                await self.moto.stop()
            self.report.wall_time = time.monotonic() - started
        return self.report

    async def _set_up_storage(self) -> None:
        run_dir = self.report.run_dir
        if self.config.store == "local":
            self.data_url = str(run_dir / "queue")
        elif self.config.store == "s3":
            self.moto = MotoServer(run_dir / "moto.log")
            with anyio.fail_after(START_TIMEOUT):
                await self.moto.start()
            self.data_url = self.moto.s3.url(f"soak-{uuid.uuid4().hex[:8]}")
            self.store_options = self.moto.s3.options
        else:
            raise ValueError(f"unknown store {self.config.store!r}: use local or s3")

    async def _run(self, store: ObjectStore) -> None:
        async with anyio.create_task_group() as tasks:
            proxy = None
            env: dict[str, str] = {}
            if self.moto is not None:
                # The brokers reach S3 through the relay that makes targeted kills.
                proxy = KillProxy(self.moto.port)
                await tasks.start(proxy.serve)
                env = self.moto.env(proxy.endpoint)
            brokers = Brokers(
                self.data_url,
                port=broker_port(),
                env=env,
                log_dir=self.report.run_dir,
                lease_timeout=self.config.lease_timeout,
                spill_jobs=self.config.spill_jobs,
                tasks=tasks,
            )
            self.report.brokers = brokers.started
            rounds = Rounds(self.report, brokers, store, proxy)
            try:
                await self._soak(store, brokers, rounds, tasks)
            finally:
                await brokers.kill_all()
                tasks.cancel_scope.cancel()

    async def _soak(
        self, store: ObjectStore, brokers: Brokers, rounds: Rounds, tasks: anyio.abc.TaskGroup
    ) -> None:
        config = self.config
        clients = Clients(
            LoadConfig(brokers.address, publishers=config.publishers, consumers=config.consumers),
            self.ledger,
            config.seed,
        )
        broker = await brokers.spawn()
        if not await rounds.serves(broker, "the first broker"):
            return await self._abort(store, rounds)
        load_scope = anyio.CancelScope()
        load_done = anyio.Event()

        async def run_load() -> None:
            with load_scope:
                try:
                    await clients.run_load()
                finally:
                    load_done.set()

        tasks.start_soon(run_load)
        last = await rounds.run(broker)
        if last is None:
            load_scope.cancel()
            return await self._abort(store, rounds)

        rounds.say("stopping the load")
        clients.stop()
        with anyio.move_on_after(clients.config.give_up_after + 10):
            await load_done.wait()
        if not load_done.is_set():
            rounds.health.fail("the load did not stop within its give-up time")
            load_scope.cancel()
        with contextlib.suppress(StorageError):  # only a figure
            self.segments_before_drain = len(await store.list(SEGMENTS))
        rounds.say("draining")
        drain_limit = 60 + 3 * config.lease_timeout
        with anyio.move_on_after(drain_limit) as drain_scope:
            await clients.drain()
        if drain_scope.cancelled_caught:
            rounds.health.fail(f"the queue did not drain within {drain_limit:.0f}s")
        await self._stop(brokers, last, rounds.health)
        await self._finish(store, brokers, rounds)

    async def _stop(self, brokers: Brokers, broker: BrokerProcess, health: Check) -> None:
        """SIGTERM the last broker: it must drain, release the state and exit 0."""
        code: int | None = None
        with anyio.move_on_after(STOP_TIMEOUT):
            code = await brokers.terminate(broker)
        if code is None:
            await brokers.kill(broker)
            health.fail(
                f"SIGTERM: broker {broker.number} still running after "
                f"{STOP_TIMEOUT:.0f}s; see {broker.log_path}"
            )
        elif code != 0:
            health.fail(
                f"SIGTERM: broker {broker.number} exited with {code}, expected 0; "
                f"see {broker.log_path}"
            )

    async def _abort(self, store: ObjectStore, rounds: Rounds, reason: str = "") -> None:
        """A broker did not come up or exited by itself, or the storage could not be
        read: the checks cannot run. Keep the evidence."""
        verdict = self.report.verdict
        verdict.checks += [rounds.health, rounds.history]
        ended = verdict.check("the soak ran to its end")
        ended.fail(reason or "aborted: see the failures above")
        try:
            found = await store.read("state.json")
        except StorageError as error:
            found = None
            ended.fail(f"reading the state for the evidence failed too: {error}")
        self._save_evidence(found.data if found else None)

    async def _finish(self, store: ObjectStore, brokers: Brokers, rounds: Rounds) -> None:
        try:
            found = await store.read("state.json")
            keys = await store.list("archive")
            read = await store.read_many(keys)
        except StorageError as error:
            return await self._abort(store, rounds, f"reading the storage failed: {error}")
        objects = {key: obj.data if obj else None for key, obj in read.items()}
        state_data = found.data if found else None
        self._save_evidence(state_data)
        verdict = verify(self.ledger, state_data, objects)
        for broker in brokers.started:
            for line in broker.problems():
                rounds.health.fail(f"broker {broker.number}: {line}")
        warnings = [line for broker in brokers.started for line in broker.warnings()]
        verdict.figures["broker warnings logged"] = len(warnings)
        if state_data is not None:
            with contextlib.suppress(OsqueueError):  # the checks report it
                revision = decode_state(state_data).header.revision
                verdict.figures["state revisions written"] = revision
        errors = Counter({f"{op} {kind}": n for (op, kind), n in self.ledger.errors.items()})
        verdict.figures["client errors (retried or handled)"] = (
            ", ".join(f"{name} {n}" for name, n in errors.most_common()) or "none"
        )
        await self._check_swept(store, state_data, verdict)
        verdict.checks += [rounds.health, rounds.history]
        self.report.verdict = verdict

    async def _check_swept(
        self, store: ObjectStore, state_data: bytes | None, verdict: Verdict
    ) -> None:
        """One more broker takes the drained queue over and sweeps: afterwards storage
        holds no segment object that the state does not reference."""
        check = verdict.check(
            "once a takeover swept, no segment is left that the state does not reference"
        )
        referenced: set[str] = set()
        if state_data is not None:
            with contextlib.suppress(OsqueueError):  # the parse check reports it
                referenced = {ref.key for ref in decode_state(state_data).segments}
        try:
            left_by_brokers = await store.list(SEGMENTS)
            with anyio.fail_after(SWEEP_TIMEOUT):
                async with EmbeddedQueue(store, bytes) as queue:
                    stats = await queue.runtime.wait_until(
                        lambda s: s.sweeps == 1 and s.segment_deletes_pending == 0
                    )
            left = await store.list(SEGMENTS)
        except (StorageError, TimeoutError) as error:
            check.fail(f"the sweeping broker did not finish: {type(error).__name__}: {error}")
            return
        verdict.figures["segment objects when the load stopped"] = self.segments_before_drain
        verdict.figures["segment objects the brokers left (referenced)"] = (
            f"{len(left_by_brokers)} ({len(referenced)})"
        )
        verdict.figures["orphans swept after the last takeover"] = stats.swept
        for key in sorted(set(left) - referenced):
            check.fail(f"{key} is still there")

    def _save_evidence(self, state_data: bytes | None) -> None:
        run_dir = self.report.run_dir
        if state_data is not None:
            (run_dir / "final-state.json").write_bytes(state_data)
        (run_dir / "ledger.json").write_bytes(self.ledger.to_json())


async def run_soak(config: SoakConfig) -> SoakReport:
    """Run one soak (the caller needs an asyncio event loop) and return its report. The
    run directory is removed when every check passed, unless ``config.keep``."""
    made_dir = config.run_dir is None
    run_dir = Path(tempfile.mkdtemp(prefix="osqueue-soak-")) if made_dir else config.run_dir
    assert run_dir is not None
    run_dir.mkdir(parents=True, exist_ok=True)
    report = await Soak(config, run_dir).run()
    if report.passed and made_dir and not config.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return report


def build_parser() -> argparse.ArgumentParser:
    defaults = SoakConfig(seed=0)
    parser = argparse.ArgumentParser(
        prog="python -m tests.io.soak",
        description="Crash soak: SIGKILL a loaded osqueue broker at random points, "
        "restart it, drain, and check the storage against every acknowledgement.",
    )
    parser.add_argument(
        "--rounds", type=int, default=defaults.rounds, help="kills (default %(default)s)"
    )
    parser.add_argument("--store", choices=["local", "s3"], default="local")
    parser.add_argument("--seed", type=int, default=None, help="default: random, printed")
    parser.add_argument("--publishers", type=int, default=defaults.publishers)
    parser.add_argument("--consumers", type=int, default=defaults.consumers)
    parser.add_argument(
        "--lease",
        type=float,
        default=defaults.lease_timeout,
        help="the brokers' heartbeat timeout, seconds (default %(default)s)",
    )
    parser.add_argument(
        "--spill-jobs",
        type=int,
        default=defaults.spill_jobs,
        help="the brokers' --spill-jobs; 0 never spills (default %(default)s)",
    )
    parser.add_argument(
        "--max-delay",
        type=float,
        default=defaults.max_delay,
        help="longest time a broker serves before its kill (default %(default)s)",
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="logs and evidence (default: a new temporary directory)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the run directory after a pass")
    parser.add_argument("-v", "--verbose", action="store_true", help="a line per round")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = SoakConfig(
        rounds=args.rounds,
        store=args.store,
        seed=args.seed if args.seed is not None else random.randrange(2**32),
        publishers=args.publishers,
        consumers=args.consumers,
        lease_timeout=args.lease,
        spill_jobs=args.spill_jobs,
        max_delay=args.max_delay,
        run_dir=args.run_dir,
        keep=args.keep,
        verbose=args.verbose,
    )
    print(f"crash soak: {config.rounds} rounds on {config.store}, seed {config.seed}", flush=True)
    report = anyio.run(run_soak, config, backend="asyncio")
    print(report.render(), flush=True)
    return 0 if report.passed else 1
