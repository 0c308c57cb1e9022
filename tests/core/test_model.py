"""Model-based test: the core against a reference model and a hostile simulated store.

Hypothesis drives up to two brokers over one ``SimStore`` that can conflict (another
writer rewrote the object), fail with an unknown outcome (the write landed, or not, or
lands *later*, after the broker has given up on it), fail outright, crash a broker with
its writes in flight (landed or not), restart one from what is stored, step the wall
clock back and forth (timers run on ``now``, which never jumps), cancel claims, and
start a second broker that takes over. The model only believes what was acknowledged.

Invariants:
* **nothing more, nothing less**: every job in storage (state or archive) comes from a
  push that was sent, one job per push, a batch whole or not at all; every
  acknowledged push is there under the id it was acknowledged with;
* no job is held by two workers at once before its deadline;
* every request is answered at most once, with a result or a typed error, and exactly
  once unless its broker crashed; every acknowledged completion ends up archived
  exactly once, and never goes back to the queue;
* ``next_deadline()`` is never in the past (a runtime would spin);
* claims are FIFO among jobs known to be ready;
* the stored state always parses and re-encodes to the same bytes.

``HYPOTHESIS_PROFILE=long`` (tests/conftest.py) runs many more examples locally.
"""

from __future__ import annotations

import base64
from typing import Any

import attrs
import orjson
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from osqueue_core import (
    Broker,
    BrokerConfig,
    Claim,
    Claimed,
    Command,
    Complete,
    Completed,
    Effect,
    Fail,
    Failed,
    Heartbeat,
    JobStatus,
    LeaseExtended,
    LeaseLost,
    OsqueueError,
    Phase,
    Push,
    PushBatch,
    Pushed,
    PushedBatch,
    ReadObject,
    Release,
    Released,
    Reply,
    RetryPolicy,
    WriteObject,
    decode_state,
    encode_job,
    encode_state,
)

from .harness import Outcome, SimStore, archived_ids

TIMEOUT = 10.0
CONFIG = BrokerConfig(
    heartbeat_timeout=TIMEOUT,
    max_batch_ops=3,
    retry=RetryPolicy(base=0, max_attempts=3),
    retry_initial=0.1,
    retry_max=1.0,
    start_attempts=10_000,
    ownership_check=5.0,
    takeover_timeout=1e9,
)
WORKERS = ["w1", "w2", "w3"]
OUTCOMES: list[Outcome] = [
    "ok",
    "ok",
    "ok",
    "ok",
    "ok",
    "ok",
    "conflict",
    "unknown_landed",
    "unknown_lost",
    "failed",
    "late",
]


def seq_of(job_id: str) -> int:
    return int(job_id.split("-")[0])


@attrs.define
class Slot:
    """A live broker and its storage effects not yet delivered."""

    broker: Broker
    pending: list[Effect] = attrs.Factory(list)


@attrs.define
class Hold:
    worker: str
    deadline: float


class QueueModel(RuleBasedStateMachine):
    #: What the model drives (tests/core/test_model_mutants.py swaps in broken ones).
    broker_class: type[Broker] = Broker

    def __init__(self) -> None:
        super().__init__()
        self.store = SimStore()
        self.now = 1000.0
        self.wall = 1_795_000_000.0
        self.slots: list[Slot] = []
        self.incarnations = 0
        self.crashes = 0
        self.stops = 0
        self.step = 0
        self.request_ids = 0
        self.requests: dict[int, tuple[Command, int]] = {}  # command, step submitted
        self.answered: set[int] = set()
        self.acked_pushes: dict[str, bytes] = {}
        self.push_acked_step: dict[str, int] = {}
        self.acked_completions: set[str] = set()
        self.holds: dict[str, Hold] = {}
        #: acknowledged pushes never handed out as far as the model can know
        self.fresh: set[str] = set()
        #: (job, worker) pairs the worker gave up on with a complete or fail request
        self.relinquished: set[tuple[str, str]] = set()
        #: which broker (incarnation) each request went to, and the brokers that crashed
        self.sent_to: dict[int, Slot] = {}
        self.crashed: set[str] = set()
        #: every payload ever pushed, with the request that pushed it
        self.sent_payloads: dict[bytes, int] = {}
        #: pushes whose jobs may be held unacknowledged once they land
        self.unknowable: set[int] = set()
        self.config = CONFIG

    @initialize(linger=st.sampled_from([0.0, 0.0, 0.3]))
    def first_broker(self, linger: float) -> None:
        self.config = attrs.evolve(CONFIG, linger=linger)
        self._start_broker()

    # -- plumbing --------------------------------------------------------------------

    def _start_broker(self) -> None:
        self.incarnations += 1
        broker = self.broker_class(
            self.config, identity=f"b{self.incarnations}", incarnation=str(self.incarnations)
        )
        self.slots.append(Slot(broker))
        broker.start(self.now, self.wall)
        self._collect(self.slots[-1])

    def _collect(self, slot: Slot) -> None:
        self._drain(slot)
        if slot.broker.phase in (Phase.STOPPED, Phase.FAILED) and slot in self.slots:
            # A stopped or failed broker never writes again: it leaves the cluster.
            self.slots.remove(slot)

    def _drain(self, slot: Slot) -> None:
        self.step += 1
        claimed_now: list[tuple[str, int]] = []
        for effect in slot.broker.take_effects():
            if isinstance(effect, Reply):
                claimed = self._on_reply(effect)
                if claimed is not None:
                    claimed_now.append(claimed)
            else:
                slot.pending.append(effect)
        self._check_fifo(claimed_now)

    def _on_reply(self, reply: Reply) -> tuple[str, int] | None:
        rid = reply.request_id
        assert isinstance(rid, int)
        assert rid not in self.answered, f"request {rid} answered twice"
        self.answered.add(rid)
        command, submitted = self.requests[rid]
        result = reply.result
        assert reply.error is None or isinstance(reply.error, OsqueueError)
        if reply.error is not None and isinstance(command, Claim):
            # A claim answered with an error (its broker was replaced, storage stalled)
            # may still have landed: the job is held, unacknowledged, until handed back
            # or its lease ends.
            self.fresh.clear()
        assert (result is None) != (reply.error is None), "a result or an error, never both"
        event(f"reply: {type(reply.error or result).__name__}")
        if isinstance(reply.error, LeaseLost):
            hold = self.holds.get(reply.error.job_id)
            pair = (reply.error.job_id, reply.error.worker_id)
            if hold is not None and hold.worker == pair[1] and pair not in self.relinquished:
                assert hold.deadline <= self.now, "lease lost before its deadline"
                del self.holds[reply.error.job_id]
        match result:
            case Pushed(job_id):
                assert isinstance(command, Push)
                self._acked_push(job_id, command.payload, rid)
            case PushedBatch(job_ids):
                assert isinstance(command, PushBatch)
                assert len(job_ids) == len(command.payloads)
                for job_id, payload in zip(job_ids, command.payloads, strict=True):
                    self._acked_push(job_id, payload, rid)
            case Claimed(job_id, payload, _, deadline):
                assert isinstance(command, Claim)
                granted_at = deadline - TIMEOUT
                assert job_id not in self.acked_completions, "a completed job was handed out"
                if job_id in self.acked_pushes:
                    assert payload == self.acked_pushes[job_id]
                old = self.holds.get(job_id)
                if (
                    old is not None
                    and old.worker != command.worker_id
                    and (job_id, old.worker) not in self.relinquished
                ):
                    assert old.deadline <= granted_at, (
                        f"{job_id} granted to {command.worker_id} at {granted_at} while "
                        f"{old.worker} holds it until {old.deadline}"
                    )
                self.holds[job_id] = Hold(command.worker_id, deadline)
                self.relinquished.discard((job_id, command.worker_id))
                self.fresh.discard(job_id)
                return job_id, submitted
            case LeaseExtended(job_id, deadline):
                assert isinstance(command, Heartbeat)
                self.holds[job_id] = Hold(command.worker_id, deadline)
            case Completed(job_id):
                self.acked_completions.add(job_id)
                self.holds.pop(job_id, None)
            case Failed(job_id, _) | Released(job_id):
                self.holds.pop(job_id, None)
        return None

    def _acked_push(self, job_id: str, payload: bytes, rid: int) -> None:
        assert job_id not in self.acked_pushes, f"{job_id} acknowledged for two pushes"
        self.acked_pushes[job_id] = payload
        self.push_acked_step[job_id] = self.step
        if rid not in self.unknowable:
            self.fresh.add(job_id)

    def _check_fifo(self, claimed: list[tuple[str, int]]) -> None:
        for job_id, submitted in claimed:
            older = [
                other
                for other in self.fresh
                if seq_of(other) < seq_of(job_id) and self.push_acked_step[other] < submitted
            ]
            assert not older, f"claim got {job_id} while older {older} were ready"

    def _payload(self, data: bytes) -> bytes:
        """A payload no other push has: the model can tell every job apart by it."""
        payload = f"{len(self.sent_payloads)}:".encode() + data
        self.sent_payloads[payload] = self.request_ids + 1
        return payload

    def _submit(self, slot_index: int, make: Any) -> None:
        slot = self.slots[slot_index % len(self.slots)]
        self.request_ids += 1
        command = make(self.request_ids)
        self.requests[self.request_ids] = (command, self.step)
        self.sent_to[self.request_ids] = slot
        slot.broker.submit(command, self.now, self.wall)
        self._collect(slot)

    def _live(self) -> bool:
        return bool(self.slots)

    def _settle(self, slot: Slot) -> None:
        while slot.pending:
            effect = slot.pending.pop(0)
            slot.broker.receive(self.store.execute(effect), self.now, self.wall)
            self._collect(slot)

    # -- rules -----------------------------------------------------------------------

    @precondition(_live)
    @rule(slot=st.integers(0, 1), data=st.binary(max_size=4))
    def push(self, slot: int, data: bytes) -> None:
        payload = self._payload(data)
        self._submit(slot, lambda rid: Push(rid, payload))

    @precondition(_live)
    @rule(slot=st.integers(0, 1), data=st.lists(st.binary(max_size=2), max_size=3))
    def push_batch(self, slot: int, data: list[bytes]) -> None:
        payloads = tuple(self._payload(d) for d in data)
        self._submit(slot, lambda rid: PushBatch(rid, payloads))

    @precondition(_live)
    @rule(
        slot=st.integers(0, 1), worker=st.sampled_from(WORKERS), wait=st.sampled_from([0, 0, 3, 30])
    )
    def claim(self, slot: int, worker: str, wait: float) -> None:
        self._submit(slot, lambda rid: Claim(rid, worker, wait))

    @precondition(lambda self: any(isinstance(self.requests[r][0], Claim) for r in self.open()))
    @rule(pick=st.integers(0, 100))
    def cancel_claim(self, pick: int) -> None:
        claims = [r for r in self.open() if isinstance(self.requests[r][0], Claim)]
        rid = claims[pick % len(claims)]
        slot = self.sent_to[rid]
        # A cancelled claim may give back a job older than ones already granted to
        # later claims whose replies are still held, or keep one (taken back only in
        # memory, when a successor takes over first) that a push still on its way
        # made: FIFO knowledge is gone, for those pushes too.
        self.fresh.clear()
        self.unknowable |= {
            r for r in self.open() if isinstance(self.requests[r][0], Push | PushBatch)
        }
        if slot in self.slots:
            slot.broker.cancel_claim(rid, self.now, self.wall)
            self._collect(slot)

    def open(self) -> list[int]:
        """Requests not answered yet, sent to a broker that is still alive."""
        return sorted(
            r for r, slot in self.sent_to.items() if r not in self.answered and slot in self.slots
        )

    @precondition(lambda self: self._live() and self.holds)
    @rule(slot=st.integers(0, 1), pick=st.integers(0, 100), honest=st.booleans())
    def heartbeat(self, slot: int, pick: int, honest: bool) -> None:
        job_id = sorted(self.holds)[pick % len(self.holds)]
        worker = self.holds[job_id].worker if honest else "intruder"
        self._submit(slot, lambda rid: Heartbeat(rid, job_id, worker))

    @precondition(lambda self: self._live() and self.holds)
    @rule(slot=st.integers(0, 1), pick=st.integers(0, 100))
    def complete(self, slot: int, pick: int) -> None:
        job_id = sorted(self.holds)[pick % len(self.holds)]
        worker = self.holds[job_id].worker
        self.relinquished.add((job_id, worker))
        self._submit(slot, lambda rid: Complete(rid, job_id, worker))

    @precondition(lambda self: self._live() and self.holds)
    @rule(slot=st.integers(0, 1), pick=st.integers(0, 100), requeue=st.booleans())
    def fail(self, slot: int, pick: int, requeue: bool) -> None:
        job_id = sorted(self.holds)[pick % len(self.holds)]
        worker = self.holds[job_id].worker
        self.relinquished.add((job_id, worker))
        self._submit(slot, lambda rid: Fail(rid, job_id, worker, "boom", requeue))

    @precondition(lambda self: self._live() and self.holds)
    @rule(slot=st.integers(0, 1), pick=st.integers(0, 100))
    def release(self, slot: int, pick: int) -> None:
        job_id = sorted(self.holds)[pick % len(self.holds)]
        worker = self.holds[job_id].worker
        self.relinquished.add((job_id, worker))
        self._submit(slot, lambda rid: Release(rid, job_id, worker))

    @rule(seconds=st.sampled_from([0.05, 0.5, 1.0, 3.0, 6.0, 11.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += seconds
        for slot in list(self.slots):
            slot.broker.tick(self.now, self.wall)
            self._collect(slot)

    @rule(step=st.sampled_from([-86_400.0, -3600.0, -1.0, 1.0, 3600.0, 86_400.0]))
    def step_wall_clock(self, step: float) -> None:
        """NTP (or an operator) steps the wall clock: timers must not notice."""
        self.wall += step

    @precondition(lambda self: any(s.pending for s in self.slots))
    @rule(slot=st.integers(0, 1), pick=st.integers(0, 100), outcome=st.sampled_from(OUTCOMES))
    def deliver(self, slot: int, pick: int, outcome: Outcome) -> None:
        candidates = [s for s in self.slots if s.pending]
        chosen = candidates[slot % len(candidates)]
        effect = chosen.pending.pop(pick % len(chosen.pending))
        event(f"deliver {type(effect).__name__}: {outcome}")
        result = self.store.execute(effect, outcome)
        chosen.broker.receive(result, self.now, self.wall)
        self._collect(chosen)

    @precondition(lambda self: bool(self.store.late))
    @rule(pick=st.integers(0, 100))
    def land_late(self, pick: int) -> None:
        """A write its broker gave up on (a timeout) reaches the store after all."""
        result = self.store.land_late(pick % len(self.store.late))
        event(f"late write: {type(result).__name__}")
        # A late write may carry a grant to a claim not answered yet (or taken back
        # since): FIFO knowledge is gone.
        self.fresh.clear()

    @precondition(lambda self: any(s.pending for s in self.slots))
    @rule()
    def deliver_everything(self) -> None:
        for slot in list(self.slots):
            self._settle(slot)

    @precondition(lambda self: self._live() and self.crashes < 3)
    @rule(slot=st.integers(0, 1), landed=st.booleans())
    def crash(self, slot: int, landed: bool) -> None:
        self.crashes += 1
        victim = self.slots.pop(slot % len(self.slots))
        self.crashed.add(victim.broker.incarnation)
        # A claim may have landed unacknowledged (or been handed back only in memory):
        # FIFO knowledge is gone.
        self.fresh.clear()
        if landed:
            # Its writes in flight reach the store, but nobody hears back.
            for effect in victim.pending:
                if isinstance(effect, WriteObject):
                    self.store.write(effect)

    @precondition(lambda self: len(self.slots) < 2)
    @rule()
    def start_broker(self) -> None:
        self._start_broker()

    @precondition(lambda self: self._live() and self.stops < 2)
    @rule(slot=st.integers(0, 1))
    def stop(self, slot: int) -> None:
        self.stops += 1
        chosen = self.slots[slot % len(self.slots)]
        chosen.broker.stop(self.now, self.wall)
        self._collect(chosen)

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def deadlines_are_never_in_the_past(self) -> None:
        for slot in self.slots:
            deadline = slot.broker.next_deadline()
            assert deadline is None or deadline > self.now, (deadline, self.now)

    @invariant()
    def stored_state_parses_and_round_trips(self) -> None:
        data = self.store.get("state.json")
        if data is None:
            return
        decoded = decode_state(data)
        assert encode_state(decoded.header, [encode_job(j) for j in decoded.jobs]) == data

    @invariant()
    def storage_holds_exactly_what_was_pushed(self) -> None:
        """Nothing more (no job applied twice, none invented, batches whole), nothing
        less (every acknowledged push under its id)."""
        data = self.store.get("state.json")
        jobs = {job.id: job.payload for job in decode_state(data).jobs} if data else {}
        archived: list[str] = []
        for key in self.store.keys("archive/"):
            for job in orjson.loads(self.store.get(key))["jobs"]:  # type: ignore[arg-type]
                archived.append(job["id"])
                jobs.setdefault(job["id"], decode_state_payload(job))
        assert len(archived) == len(set(archived)), "a job was archived twice"
        by_payload: dict[bytes, str] = {}
        for job_id, payload in jobs.items():
            assert payload in self.sent_payloads, f"{job_id} holds a payload nobody pushed"
            assert payload not in by_payload, f"{job_id} and {by_payload[payload]}: one push"
            by_payload[payload] = job_id
        for job_id, payload in self.acked_pushes.items():
            assert jobs.get(job_id) == payload, f"acknowledged push {job_id} lost"
        for rid, (command, _) in self.requests.items():
            if isinstance(command, PushBatch) and command.payloads:
                found = sum(p in by_payload for p in command.payloads)
                assert found in (0, len(command.payloads)), f"batch {rid} landed in part"

    @invariant()
    def acknowledged_completions_stay_finished(self) -> None:
        data = self.store.get("state.json")
        if data is None:
            return
        for job in decode_state(data).jobs:
            if job.id in self.acked_completions:
                assert job.status is JobStatus.COMPLETED

    def teardown(self) -> None:
        """Let the dust settle: every request answered unless its broker crashed; then,
        on a fresh broker, every acknowledged completion archived exactly once."""

        def unanswered() -> list[int]:
            return [
                rid
                for rid, slot in self.sent_to.items()
                if rid not in self.answered and slot.broker.incarnation not in self.crashed
            ]

        for _ in range(50):  # retries wait for their backoff: let time pass too
            for slot in list(self.slots):
                self._settle(slot)
            if not unanswered():
                break
            self.now += TIMEOUT + 1
            self.wall += TIMEOUT + 1
            for slot in list(self.slots):
                slot.broker.tick(self.now, self.wall)
                self._collect(slot)
        # Brokers still alive may hold waiting claims: stopping answers them.
        for slot in list(self.slots):
            slot.broker.stop(self.now, self.wall)
            self._collect(slot)
        for slot in list(self.slots):
            self._settle(slot)
        assert not unanswered(), f"requests never answered by a live broker: {unanswered()}"
        self.store.late.clear()  # writes still in the air when everyone is gone: never land
        self.slots.clear()
        self._start_broker()
        slot = self.slots[0]
        for _ in range(50):
            self._settle(slot)
            if not any(isinstance(e, WriteObject | ReadObject) for e in slot.pending):
                self.now += TIMEOUT + 1
                slot.broker.tick(self.now, self.wall)
                self._collect(slot)
            if not slot.pending:
                break
        assert slot.broker.phase is Phase.RUNNING, slot.broker.failure
        self.storage_holds_exactly_what_was_pushed()
        archived = archived_ids(self.store)
        assert self.acked_completions <= set(archived)
        remaining = decode_state(self.store.get("state.json")).jobs  # type: ignore[arg-type]
        assert not [j for j in remaining if j.status is JobStatus.COMPLETED]


def decode_state_payload(job: dict[str, Any]) -> bytes:
    return base64.b64decode(job["born"]["data"])


TestQueueModel = QueueModel.TestCase
# Long enough runs for work to get through a hostile store (CI: ~20 s).
TestQueueModel.settings = settings(
    TestQueueModel.settings,
    max_examples=2 * TestQueueModel.settings.max_examples,
    stateful_step_count=80,
)
