"""The model test catches the bugs it is for: it is run against deliberately broken
brokers and must fail on every one, with the assertion meant for that bug.

Two kinds of mutants:

* brokers built from the public API only, which add or split work behind the model's
  back (before hardening item 12, a change that added an extra, unacknowledged job on
  every push passed the model test; only unit tests caught it);
* one lifecycle rule of the core replaced for the duration of the test (pytest's
  ``monkeypatch``), each the smallest change that breaks one rule of
  docs/lifecycle.md: priorities ignored, run-at ignored, backoff ignored, a key not
  honoured, a release counted as an attempt, a purge by queue taking every queue's
  dead letters; and one of the notices for the logs (osqueue_core/notices.py): a commit
  noticed before it lands, job notices stamped a revision early, every failure noticed
  as a dead letter.

The segment rules (attaching too early or blindly, a claim without its left bit, a
cursor skipping a job, due windows, the key index, a segment deleted before the write
dropping it is known landed, a sweep deleting a referenced or a current-epoch key, the
foreign object under an abandoned spill's key deleted) and the hand-written fast paths
(the job codec of ``osqueue_core.job_json``, the table's default-id check) are broken
the same way, with spilling on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

from osqueue_core import (
    Broker,
    BrokerNotRunning,
    Effect,
    Failed,
    Job,
    JobDead,
    Push,
    PushBatch,
    PushedBatch,
    Reply,
    RetryPolicy,
    StorageFailed,
    StorageResult,
    codec,
    commit,
    fragments,
    rules,
    segment_sweep,
    segments,
    spill,
    standby,
    table,
)
from osqueue_core.batch import PendingWrite
from osqueue_core.commit import CommitProtocol
from osqueue_core.notices import Notices
from osqueue_core.segment_deletes import SegmentDeleter
from osqueue_core.segment_windows import DueWindows
from osqueue_core.segments import Entry, SegmentIndex
from osqueue_core.spill import Spiller
from osqueue_core.table import JobTable
from osqueue_core.transitions import Transitions

from .test_model import QueueModel


class LifecycleModel(QueueModel):
    """The model as the lifecycle mutants were written for: no segments."""

    spilling = False


QUICK = settings(
    max_examples=1000,  # a run stops at its first failure: this costs only when one is slow
    stateful_step_count=80,
    phases=[Phase.generate],  # a failure is enough; no need to shrink it
    database=None,
    # The same examples on every run: a mutant caught once is caught every time, never
    # missed by an unlucky draw (one was, now and then, within 1000 random examples).
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@contextmanager
def examples_of_their_own() -> Iterator[None]:
    """Derandomized runs inside draw the same examples whatever this process imported.

    Hypothesis mixes into what it draws (one draw in 20) constants found in the
    source of every local module in ``sys.modules``: in the whole suite, with
    ``osqueue_io`` and every test module imported, a mutant's run drew other examples
    than alone (``encoder drops attempts``: caught in 28 s there, in 2.4 s alone). Its
    pool of local constants is empty in here, and its cache of them (keyed by
    constraints, not by pool) emptied on the way in and out. These are Hypothesis's
    internals (6.170): where a later version moved them, the runs go on as before,
    derandomized but drawing from whatever was imported (slower, never wrong)."""
    try:
        from hypothesis.internal.conjecture import providers
        from hypothesis.internal.constants_ast import Constants
    except ImportError:
        providers = Constants = None
    local_constants = getattr(providers, "_get_local_constants", None)
    cache = getattr(getattr(providers, "CONSTANTS_CACHE", None), "cache", None)
    if local_constants is None or cache is None or Constants is None:
        yield
        return
    none = Constants()
    cache.clear()
    providers._get_local_constants = lambda: none
    try:
        yield
    finally:
        providers._get_local_constants = local_constants
        cache.clear()


def run_derandomized(machine: type[RuleBasedStateMachine], run: settings = QUICK) -> None:
    """Run the model ``machine`` with ``run`` (derandomized): its examples depend on
    the model's code only, never on what ran before in the process."""
    assert run.derandomize
    with examples_of_their_own():
        run_state_machine_as_test(machine, settings=run)


def assert_caught(
    machine: type[RuleBasedStateMachine], catches: str, run: settings = QUICK
) -> None:
    """The model test fails on ``machine`` (a mutant) with a message matching
    ``catches``."""
    try:
        run_derandomized(machine, run)
    except (AssertionError, IndexError) as error:
        # IndexError: the core tripping over its own broken cursor.
        message = str(error)
    else:
        pytest.fail(f"the model test passed on the mutant (expected {catches!r})")
    assert re.search(catches, message), message


class Mutant(Broker):
    """A broker that also submits commands of its own and hides their replies."""

    def take_effects(self) -> list[Effect]:
        return [
            e
            for e in super().take_effects()
            if not (isinstance(e, Reply) and isinstance(e.request_id, tuple))
        ]


class DoubleApply(Mutant):
    """Every push is applied twice: the second job is never acknowledged."""

    def submit(self, command: Any, now: float, wall: float | None = None) -> None:
        super().submit(command, now, wall)
        if isinstance(command, Push):
            super().submit(
                attrs.evolve(command, request_id=("again", command.request_id)), now, wall
            )


class HalfBatch(Mutant):
    """A batch lands in two writes: half of it may land without the rest. Its reply
    still names every job, so only the batch's atomicity is broken."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first_halves: dict[object, PushedBatch | None] = {}

    def submit(self, command: Any, now: float, wall: float | None = None) -> None:
        if isinstance(command, PushBatch) and len(command.payloads) > 1:
            half = len(command.payloads) // 2
            hidden = PushBatch(("first half", command.request_id), command.payloads[:half])
            super().submit(hidden, now, wall)
            self.tick(now, wall)  # let the first half go out on its own
            command = PushBatch(command.request_id, command.payloads[half:])
        super().submit(command, now, wall)

    def take_effects(self) -> list[Effect]:
        effects: list[Effect] = []
        for effect in Broker.take_effects(self):
            if not isinstance(effect, Reply):
                effects.append(effect)
            elif isinstance(effect.request_id, tuple):
                result = effect.result
                first = result if isinstance(result, PushedBatch) else None
                self.first_halves[effect.request_id[1]] = first
            elif effect.request_id in self.first_halves and isinstance(effect.result, PushedBatch):
                first = self.first_halves.pop(effect.request_id)
                if first is None:  # the first half failed: so does the whole, to its caller
                    effects.append(Reply(effect.request_id, error=BrokerNotRunning("mutant")))
                else:
                    effects.append(Reply(effect.request_id, _joined(first, effect.result)))
            else:
                effects.append(effect)
        return effects


def _joined(first: PushedBatch, second: PushedBatch) -> PushedBatch:
    """One reply for both halves, as if they had been one batch."""
    existing = [
        *(first.existing or (False,) * len(first.job_ids)),
        *(second.existing or (False,) * len(second.job_ids)),
    ]
    flags = tuple(existing) if any(existing) else ()
    return PushedBatch(first.job_ids + second.job_ids, flags)


#: The checks of jobs known ready (acknowledged, never handed out since): a job handed
#: out before anybody was told it exists breaks what they know.
KNOWN_READY = r"were due|^ready |a release counted"


@pytest.mark.parametrize(
    ("mutant", "catches"),
    [
        (DoubleApply, r"one push"),
        # A half batch in storage; or its reply misnaming jobs; or its first half
        # handed out (to a waiting claim) before the batch's reply: the model then knows
        # it as ready although it was claimed, failed, even dead.
        (HalfBatch, r"landed in part|holds (a|another) payload|for two pushes|" + KNOWN_READY),
    ],
)
def test_the_model_test_fails_on_a_broken_broker(mutant: type[Broker], catches: str) -> None:
    machine = type(f"{mutant.__name__}Model", (LifecycleModel,), {"broker_class": mutant})
    assert_caught(machine, catches)


# -- lifecycle rules broken one at a time ------------------------------------------------


def _oldest_due(self: JobTable, queues: Iterable[str]) -> Job | None:
    """``JobTable.best_ready`` without priorities: the oldest due job of the queues."""
    due = [
        self._jobs[job_id]
        for name in queues
        if (queue := self._queues.get(name)) is not None
        for job_id in queue.ready_ids
    ]
    return min(due, key=lambda job: job.seq, default=None)


def _release_counting(
    original: Callable[..., None],
) -> Callable[..., None]:
    """``Transitions.requeue`` keeping the attempts it is asked to take back (only a
    release asks): the released claim counts."""

    def requeue(self: Transitions, job: Job, attempts: int, *args: Any, **kwargs: Any) -> None:
        original(self, job, job.attempts, *args, **kwargs)

    return requeue


def _purge_every_queue(
    original: Callable[..., list[Job]],
) -> Callable[..., list[Job]]:
    """``select_dead`` (as the rules call it) ignoring the queue it is given: a purge
    (or redrive) of one queue takes every queue's dead letters."""

    def select(table: JobTable, job_ids: tuple[str, ...], queue: str | None) -> list[Job]:
        if queue is None:
            return original(table, job_ids, queue)
        return list(table.dead_letters(None))

    return select


def _noticed_when_issued(original: Callable[..., None]) -> Callable[..., None]:
    """``CommitProtocol._issue_write`` reporting the commit as it sends the write,
    before it has landed (the log would say "committed" for a write that may never)."""

    def issue(self: CommitProtocol, write: PendingWrite) -> None:
        self._notice_landed(write)
        original(self, write)

    return issue


def _noticed_a_revision_early(original: Callable[..., None]) -> Callable[..., None]:
    """``Notices.landed`` stamping a batch's job notices with the revision before the
    one that made them durable."""

    def landed(self: Notices, notices: list[Any], epoch: int, revision: int) -> None:
        original(self, notices, epoch, revision - 1)

    return landed


def _every_failure_dead(original: Callable[..., Failed]) -> Callable[..., Failed]:
    """``Transitions.give_up`` noticing every failed attempt as a dead letter, retried
    or not."""

    def give_up(
        self: Transitions, job: Job, reason: str, retry: bool, batch: Any, *key: int
    ) -> Failed:
        outcome = original(self, job, reason, retry, batch, *key)
        if not outcome.dead:
            batch.notices.append(JobDead(job.id, job.queue, reason, job.attempts))
        return outcome

    return give_up


@attrs.frozen
class RuleMutant:
    """``target.attribute`` replaced by ``replace(original)``; the model must fail with
    an assertion matching ``catches``."""

    name: str
    target: object
    attribute: str
    replace: Callable[[Any], Any]
    catches: str


RULE_MUTANTS = [
    RuleMutant(
        "priority ignored",
        JobTable,
        "best_ready",
        lambda _: _oldest_due,
        r"while better .* were due|not best first",
    ),
    RuleMutant(
        "run-at ignored",
        Job,
        "ready_at",
        lambda _: property(lambda job: job.retry_at),
        # Or counted ready while not due yet.
        r"claimed before its run-at|the broker counts",
    ),
    RuleMutant(
        "backoff ignored",
        RetryPolicy,
        "delay",
        lambda _: lambda policy, job_id, attempts: 0.0,
        r"retried at .*: not a wall clock",
    ),
    RuleMutant(
        "key not honoured",
        JobTable,
        "by_key",
        lambda _: lambda table, queue, key: None,
        r"two jobs with key|made a second job|its key is also another job's",
    ),
    RuleMutant(
        "release counts an attempt",
        Transitions,
        "requeue",
        _release_counting,
        r"a release counted|claimed for attempt",
    ),
    RuleMutant(
        "purge by queue takes every queue",
        rules,
        "select_dead",
        _purge_every_queue,
        r"of queue .* took",
    ),
    RuleMutant(
        "a commit noticed before it lands",
        CommitProtocol,
        "_issue_write",
        _noticed_when_issued,
        r"has landed no state|after revision",
    ),
    RuleMutant(
        "job notices a revision early",
        Notices,
        "landed",
        _noticed_a_revision_early,
        r"has landed no state|does not carry the job|still holds that attempt|but the job is",
    ),
    RuleMutant(
        "every failure noticed as a dead letter",
        Transitions,
        "give_up",
        _every_failure_dead,
        r"but the job is",
    ),
]


# -- monitoring counters broken one at a time -----------------------------------------------


def _uncounted_deaths(original: Callable[..., None]) -> Callable[..., None]:
    """``Transitions.die`` that leaves the death out of its batch's tally."""

    def die(self: Transitions, job: Job, reason: str, batch: Any, *args: Any) -> None:
        original(self, job, reason, batch, *args)
        batch.tally.dead_letters -= 1

    return die


def _uncounted_unknowns(original: Callable[..., None]) -> Callable[..., None]:
    """``CommitProtocol._on_write`` that does not count a write of unknown outcome."""

    def on_write(self: commit.CommitProtocol, write: Any, result: Any) -> None:
        original(self, write, result)
        if isinstance(result, StorageFailed):
            self.counters.unknown_outcomes -= 1

    return on_write


MONITORING_MUTANTS = [
    RuleMutant(
        "dead letters not counted",
        Transitions,
        "die",
        _uncounted_deaths,
        r"acknowledged \d+ failed attempts",
    ),
    RuleMutant(
        "unknown outcomes not counted",
        commit.CommitProtocol,
        "_on_write",
        _uncounted_unknowns,
        r"unknown_outcomes; the model delivered",
    ),
]


@pytest.mark.parametrize("mutant", [*RULE_MUTANTS, *MONITORING_MUTANTS], ids=lambda m: m.name)
def test_the_model_test_fails_on_a_broken_rule(
    mutant: RuleMutant, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = getattr(mutant.target, mutant.attribute)
    monkeypatch.setattr(mutant.target, mutant.attribute, mutant.replace(original))
    assert_caught(LifecycleModel, mutant.catches)


# -- segments broken one at a time -----------------------------------------------


class SpillingModel(QueueModel):
    spilling = True


def _attach_at_once(original: Callable[..., None]) -> Callable[..., None]:
    """``Spiller._create`` that attaches the segment as soon as its create is issued,
    before anything is known of it (it may land after the state referencing it, or
    never).

    (Attaching on an *unknown* outcome is the subtler form of this bug; the model
    catches it too, but only after an unknown create outcome, too rarely for 1,000
    examples to be sure of.)"""

    def create(self: Spiller, spill_: Any) -> None:
        original(self, spill_)
        if spill_ in self._current:
            self._attach(spill_)

    return create


def _attach_blindly(table: JobTable, ref: Any, picked: list[Job]) -> int:
    """``spill.attach`` that does not look whether a picked job changed since the pick:
    every one leaves the inline jobs, its stale record untouched in the segment.

    (Attaching by equality instead of identity is not a mutant the model can catch: a
    job whose head version *equals* the picked one, a claim handed back or a release,
    has exactly the segment's record, so what storage holds is the same either way.)"""
    for job in picked:
        if table.get(job.id) is not None:
            table.remove(job.id)
    table.segments.attach(ref, picked, [])
    return len(picked)


def _take_without_leaving(_: Callable[..., Job]) -> Callable[..., Job]:
    """``SegmentIndex.take`` that materialises the cursor's job without setting its
    position's bit: the claimed job is inline and still untouched."""

    def take(self: SegmentIndex, entry: Entry) -> Job:
        segment = self.segment_at(entry)
        position = segment.cursors[entry[4]]
        return self.materialise(segments.Location(segment, position))

    return take


def _skipping(original: Callable[[bytearray, int, int], int]) -> Callable[..., int]:
    """``_next_untouched`` that, when it passes over a left position, skips the first
    untouched one after it too: FIFO broken (that job is passed over)."""

    def next_untouched(bits: bytearray, position: int, end: int) -> int:
        found = original(bits, position, end)
        if position < found < end and (after := original(bits, found + 1, end)) < end:
            return after
        return found

    return next_untouched


def _promote_at_once(original: Callable[..., None]) -> Callable[..., None]:
    """``DueWindows._scan`` that promotes every position it scans, due or not: a
    delayed job in a segment is claimable before its run-at or its backoff."""

    def scan(self: DueWindows, window: Any, entries: list[Any]) -> None:
        original(self, window, [(at, p, prio, seq, True) for at, p, prio, seq, _ in entries])

    return scan


def _no_window(self: DueWindows, segment: Any, jobs: Any, due: Any) -> bool:
    """``DueWindows.add`` that never opens a window: a segment in its due window is
    treated as due, its groups join the cursor heaps at once (also for a successor
    whose wall clock is behind the range)."""
    return False


def _no_window_from_refs(original: Callable[..., bool]) -> Callable[..., bool]:
    """``DueWindows.add`` that opens windows only for segments this broker attached: a
    broker that took over treats every referenced segment as due, trusting that its
    predecessor's clock had passed the range (or that its own is right)."""

    def add(self: DueWindows, segment: Any, jobs: Any, due: Any) -> bool:
        return jobs is not None and original(self, segment, jobs, due)

    return add


def _segment_keys_ignored(table: JobTable, queue: str, key: str) -> str | None:
    """``JobTable.untouched_with_key`` that never finds a key: a keyed push checks the
    inline jobs and the remembered keys, not the untouched jobs' (it still waits for
    their segment's read, as the real one would)."""
    return None


def _delete_at_once(_: Callable[..., None]) -> Callable[..., None]:
    """``SegmentDeleter.dropped`` that deletes a dropped segment as soon as the write
    dropping it is issued, not once it is known landed: if that write never lands (a
    takeover, a crash) the state still references the deleted segment."""

    def dropped(self: SegmentDeleter, keys: Iterable[str], revision: int) -> None:
        for key in keys:
            self.delete(key)

    return dropped


def _sweep_referenced(original: Callable[..., bool]) -> Callable[..., bool]:
    """``orphan`` that forgets what the taken-over state references."""

    def orphan(prefix: str, key: str, floor: int, predecessor: int, _: frozenset[str]) -> bool:
        return original(prefix, key, floor, predecessor, frozenset())

    return orphan


def _sweep_current_epoch(original: Callable[..., bool]) -> Callable[..., bool]:
    """``orphan`` without its upper bound: the sweep takes this broker's own epoch too,
    whose fresh spills the taken-over state cannot reference yet."""

    def orphan(prefix: str, key: str, floor: int, _: int, referenced: frozenset[str]) -> bool:
        return original(prefix, key, floor, 10**12, referenced)

    return orphan


def _delete_abandoned(original: Callable[..., None]) -> Callable[..., None]:
    """``Spiller._on_read_back`` that, abandoning a spill whose key holds somebody else's
    object, deletes that object as if it were an unattached spill of its own."""

    def on_read_back(self: Spiller, spill_: Any, result: StorageResult) -> None:
        before = self.counters.abandoned
        original(self, spill_, result)
        if self.counters.abandoned > before:
            self._unattached(spill_.ref.key)

    return on_read_back


#: What catches a segment deleted too early: at once (RecordingStore), or later, the
#: broker or the model finding it missing.
DELETED_TOO_EARLY = r"deleted while the stored state|state referencing deleted|which does not exist"

SEGMENT_MUTANTS = [
    RuleMutant(
        "attach before the create is known",
        Spiller,
        "_create",
        _attach_at_once,
        r"known durable|which does not exist",
    ),
    RuleMutant(
        "attach without looking for changes",
        spill,
        "attach",
        lambda _: _attach_blindly,
        # Jobs changed since the pick come back as their stale ready records: claimed
        # twice, claimed before their backoff, a finished one handed out again, or
        # never archived (its cancelled record replaced by the stale ready one), a dead
        # letter ready again without a redrive, a claimed job cancelled at once (its stale
        # ready record answered the cancel)...
        r"while .* holds it|handed out|after an acknowledged|lost|left the state|"
        r"never archived|changed \(\w+\) without|claimed (before|for)|cancel answered|"
        + KNOWN_READY,
    ),
    RuleMutant(
        "claim without its left bit",
        SegmentIndex,
        "take",
        _take_without_leaving,
        r"one place|two places|inline and untouched|one job twice",
    ),
    RuleMutant(
        "cursor skips a job",
        segments,
        "_next_untouched",
        _skipping,
        # Or the core trips over its own cursor (an IndexError escaping it: the model
        # fails on any untyped exception too).
        r"while better .* were due|got nothing while|list index out of range",
    ),
    # Jobs handed out early; or counted ready while they are not due yet.
    RuleMutant(
        "promote before due",
        DueWindows,
        "_scan",
        _promote_at_once,
        r"claimed before its run-at|the broker counts",
    ),
    RuleMutant(
        "treat an in-window segment as due",
        DueWindows,
        "add",
        lambda _: _no_window,
        r"claimed before its run-at|the broker counts",
    ),
    RuleMutant(
        "a successor treats in-window segments as due",
        DueWindows,
        "add",
        _no_window_from_refs,
        r"claimed before its run-at|the broker counts",
    ),
    RuleMutant(
        "keyed push ignores segment keys",
        JobTable,
        "untouched_with_key",
        lambda _: _segment_keys_ignored,
        r"two jobs with key|acknowledged for .* and|its key is also another job's",
    ),
    RuleMutant(
        "delete before the drop is known landed",
        SegmentDeleter,
        "dropped",
        _delete_at_once,
        DELETED_TOO_EARLY,
    ),
    RuleMutant(
        "sweep deletes a referenced key",
        segment_sweep,
        "orphan",
        _sweep_referenced,
        DELETED_TOO_EARLY,
    ),
    RuleMutant(
        "sweep deletes a current-epoch key",
        segment_sweep,
        "orphan",
        _sweep_current_epoch,
        # Or the foreign object under this broker's abandoned key, of its epoch too.
        DELETED_TOO_EARLY + r"|foreign object under its own abandoned key",
    ),
    RuleMutant(
        "delete the foreign object under an abandoned key",
        Spiller,
        "_on_read_back",
        _delete_abandoned,
        r"foreign object under its own abandoned key",
    ),
]


# -- the hand-written job codec and the table's fast paths broken one at a time -----------


def _encoding_no_attempts(original: Callable[[Job], bytes]) -> Callable[[Job], bytes]:
    """The table's ``encode_job`` writing every job as if it had never been claimed."""
    return lambda job: original(attrs.evolve(job, attempts=0))


def _reading_no_attempts(original: Callable[[Any], Job | None]) -> Callable[[Any], Job | None]:
    """``job_from_record`` (segment records and states read at takeover) forgetting a
    job's attempts."""

    def read(record: Any) -> Job | None:
        job = original(record)
        return None if job is None else attrs.evolve(job, attempts=0)

    return read


#: How a job's lost attempt count shows.
ATTEMPTS_LOST = r"not a wall clock|re-encode|attempts|claimed for attempt|more than its"

CODEC_MUTANTS = [
    RuleMutant(
        "encoder drops attempts",
        fragments,
        "encode_job",
        _encoding_no_attempts,
        # A successor reads the attempts as 0 (a retry's backoff or an attempt count
        # that does not match), or the model's own decode re-encodes other bytes.
        ATTEMPTS_LOST,
    ),
    RuleMutant(
        "reader drops attempts",
        codec,
        "job_from_record",
        _reading_no_attempts,
        ATTEMPTS_LOST,
    ),
    RuleMutant(
        "no id is the default factory's",
        table,
        "_default_id",
        lambda _: lambda job_id, seq: False,
        r"never spilled",
    ),
]


@pytest.mark.parametrize("mutant", SEGMENT_MUTANTS + CODEC_MUTANTS, ids=lambda m: m.name)
def test_the_model_test_fails_on_a_broken_segment_rule_or_fast_path(
    mutant: RuleMutant, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = getattr(mutant.target, mutant.attribute)
    monkeypatch.setattr(mutant.target, mutant.attribute, mutant.replace(original))
    assert_caught(SpillingModel, mutant.catches)


class LeaseModel(QueueModel):
    """The model with owner leases and standbys in every example."""

    leases = True


def _hasty(original: Callable[..., None]) -> Callable[..., None]:
    """``Watch._know`` that judges the owner's lease lapsed after a quarter of it."""

    def know(self: standby.Watch, owner: Any) -> None:
        original(self, owner)
        self._lease /= 4

    return know


def test_the_model_test_fails_on_a_standby_that_does_not_wait_for_the_lease(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(standby.Watch, "_know", _hasty(standby.Watch._know))
    # Caught as a takeover within the lease, or as a held standby taking over early.
    assert_caught(LeaseModel, r"within its .* lease|a standby held .* took over \(lease")


def test_the_lease_model_passes_without_mutants() -> None:
    """The same model and settings, unbroken: what the mutant above fails is the lease
    rule, not the model."""
    run_derandomized(LeaseModel, settings(QUICK, max_examples=60))


def _ignores_holds(self: standby.Watch, held: bool) -> None:
    """``Watch.hold`` that never holds: a held standby takes over at its lapse."""


def test_the_model_test_fails_on_a_held_standby_that_takes_over_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(standby.Watch, "hold", _ignores_holds)
    assert_caught(LeaseModel, r"a standby held .* took over|a hold adds")
