"""Model-based test: the core against a reference model and a hostile simulated store.

Hypothesis drives up to two brokers over one ``SimStore`` that can conflict (another
writer rewrote the object), fail with an unknown outcome (the write landed, or not, or
lands *later*, after the broker has given up on it), fail outright, crash a broker with
its writes in flight (landed or not), restart one from what is stored, step the wall
clock back and forth (timers run on ``now``, which never jumps), cancel claims, and
start a second broker that takes over. Clients push to three queues with priorities,
delays, run-at times, idempotency keys (from a small set, so they collide, also inside
one batch) and attempt limits; claim from subsets of the queues, one or several jobs
at a time; fail with or without retry under a retry policy with backoff; release,
cancel, look jobs up, list, redrive and purge dead letters. The model only believes
what was acknowledged: its reference side is tests/core/model_reference.py (what it
believes, and why that is honest), model_endings.py, model_storage.py and
model_history.py (the audit of every stored version), model_basics.py (time, specs).

Invariants:
* **nothing more, nothing less**: every job in storage (state or archive) comes from a
  push that was sent, one job per pushed item, born with what that item asked for; a
  batch lands whole or not at all; every acknowledged push is there under the id it
  was acknowledged with;
* **idempotency**: one job per (queue, key) in storage, ever, also inside one batch;
  every push acknowledged with a key names that job;
* **order**: a claim gets the best due job of its queues, highest priority first, then
  FIFO (push order), among jobs known to be ready; a batch claim lists them best
  first; a claim that finds nothing while a job of its queues is known due is a bug;
* **run-at**: no job is claimed before its run-at or its retry's backoff has passed
  (checked on acknowledged claims and on every stored version); a retry's run-at
  follows docs/lifecycle.md's backoff formula;
* **attempts**: a claim counts exactly one attempt, a release none, a redrive starts
  again from zero; no job ever has more attempts than its limit;
* a dead, purged or cancelled job is never claimed again (until redriven, for a dead
  one); a cancelled claimed job's heartbeat says so, and it ends cancelled;
* redrive and purge name exactly the jobs asked for and keep every other job: a dead
  letter changes only when a redrive or purge named it (or it grew too old, or another
  job died with the dead-letter list full);
* no job is held by two workers at once before its deadline;
* every request is answered at most once, with a result or a typed error, and exactly
  once unless its broker crashed; every acknowledged completion ends up archived
  exactly once, with its result, and never goes back to the queue; acknowledged
  cancels end archived as cancelled, purges as dead;
* ``next_deadline()`` is never in the past (a runtime would spin), and no broker keeps
  issuing storage operations by itself;
* the stored state always parses and re-encodes to the same bytes, and so does every
  segment it references;
* the broker's notices (for the logs) are true when taken: each names a version this
  broker landed, commits in order, a dead letter dead there, an expired lease no longer
  held (tests/core/model_notices.py);
* every broker's monitoring counters never go down and say what happened: exactly the
  conflicts and unknown outcomes delivered to its state writes, one takeover once it
  took over, one fencing exactly when it was replaced, at least the failed attempts it
  acknowledged, one commit observation per landed write (tests/core/model_monitoring.py).

**Segments** (docs/architecture.md, "Segments"; stage 1 and due windows): two examples
in three spill with tiny sizes (``spill_jobs`` 2, 3 or 5, segments of 3 or 8 jobs, a cache
of at most two segments; read-ahead 0 while a bug is open), so spills, drops, commands
waiting for a read and evictions happen within a few steps. The model reads every stored
state as its inline jobs plus the untouched records of its referenced segments, read
from the store (tests/core/model_segments.py), so every check above applies to that
list, and checks: every ref names an object whose size, digest, key, groups, seq range,
due range and keyed count match, and whose records are canonical ``ready`` fragments in
claim order; one place (no id or seq twice over inline and untouched jobs); refs
attached only once their segment was known durable; a job that only moved keeps its
record; a position that left never comes back; an all-left ref does not outlive the next
version; segment keys are written create-only, once; a segment never mixes jobs with a
due time and jobs without one; keyed jobs spill too (stage 2's key index, each segment's
matched against its records), and a keyed push whose key is untouched in a segment must
name that job; once settled, the broker holds no ``Job`` for an untouched job, its
counts of refs, untouched and inline jobs are storage's, its ready and delayed counts
per queue are storage's judged by its wall clock, and fewer than ``spill_jobs`` jobs
wait to be spilled. Delayed jobs and retries spill into segments with due windows; the
wall clock steps back into a stored segment's due range, and a broker may start right
there (its clock behind): the history audit judges every claim by the wall clocks the
broker that made it has seen. Segment creates and reads get every storage outcome; a
conflicting create finds a foreign object planted under its key; a read may answer
"absent" although the object is there, or one byte changed (the broker must fail, or
never write a state referencing that segment). Crashes with writes in flight, late
landings and a second broker taking over apply to segment writes as to the state's.

**Deletes** (stage 2): segment deletes and the sweep's listings get every storage outcome
(a delete that lands late included) and may be held while other work goes on. The store
fails the test at once when a delete lands while the stored state references its key,
or a state referencing a deleted key lands later (a delete must follow a landed state
that no longer references the key, and no later state may bring it back); a broker
never deletes the foreign object found under a key of its own epoch (its abandoned
spill); a key created again after a delete holds the same bytes (a late copy of the
same create). Once settled, on the last broker, nothing is left under the segment
prefix but what the stored state references: dropped and unattached segments were
deleted by their brokers, orphans of crashed and fenced brokers swept by the last
takeover.

The core bugs it found are kept as regression tests in tests/core/test_lifecycle_found.py
and tests/core/test_segments_found.py; one still open is excluded where it would fire,
with a comment naming its test.

``HYPOTHESIS_PROFILE=long`` (tests/conftest.py) runs many more examples locally.
"""

from __future__ import annotations

import sys
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
    Cancel,
    Claim,
    Command,
    Complete,
    CorruptState,
    DeleteObject,
    Effect,
    Fail,
    GetJob,
    Heartbeat,
    Job,
    JobStatus,
    ListDead,
    ListKeys,
    NewJob,
    Phase,
    Purge,
    Push,
    PushBatch,
    QueueCounts,
    ReadObject,
    Redrive,
    Release,
    Reply,
    RetryPolicy,
    WriteObject,
    decode_header,
)

from .harness import Outcome
from .model_basics import EPSILON, Delivery, RecordingStore, Timeline, leaving, ready_at
from .model_monitoring import MonitoringCheck
from .model_notices import NoticeAudit
from .model_reference import Reference
from .model_segments import (
    SegmentReader,
    Stored,
    audit_segments,
    core_round_trip,
    spilled_as_designed,
)
from .model_storage import check_archived, check_endings_stay, check_storage

TIMEOUT = 10.0
#: The owner lease of the examples that have one (``advance`` steps cross it).
LEASE = 6.0
QUEUES = ("default", "mail", "video")
CONFIG = BrokerConfig(
    heartbeat_timeout=TIMEOUT,
    max_batch_ops=3,
    # Small enough that backoff interacts with ``advance``; few attempts, so jobs die.
    retry=RetryPolicy(base=0.5, cap=4.0, max_attempts=3),
    queue_retry={"video": RetryPolicy(base=1.0, cap=2.0, max_attempts=2)},
    dead_retention=60.0,
    max_dead=4,
    # Longer than any run, whatever the wall clock does: keys are never forgotten.
    idempotency_retention=1e9,
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
CLAIM_QUEUES = [
    ("default",),
    ("default",),
    ("mail",),
    ("video",),
    ("default", "mail"),
    ("mail", "video"),
    ("video", "default", "mail"),
]
#: (delay, run-at relative to the wall clock at the push)
TIMINGS: list[tuple[float | None, float | None]] = [
    (None, None),
    (None, None),
    (None, None),
    (0.0, None),
    (0.4, None),
    (2.0, None),
    (15.0, None),
    (None, -5.0),
    (None, 1.0),
    (None, 7.0),
]
#: queue, priority, timing, key, max_attempts
JOB_OPTIONS = st.tuples(
    st.sampled_from(QUEUES),
    st.sampled_from([0, 0, 0, 1, 2, -1]),
    st.sampled_from(TIMINGS),
    st.sampled_from([None, None, None, "k1", "k2", "k3"]),
    st.sampled_from([None, None, None, 1, 2, 5]),
)
#: Whether a client rule delivers its broker's storage effects at once (successfully).
SETTLE = st.sampled_from([True, True, False])


def segment_options() -> st.SearchStrategy[dict[str, Any]]:
    """Spilling off, or on with tiny sizes (a spill every few pushes, a cache of a few
    segments) so that spills, drops, waiting commands and evictions happen within a
    few steps."""
    tiny = st.fixed_dictionaries(
        {
            "spill_jobs": st.sampled_from([2, 3, 5]),
            "segment_jobs": st.sampled_from([3, 8]),
            "segment_cache_bytes": st.sampled_from([1, 1500, 4000]),
            "read_ahead": st.sampled_from([0, 1, 2]),
        }
    )
    off: dict[str, Any] = {"spill_jobs": None}
    return st.sampled_from([False, True, True]).flatmap(lambda on: tiny if on else st.just(off))


@attrs.define
class Slot:
    """A live broker and its storage effects not yet delivered."""

    broker: Broker
    pending: list[Effect] = attrs.Factory(list)
    #: Segment keys whose read this broker was answered with damaged bytes: it must
    #: fail, or never reference them again (it may have dropped them meanwhile).
    damaged: set[str] = attrs.Factory(set)
    #: Its phase after the last input (a standby's lapse is checked when it leaves).
    phase: Phase | None = None
    #: Since when (model time) its takeover has been held back, if it is.
    held_since: float | None = None


class QueueModel(RuleBasedStateMachine):
    #: What the model drives (tests/core/test_model_mutants.py swaps in broken ones).
    broker_class: type[Broker] = Broker
    #: Spill in every example (True), never (False), or in two examples of three
    #: (None). tests/core/test_model_mutants.py runs its lifecycle mutants without
    #: spilling, as they were written, and its segment mutants with.
    spilling: bool | None = None
    #: Owner leases (and standbys) in every example (True), never (False), or in one
    #: of three (None).
    leases: bool | None = None

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.wall = 1_795_000_000.0
        self.config = CONFIG
        self.timeline = Timeline([self.wall])
        self.store = RecordingStore(moment=lambda: self.timeline.step)
        self.segments = SegmentReader(CONFIG.segment_prefix)
        #: The last stored state read (its bytes), and what it holds.
        self._read: tuple[bytes, Stored] | None = None
        #: Whether client rules that settle leave segment creates and reads pending.
        self.hold_segments = False
        self.segments_checked: set[str] = set()
        self.ref = Reference(self.config, self.timeline, self.store, lambda: self.now)
        self.monitoring = MonitoringCheck(self.config.state_key)
        self.slots: list[Slot] = []
        self.crashes = 0
        self.stops = 0
        self.request_ids = 0
        #: which broker (incarnation) each request went to, and the brokers that crashed
        self.sent_to: dict[int, Slot] = {}
        self.crashed: set[str] = set()
        #: The stored state's version, and since when (model time) it has not changed.
        self.state_since: tuple[int | None, float] = (None, self.now)
        self.notices = NoticeAudit(self.store, self.ref.requests, self._jobs_of)

    @initialize(
        linger=st.sampled_from([0.0, 0.0, 0.3]),
        segments=segment_options(),
        hold_segments=st.booleans(),
        lease=st.sampled_from([None, None, LEASE]),
    )
    def first_broker(
        self, linger: float, segments: dict[str, Any], hold_segments: bool, lease: float | None
    ) -> None:
        self.hold_segments = hold_segments
        if self.spilling is False:
            segments = {"spill_jobs": None}
        elif self.spilling and segments.get("spill_jobs") is None:
            segments = {
                "spill_jobs": 2,
                "segment_jobs": 3,
                "segment_cache_bytes": 1500,
                "read_ahead": 0,
            }
        if self.leases is not None:
            lease = LEASE if self.leases else None
        self.config = self.ref.config = attrs.evolve(
            CONFIG, linger=linger, owner_lease=lease, **segments
        )
        event(f"spilling: {segments.get('spill_jobs')}; lease: {lease}")
        self._start_broker()

    # -- plumbing --------------------------------------------------------------------

    def _set_wall(self, wall: float) -> None:
        self.wall = wall
        self.timeline.tick(wall)

    def _start_broker(self, standby: bool = False) -> None:
        self.ref.brokers_started += 1
        number = self.ref.brokers_started
        config = attrs.evolve(self.config, standby=True) if standby else self.config
        broker = self.broker_class(config, identity=f"b{number}", incarnation=str(number))
        self.ref.broker_started[broker.incarnation] = self.timeline.step
        self.slots.append(Slot(broker))
        broker.start(self.now, self.wall)
        self._collect(self.slots[-1])

    def _collect(self, slot: Slot) -> None:
        self._note_state_version()
        self._drain(slot)
        phase = slot.broker.phase
        if (
            slot.phase is Phase.STANDBY
            and phase is not Phase.STANDBY
            and phase is not Phase.STOPPED
        ):
            self._check_lapse(slot)
        slot.phase = phase
        if slot.broker.phase in (Phase.STOPPED, Phase.FAILED) and slot in self.slots:
            # A stopped or failed broker never writes again: it leaves the cluster.
            self.slots.remove(slot)

    def _drain(self, slot: Slot) -> None:
        self.timeline.tick(self.wall)
        for effect in slot.broker.take_effects():
            self.monitoring.emitted(slot.broker, effect)
            if isinstance(effect, Reply):
                self.ref.on_reply(effect)
            else:
                if isinstance(effect, WriteObject) and effect.key == self.config.state_key:
                    self.ref.emitted.setdefault(effect.data, self.timeline.step)
                    if slot.damaged:
                        refs = orjson.loads(effect.data).get("segments", ())
                        served = slot.damaged & {ref["key"] for ref in refs}
                        assert not served, f"a state written on damaged segments {served}"
                segment = isinstance(effect, WriteObject) and self.store.is_segment(effect.key)
                if segment and self._fenced(slot):
                    event("a fenced broker creates a segment")
                if isinstance(effect, DeleteObject):
                    self._check_delete(slot, effect)
                slot.pending.append(effect)
        self.notices.check(slot.broker)

    def _fenced(self, slot: Slot) -> bool:
        stored = self.store.get(self.config.state_key)
        owner = None if stored is None else decode_header(stored).owner
        return owner is not None and owner.incarnation != slot.broker.incarnation

    def _check_delete(self, slot: Slot, effect: DeleteObject) -> None:
        """A broker deletes segments only (whether the key may go yet is checked when
        the delete lands: RecordingStore), and never the foreign object found under a
        key of its own epoch (its abandoned spill: not its object)."""
        key = effect.key
        assert self.store.is_segment(key), f"a delete outside the segments: {key}"
        owner = slot.broker.owner
        if key in self.store.foreign and owner is not None:
            epoch = int(key.removeprefix(self.config.segment_prefix).split("-")[0])
            assert epoch != owner.epoch, (
                f"{key}: a broker deletes the foreign object under its own abandoned key"
            )
        if self._fenced(slot):
            event("a fenced broker deletes a segment")

    def _on_segments(self, effect: Effect) -> bool:
        """Whether ``effect`` works on segments: a create, read or delete of one, or a
        listing of the segment prefix (the sweep)."""
        if isinstance(effect, ListKeys):
            return self.store.is_segment(effect.prefix)
        return isinstance(effect, ReadObject | WriteObject | DeleteObject) and (
            self.store.is_segment(effect.key)
        )

    def _note_state_version(self) -> None:
        """When the stored state last changed, by the model's clock."""
        found = self.store.objects.get(self.config.state_key)
        version = None if found is None else found[1]
        if version != self.state_since[0]:
            self.state_since = (version, self.now)

    def _check_lapse(self, slot: Slot) -> None:
        """A standby began its takeover: the state must be absent, released, or unchanged
        for its owner's whole lease (the standby cannot have seen it change later)."""
        self._note_state_version()
        stored = self.store.get(self.config.state_key)
        event("a standby takes over")
        owner = decode_header(stored).owner if stored is not None else None
        lease = owner.lease if owner and owner.lease is not None else self.config.owner_lease
        assert lease is not None
        if slot.held_since is not None:
            # A hold delays a takeover by one lease after the held watch found the
            # lapse (which it cannot have found before the hold began).
            event("a held standby takes over anyway")
            waited = self.now - slot.held_since
            assert waited >= lease, f"a standby held {waited:g}s took over (lease {lease:g}s)"
        if owner is None:
            return
        quiet = self.now - self.state_since[1]
        needed = lease if owner.released or slot.held_since is None else 2 * lease
        held = "" if slot.held_since is None else " and the one more lease a hold adds"
        assert quiet >= needed or (owner.released and slot.held_since is None), (
            f"a standby took over from {owner.identity} (epoch {owner.epoch}) whose state "
            f"changed {quiet:g}s ago, within its {lease:g}s lease{held}"
        )

    def _submit(self, slot_index: int, make: Any, settle: bool = False) -> None:
        """Send the command ``make(request_id)``; with ``settle``, deliver every storage
        effect of its broker at once, successfully (so that runs get deep: jobs are
        pushed, claimed, failed, retried, dead and redriven, not only in flight)."""
        slot = self.slots[slot_index % len(self.slots)]
        self.timeline.tick(self.wall)
        self.request_ids += 1
        rid = self.request_ids
        command: Command = make(rid)
        self.ref.sent(rid, command)
        self.sent_to[rid] = slot
        self.monitoring.submitted(slot.broker, rid, command)
        slot.broker.submit(command, self.now, self.wall)
        self._collect(slot)
        if settle and slot in self.slots:
            self._settle(slot, but_segments=self.hold_segments)

    def _receive(self, slot: Slot, effect: Effect, outcome: Delivery = "ok") -> None:
        """Perform ``effect`` with ``outcome`` and hand the result to its broker."""
        result = self.store.execute(effect, outcome)
        self.monitoring.delivered(slot.broker, effect, result)
        slot.broker.receive(result, self.now, self.wall)

    def _live(self) -> bool:
        return bool(self.slots)

    def _holding(self) -> bool:
        return bool(self.slots and self.ref.holds)

    def _settle(self, slot: Slot, but_segments: bool = False) -> None:
        """Deliver ``slot``'s storage effects, successfully, until it issues no more
        (``but_segments``: leave its segment creates and reads pending, for
        ``deliver_segment`` and the other delivering rules)."""
        for _ in range(1000):
            ready = [
                i
                for i, effect in enumerate(slot.pending)
                if not (but_segments and self._on_segments(effect))
            ]
            if not ready:
                return
            self._receive(slot, slot.pending.pop(ready[0]))
            self._collect(slot)
        raise AssertionError(f"a broker keeps issuing storage operations: {slot.pending}")

    def open(self) -> list[int]:
        """Requests not answered yet, sent to a broker that is still alive."""
        return sorted(
            r
            for r, slot in self.sent_to.items()
            if r not in self.ref.answered and slot in self.slots
        )

    def _stored(self) -> Stored | None:
        """The stored state as the model reads it: inline jobs and the untouched jobs of
        its segments, read from the store (checked: tests/core/model_segments.py)."""
        data = self.store.get(self.config.state_key)
        if data is None:
            return None
        if self._read is None or self._read[0] != data:
            try:
                self._read = (data, self.segments.read_state(data, self.store.get))
            except CorruptState as error:
                raise AssertionError(f"the stored state does not parse: {error}") from error
        return self._read[1]

    def _stored_state(self) -> list[Job]:
        stored = self._stored()
        return [] if stored is None else stored.jobs

    def _jobs_of(self, data: bytes) -> list[Job]:
        """The jobs of a state version that landed some time ago, with the segments as
        their creators wrote them."""

        def fetch(key: str) -> bytes | None:
            created = self.store.created.get(key)
            return None if created is None else created[1]

        return self.segments.read_state(data, fetch).jobs

    # -- rules: clients --------------------------------------------------------------

    def _push(self, slot: int, settle: bool, data: bytes, options: Any) -> None:
        def make(rid: int) -> Push:
            job = self.ref.new_job(data, options, rid)
            return Push(rid, *attrs.astuple(job, recurse=False))

        self._submit(slot, make, settle)

    @precondition(_live)
    @rule(settle=SETTLE, slot=st.integers(0, 1), data=st.binary(max_size=4))
    def push(self, slot: int, settle: bool, data: bytes) -> None:
        """A push with the defaults: plain FIFO traffic in the default queue."""
        self._push(slot, settle, data, None)

    @precondition(_live)
    @rule(settle=SETTLE, slot=st.integers(0, 1), data=st.binary(max_size=2), options=JOB_OPTIONS)
    def push_with_options(
        self, slot: int, settle: bool, data: bytes, options: tuple[Any, ...]
    ) -> None:
        self._push(slot, settle, data, options)

    @precondition(_live)
    @rule(
        settle=SETTLE,
        slot=st.integers(0, 1),
        items=st.lists(st.tuples(st.binary(max_size=2), st.none() | JOB_OPTIONS), max_size=3),
        same_key=st.booleans(),
    )
    def push_batch(
        self,
        slot: int,
        settle: bool,
        items: list[tuple[bytes, tuple[Any, ...] | None]],
        same_key: bool,
    ) -> None:
        if same_key and len(items) >= 2 and items[0][1] is not None:
            # A key repeated inside one batch: one job, both items answered with its id.
            queue, _, _, _, _ = items[0][1]
            items = [
                (data, (queue, 0, (None, None), "k1", None) if i < 2 else options)
                for i, (data, options) in enumerate(items)
            ]

        def make(rid: int) -> PushBatch:
            jobs = [self.ref.new_job(data, options, rid) for data, options in items]
            return PushBatch(
                rid, tuple(job if job != NewJob(job.payload) else job.payload for job in jobs)
            )

        self._submit(slot, make, settle)

    @precondition(_live)
    @rule(
        settle=SETTLE,
        slot=st.integers(0, 1),
        worker=st.sampled_from(WORKERS),
        wait=st.sampled_from([0, 0, 3, 30]),
        queues=st.sampled_from(CLAIM_QUEUES),
    )
    def claim(
        self, slot: int, settle: bool, worker: str, wait: float, queues: tuple[str, ...]
    ) -> None:
        self._submit(slot, lambda rid: Claim(rid, worker, wait, queues), settle)

    @precondition(_live)
    @rule(
        settle=SETTLE,
        slot=st.integers(0, 1),
        worker=st.sampled_from(WORKERS),
        wait=st.sampled_from([0, 3]),
        queues=st.sampled_from(CLAIM_QUEUES),
        count=st.integers(2, 3),
    )
    def claim_many(
        self, slot: int, settle: bool, worker: str, wait: float, queues: tuple[str, ...], count: int
    ) -> None:
        self._submit(slot, lambda rid: Claim(rid, worker, wait, queues, count), settle)

    @precondition(lambda self: any(isinstance(self.ref.requests[r][0], Claim) for r in self.open()))
    @rule(pick=st.integers(0, 100))
    def cancel_claim(self, pick: int) -> None:
        claims = [r for r in self.open() if isinstance(self.ref.requests[r][0], Claim)]
        rid = claims[pick % len(claims)]
        slot = self.sent_to[rid]
        # A cancelled claim may give back a job older than ones already granted to
        # later claims whose replies are still held, or keep one (taken back only in
        # memory, when a successor takes over first) that a push still on its way
        # made: what was known ready is unknown now, for those pushes too.
        self.ref.uncertain()
        self.ref.cancelled_claims.add(rid)
        if slot in self.slots:
            slot.broker.cancel_claim(rid, self.now, self.wall)
            self._collect(slot)

    @precondition(_holding)
    @rule(settle=SETTLE, slot=st.integers(0, 1), pick=st.integers(0, 100), honest=st.booleans())
    def heartbeat(self, slot: int, settle: bool, pick: int, honest: bool) -> None:
        job_id, worker = self.ref.held(pick)
        worker = worker if honest else "intruder"
        self._submit(slot, lambda rid: Heartbeat(rid, job_id, worker), settle)

    @precondition(_holding)
    @rule(
        settle=SETTLE,
        slot=st.integers(0, 1),
        pick=st.integers(0, 100),
        result=st.sampled_from([None, b"r1", b"r2"]),
    )
    def complete(self, slot: int, settle: bool, pick: int, result: bytes | None) -> None:
        job_id, worker = self.ref.held(pick)
        self.ref.relinquishing(job_id, worker)
        self.ref.complete_sent(job_id, result)
        self._submit(slot, lambda rid: Complete(rid, job_id, worker, result), settle)

    def _fail(self, slot: int, settle: bool, pick: int, requeue: bool) -> None:
        job_id, worker = self.ref.held(pick)
        self.ref.relinquishing(job_id, worker)

        def make(rid: int) -> Fail:
            self.ref.fail_sent(rid, job_id, worker, requeue)
            return Fail(rid, job_id, worker, "boom", requeue)

        self._submit(slot, make, settle)

    @precondition(_holding)
    @rule(settle=SETTLE, slot=st.integers(0, 1), pick=st.integers(0, 100))
    def fail(self, slot: int, settle: bool, pick: int) -> None:
        """This attempt failed: retry after the backoff (or dead, out of attempts)."""
        self._fail(slot, settle, pick, requeue=True)

    @precondition(_holding)
    @rule(settle=SETTLE, slot=st.integers(0, 1), pick=st.integers(0, 100))
    def give_up(self, slot: int, settle: bool, pick: int) -> None:
        """Fail without retry: a dead letter at once (or cancelled, if asked)."""
        self._fail(slot, settle, pick, requeue=False)

    @precondition(_holding)
    @rule(settle=SETTLE, slot=st.integers(0, 1), pick=st.integers(0, 100))
    def release(self, slot: int, settle: bool, pick: int) -> None:
        job_id, worker = self.ref.held(pick)
        self.ref.relinquishing(job_id, worker)
        self._submit(slot, lambda rid: Release(rid, job_id, worker), settle)

    @precondition(_live)
    @rule(settle=SETTLE, slot=st.integers(0, 1), pick=st.integers(0, 1000))
    def cancel(self, slot: int, settle: bool, pick: int) -> None:
        ids = self.ref.job_ids()
        job_id = ids[pick % len(ids)]

        def make(rid: int) -> Cancel:
            self.ref.cancel_sent(rid, job_id)
            return Cancel(rid, job_id)

        self._submit(slot, make, settle)

    @precondition(_live)
    @rule(settle=SETTLE, slot=st.integers(0, 1), pick=st.integers(0, 1000))
    def get(self, slot: int, settle: bool, pick: int) -> None:
        ids = self.ref.job_ids()
        job_id = ids[pick % len(ids)]
        self._submit(slot, lambda rid: GetJob(rid, job_id), settle)

    @precondition(_live)
    @rule(
        settle=SETTLE,
        slot=st.integers(0, 1),
        queue=st.sampled_from([None, *QUEUES]),
        limit=st.sampled_from([1, 2, 100]),
        after=st.none() | st.integers(0, 100),
    )
    def list_dead(
        self, slot: int, settle: bool, queue: str | None, limit: int, after: int | None
    ) -> None:
        dead = sorted(self.ref.known_dead)
        after_id = dead[after % len(dead)] if after is not None and dead else None
        self._submit(slot, lambda rid: ListDead(rid, queue, limit, after_id), settle)

    def _selection(
        self, queue: str | None, picks: list[int], dead_only: bool
    ) -> tuple[tuple[str, ...], str | None]:
        if queue is not None:
            return (), queue
        known_dead = self.ref.known_dead
        pool = sorted(known_dead) if dead_only and known_dead else self.ref.job_ids()
        return tuple(pool[p % len(pool)] for p in picks), None

    @precondition(_live)
    @rule(
        settle=SETTLE,
        slot=st.integers(0, 1),
        queue=st.none() | st.sampled_from(QUEUES),
        picks=st.lists(st.integers(0, 1000), min_size=1, max_size=2),
        dead_only=st.booleans(),
    )
    def redrive(
        self, slot: int, settle: bool, queue: str | None, picks: list[int], dead_only: bool
    ) -> None:
        job_ids, queue = self._selection(queue, picks, dead_only)

        def make(rid: int) -> Redrive:
            command = Redrive(rid, job_ids, queue)
            self.ref.redrive_sent(rid, command)
            return command

        self._submit(slot, make, settle)

    @precondition(_live)
    @rule(
        settle=SETTLE,
        slot=st.integers(0, 1),
        queue=st.none() | st.sampled_from(QUEUES),
        picks=st.lists(st.integers(0, 1000), min_size=1, max_size=2),
        dead_only=st.booleans(),
    )
    def purge(
        self, slot: int, settle: bool, queue: str | None, picks: list[int], dead_only: bool
    ) -> None:
        job_ids, queue = self._selection(queue, picks, dead_only)

        def make(rid: int) -> Purge:
            command = Purge(rid, job_ids, queue)
            self.ref.purge_sent(rid, command)
            return command

        self._submit(slot, make, settle)

    # -- rules: time, storage, brokers ------------------------------------------------

    @rule(seconds=st.sampled_from([0.05, 0.5, 1.0, 3.0, 6.0, 11.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds
        self._set_wall(self.wall + seconds)
        for slot in list(self.slots):
            slot.broker.tick(self.now, self.wall)
            self._collect(slot)

    @rule(step=st.sampled_from([-86_400.0, -3600.0, -1.0, 1.0, 3600.0, 86_400.0]))
    def step_wall_clock(self, step: float) -> None:
        """NTP (or an operator) steps the wall clock: timers must not notice."""
        self._set_wall(self.wall + step)

    def _windows(self) -> list[tuple[float, float]]:
        """The due ranges of the stored state's segments that begin before the wall
        clock's time (a step back can reach them)."""
        stored = self._stored()
        refs = [] if stored is None else stored.refs
        return [ref.due for ref in refs if ref.due is not None and ref.due[0] - 1.0 < self.wall]

    @precondition(lambda self: bool(self._windows()))
    @rule(
        pick=st.integers(0, 100),
        where=st.sampled_from([-1.0, 0.0, 0.5, 1.0]),
        successor=st.booleans(),
    )
    def step_wall_into_a_window(self, pick: int, where: float, successor: bool) -> None:
        """The wall clock steps back across a stored segment's due range, to before it,
        its start, its middle or just before its end: a broker that saw its jobs due
        may serve them (as inline jobs), one that did not must wait for its own clock;
        with ``successor``, a broker starts now, its clock behind the segment's end (it
        treats the segment as in its window: exact, never early)."""
        windows = self._windows()
        low, high = windows[pick % len(windows)]
        target = low - 1.0 if where < 0 else low + where * (high - low)
        if where == 1.0:
            target = high - 0.001
        if target >= self.wall:
            return
        event(f"wall stepped back into a due window ({where})")
        self._set_wall(target)
        if successor and len(self.slots) < 2:
            event("a broker starts with its wall clock inside a due window")
            self._start_broker()

    @precondition(lambda self: any(s.pending for s in self.slots))
    @rule(slot=st.integers(0, 1), pick=st.integers(0, 100), outcome=st.sampled_from(OUTCOMES))
    def deliver(self, slot: int, pick: int, outcome: Outcome) -> None:
        candidates = [s for s in self.slots if s.pending]
        chosen = candidates[slot % len(candidates)]
        effect = chosen.pending.pop(pick % len(chosen.pending))
        segment = " (segment)" if self._on_segments(effect) else ""
        event(f"deliver {type(effect).__name__}{segment}: {outcome}")
        self._receive(chosen, effect, outcome)
        self._collect(chosen)

    @precondition(lambda self: bool(self.store.late))
    @rule(pick=st.integers(0, 100))
    def land_late(self, pick: int) -> None:
        """A write its broker gave up on (a timeout) reaches the store after all."""
        result = self.store.land_late(pick % len(self.store.late))
        event(f"late write: {type(result).__name__}")
        # A late write may carry a grant to a claim not answered yet (or taken back
        # since): what was known ready is unknown now.
        self.ref.uncertain()

    def _segment_effects(self) -> list[tuple[Slot, int]]:
        return [
            (slot, index)
            for slot in self.slots
            for index, effect in enumerate(slot.pending)
            if self._on_segments(effect)
        ]

    @precondition(lambda self: bool(self._segment_effects()))
    @rule(pick=st.integers(0, 100), outcome=st.sampled_from([*OUTCOMES[5:], "absent", "damaged"]))
    def deliver_segment(self, pick: int, outcome: Delivery) -> None:
        """A segment create or read, with a fault more often than not. A create that
        conflicts finds a foreign object planted under its key (the broker must read it
        back and abandon the key). A read may be answered "absent" although the object
        is there, or with one byte changed: the broker must fail (CorruptState,
        SegmentMissing, or BrokerReplaced once it reads the state), never serve or write
        on it."""
        effects = self._segment_effects()
        slot, index = effects[pick % len(effects)]
        effect = slot.pending.pop(index)
        if not isinstance(effect, ReadObject) and outcome in ("absent", "damaged"):
            outcome = "ok"
        event(f"deliver segment {type(effect).__name__}: {outcome}")
        self._receive(slot, effect, outcome)
        if outcome == "damaged" and effect.key in self.store.objects:
            if slot.broker.phase is Phase.FAILED:
                assert isinstance(slot.broker.failure, CorruptState), slot.broker.failure
            else:
                slot.damaged.add(effect.key)
        self._collect(slot)

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
        if self._spilling(victim):
            event(f"crash with a segment operation in flight (landed: {landed})")
        # A claim may have landed unacknowledged (or been handed back only in memory).
        self.ref.uncertain()
        if landed:
            # Its writes (and deletes) in flight reach the store, but nobody hears back.
            for effect in victim.pending:
                if isinstance(effect, WriteObject):
                    self.store.write(effect)
                elif isinstance(effect, DeleteObject):
                    self.store.delete(effect)

    @precondition(lambda self: len(self.slots) < 2)
    @rule(standby=st.booleans())
    def start_broker(self, standby: bool) -> None:
        if any(self._spilling(slot) for slot in self.slots):
            event("a second broker starts while a segment operation is in flight")
        standby = standby and self.config.owner_lease is not None
        if standby:
            event("a standby starts")
        self._start_broker(standby)

    def _spilling(self, slot: Slot) -> bool:
        """Whether ``slot`` has a segment create or read not delivered yet."""
        return any(self._on_segments(effect) for effect in slot.pending)

    @precondition(lambda self: any(slot.broker.config.standby for slot in self.slots))
    @rule(slot=st.integers(0, 1), held=st.sampled_from([True, True, False]))
    def hold_takeover(self, slot: int, held: bool) -> None:
        """A group member holds (or lets go of) a standby's takeover: held, the standby
        takes over only a lease after it found the lapse (``_check_lapse``)."""
        chosen = self.slots[slot % len(self.slots)]
        if held and chosen.held_since is None:
            chosen.held_since = self.now
        elif not held:
            chosen.held_since = None
        event(f"hold a standby: {held}")
        chosen.broker.hold_takeover(held, self.now, self.wall)
        self._collect(chosen)

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
    def monitoring_counts_what_happened(self) -> None:
        for slot in self.slots:
            self.monitoring.check(slot.broker)

    @invariant()
    def stored_state_parses_and_round_trips(self) -> None:
        self.ref.rules_run += 1
        data = self.store.get(self.config.state_key)
        if data is None:
            return
        self._stored_state()  # parses, or fails saying why
        core_round_trip(data, self.store.get)

    @invariant()
    def segments_are_sound(self) -> None:
        """The stored state's refs name existing, matching segments and every job is in
        one place (checked when read); every segment a broker created holds either only
        jobs with a due time or only jobs without one."""
        self._stored()
        for key, (_, data) in self.store.created.items():
            if key not in self.segments_checked:
                self.segments_checked.add(key)
                segment = self.segments.segment(data)
                spilled_as_designed(segment)
                if any(job.retry_at is not None or job.born.run_at for job in segment.records):
                    event("a segment of jobs with a due time")

    @invariant()
    def storage_holds_exactly_what_was_pushed(self) -> None:
        check_storage(self.ref, self._stored_state())

    @invariant()
    def acknowledged_endings_stay(self) -> None:
        check_endings_stay(self.ref, self._stored_state())

    def teardown(self) -> None:
        """Let the dust settle: every request answered unless its broker crashed; then,
        on a fresh broker, every acknowledged ending archived exactly once, and every
        change in the state's history allowed."""
        if sys.exc_info()[0] is not None:
            # A check failed (Hypothesis tears down in a ``finally``): replies after it
            # were lost, so settling would only fail again and hide the first failure.
            return

        def unanswered() -> list[int]:
            return [
                rid
                for rid, slot in self.sent_to.items()
                if rid not in self.ref.answered and slot.broker.incarnation not in self.crashed
            ]

        for _ in range(50):  # retries wait for their backoff: let time pass too
            for slot in list(self.slots):
                self._settle(slot)
            if not unanswered():
                break
            self.now += TIMEOUT + 1
            self._set_wall(self.wall + TIMEOUT + 1)
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
            # Until every lease has run out and every finished job is archived (a write
            # may linger: time must pass for it too).
            self._settle(slot)
            stats = slot.broker.stats()
            stored = self._stored_state()
            busy = any(leaving(job) or job.status is JobStatus.CLAIMED for job in stored)
            if not (slot.pending or stats.claimed or stats.finished_pending_archive or busy):
                break
            if not any(isinstance(e, WriteObject | ReadObject) for e in slot.pending):
                self.now += TIMEOUT + 1
                slot.broker.tick(self.now, self.wall)
                self._collect(slot)
        assert slot.broker.phase is Phase.RUNNING, slot.broker.failure
        self.ref.events()
        check_storage(self.ref, self._stored_state())
        check_archived(self.ref, self._stored_state(), self._jobs_of)
        self._audit_segments()
        self._check_settled_segments(slot)

    def _check_settled_segments(self, slot: Slot) -> None:
        """Once the last broker is idle (its head is what is stored): it holds no
        ``Job`` for an untouched job (its inline count is the stored one), its counts
        of refs and untouched jobs are the stored ones, and the jobs a spill could move
        are fewer than ``spill_jobs``."""
        for _ in range(3):  # a linger, a gather or a spill's backoff may still be due
            self.now += 1.0
            slot.broker.tick(self.now, self.wall)
            self._collect(slot)
            self._settle(slot)
        stored = self._stored()
        assert stored is not None
        stats = slot.broker.stats()
        assert (stats.segments, stats.untouched) == (len(stored.refs), len(stored.places)), (
            f"the broker counts {stats.segments} refs and {stats.untouched} untouched jobs; "
            f"storage holds {len(stored.refs)} and {len(stored.places)}"
        )
        keyed = sum(job.born.key is not None for job in stored.jobs if job.id in stored.places)
        assert stats.key_index_complete, "the key index is still not read, settled"
        assert stats.untouched_keyed == keyed, (
            f"the key index holds {stats.untouched_keyed} keys; storage {keyed} untouched keyed"
        )
        held = [job_id for job_id in stored.places if slot.broker.job(job_id) is not None]
        assert not held, f"the broker holds a Job for untouched {held}"
        inline = (
            stats.ready
            - stats.untouched
            + stats.delayed
            + stats.claimed
            + stats.dead
            + stats.finished_pending_archive
        )
        assert inline == len(stored.inline), f"{inline} jobs in memory, {len(stored.inline)} inline"
        self._check_settled_counts(stats.queues, stored.jobs)
        if self.config.spill_jobs is not None:
            spillable = [job.id for job in stored.inline if job.status is JobStatus.READY]
            assert len(spillable) < self.config.spill_jobs, f"never spilled: {spillable}"
        # Dropped, never attached and orphaned segments are gone: deleted by their
        # brokers, or swept by this last broker's takeover (every earlier broker's epoch
        # is at most its predecessor's).
        garbage = set(self.store.keys(self.config.segment_prefix)) - {r.key for r in stored.refs}
        assert not garbage, f"segments nothing references are left: {sorted(garbage)}"
        assert stats.segment_deletes_pending == 0, stats
        event(f"untouched at the end: {min(len(stored.places), 3)}, keyed: {min(keyed, 2)}")
        event(f"spills: {min(stats.spills, 3)}, abandoned: {min(stats.spills_abandoned, 1)}")
        event(f"swept by the last takeover: {min(stats.swept, 2)}")
        deleted = len(self.store.deleted)
        event(f"segments deleted: {'0' if not deleted else '1-4' if deleted < 5 else '5+'}")

    def _check_settled_counts(self, queues: tuple[QueueCounts, ...], jobs: list[Job]) -> None:
        """The last broker saw only the current wall clock: its ready and delayed counts
        per queue are exactly storage's judged by it, untouched jobs included, and its
        oldest ready-since never makes a queue look younger than it is."""
        wall = self.wall
        expected: dict[str, tuple[int, int, float | None]] = {}
        for job in jobs:
            if job.status is not JobStatus.READY:
                continue
            due_at = ready_at(job)
            due = due_at is None or due_at <= wall
            ready, delayed, since = expected.get(job.born.queue, (0, 0, None))
            if due:
                mine = job.born.created_at if due_at is None else max(due_at, job.born.created_at)
                since = mine if since is None else min(since, mine)
            expected[job.born.queue] = (ready + due, delayed + (not due), since)
        counted = {q.queue: (q.ready, q.delayed) for q in queues if q.ready or q.delayed}
        assert counted == {q: (r, d) for q, (r, d, _) in expected.items()}, (
            f"the broker counts {counted} ready and delayed jobs; storage holds {expected}"
        )
        for counts in queues:
            since = expected.get(counts.queue, (0, 0, None))[2]
            if since is None:
                assert counts.oldest_ready_since is None, counts
            else:
                assert counts.oldest_ready_since is not None, counts
                assert counts.oldest_ready_since <= since + EPSILON, (counts, since)
        event(f"delayed at the end: {min(sum(d for _, d, _ in expected.values()), 3)}")

    def _audit_segments(self) -> None:
        """Every version that landed, read with its segments: refs attached only once
        known durable; jobs that only moved keep their records; all-left refs dropped."""
        fetch = self.store.created
        versions = [
            (
                self.ref.emitted[data],
                self.segments.read_state(data, lambda key: fetch[key][1] if key in fetch else None),
                landed,
            )
            for landed, data in self.store.states
        ]
        audit_segments(versions, self.store.known)
        refs = sum(len(stored.refs) for _, stored, _ in versions)
        event(f"segments created: {min(len(self.store.created), 5)}")
        event(f"refs over all versions: {'0' if not refs else '1-9' if refs < 10 else '10+'}")


TestQueueModel = QueueModel.TestCase
# Long enough runs for work to get through a hostile store (CI: ~25 s).
TestQueueModel.settings = settings(
    TestQueueModel.settings,
    max_examples=2 * TestQueueModel.settings.max_examples,
    stateful_step_count=80,
)
