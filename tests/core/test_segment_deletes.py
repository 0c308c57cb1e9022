"""Segments, stage 2: deleting them. A dropped segment once the write that dropped it is
known landed (never if the broker was replaced first); a spill nothing was attached from
at once; never the foreign object under an abandoned spill's key; and the sweep after a
takeover, which deletes the unreferenced segment keys of epochs ``segment_floor`` .. the
predecessor's, and nothing else. Deletes are retried with backoff, bounded in flight,
and cost nothing when there is nothing to delete."""

from __future__ import annotations

import pytest

from osqueue_core import (
    Broker,
    BrokerReplaced,
    Claim,
    DeleteObject,
    ListKeys,
    Phase,
    Push,
    ReadObject,
    StorageResult,
    WriteObject,
    segment_key,
)
from osqueue_core.effects import Effect
from osqueue_core.segment_deletes import DELETE_ATTEMPTS, MAX_DELETES
from osqueue_core.segment_sweep import LIST_ATTEMPTS, SWEEP_PAGE, orphan

from .harness import Harness, Outcome, SimStore
from .test_segments import SEGMENTS, claim_all, config, push_ids, state

STATE = "state.json"


def deletes(h: Harness) -> list[int]:
    return h.pending_of(DeleteObject)


def deliver_state_ops(h: Harness, outcome: Outcome = "ok") -> None:
    """Deliver the pending state reads and writes (not segment work) until none is left."""
    while ops := h.pending_of(WriteObject, STATE) + h.pending_of(ReadObject, STATE):
        h.deliver(ops[0], outcome)
        outcome = "ok"


def spilled(h: Harness, count: int = 4) -> tuple[list[str], str]:
    """``count`` pushes that spill into one segment: their ids and its key."""
    ids = push_ids(h, count)
    [key] = h.store.keys(SEGMENTS)
    return ids, key


def one_untouched_left(store: SimStore | None = None) -> tuple[Harness, list[str], str]:
    """A segment of four jobs, three of them claimed: the next claim drops its ref. The
    harness then delivers nothing by itself."""
    h = Harness.started(store, config())
    ids, key = spilled(h)
    h.submit(Claim(h.request_id(), "w", 0.0, ("default",), 3))
    h.auto = False
    return h, ids, key


def claim_held(h: Harness, count: int) -> int:
    """Submit a claim of ``count`` jobs without delivering anything; its request id."""
    request = h.request_id()
    h.broker.submit(Claim(request, "w", 0.0, ("default",), count), h.now)
    h.flush()
    return request


# -- dropped segments ------------------------------------------------------------------


def test_a_dropped_segment_is_deleted_once_the_write_dropping_it_has_landed() -> None:
    h = Harness.started(config=config())
    ids, key = spilled(h)
    assert claim_all(h) == ids  # the last claim drops the ref
    assert key not in h.store.objects  # (delivered at once: written, then deleted)
    assert h.broker.stats().segments_deleted == 1

    h, ids, key = one_untouched_left()
    claim_held(h, 1)  # the last untouched job: the next write drops the ref
    assert h.pending_of(WriteObject, STATE)
    assert not deletes(h)
    assert h.broker.stats().segment_deletes_pending == 1  # waiting for its write
    h.deliver(h.pending_of(WriteObject, STATE)[0])
    [delete] = deletes(h)
    assert h.pending[delete] == DeleteObject(h.pending[delete].op_id, key)  # type: ignore[union-attr]
    assert "segments" not in state(h.store)  # the landed state no longer references it
    h.deliver(delete)
    assert key not in h.store.objects
    stats = h.broker.stats()
    assert (stats.segments_deleted, stats.segment_deletes_pending) == (1, 0)


@pytest.mark.parametrize("outcome", ["unknown_landed", "unknown_lost", "conflict", "late"])
def test_a_drop_whose_write_is_not_known_landed_deletes_only_once_it_is(outcome: str) -> None:
    h, _, key = one_untouched_left()
    claim_held(h, 1)
    h.deliver(h.pending_of(WriteObject, STATE)[0], outcome)  # type: ignore[arg-type]
    assert not deletes(h), "a delete before the drop was known landed"
    if outcome == "late":
        h.store.land_late()
    while not deletes(h):  # resolved by reading back, re-sent after a backoff if lost
        if not h.pending:
            deadline = h.broker.next_deadline()
            assert deadline is not None
            h.now = deadline
            h.broker.tick(h.now)
            h.flush()
            continue
        assert not h.pending_of(WriteObject, SEGMENTS)
        h.deliver(0)
    assert "segments" not in state(h.store)
    h.deliver_all()
    assert key not in h.store.objects


def test_a_broker_replaced_before_its_drop_landed_never_deletes() -> None:
    store = SimStore()
    h, ids, key = one_untouched_left(store)
    last = claim_held(h, 1)
    successor = Harness.started(store, config(), identity="b")  # takes over meanwhile
    h.deliver_all()  # the drop write conflicts: read back, another owner
    assert isinstance(h.broker.failure, BrokerReplaced)
    assert isinstance(h.replies[last].error, BrokerReplaced)
    assert not deletes(h)
    assert key in store.objects  # the successor's state still references it
    assert claim_all(successor) == [ids[3]]  # the unacknowledged claim is still claimable
    assert key not in store.objects  # the successor dropped and deleted it in turn


def test_the_release_write_deletes_nothing_and_the_successor_sweeps() -> None:
    store = SimStore()
    h, _, key = one_untouched_left(store)
    h.broker.submit(Push(h.request_id(), b"in flight"), h.now)
    h.flush()
    claim_held(h, 1)  # the drop waits for the next write: the release write, as it is
    h.broker.stop(h.now)
    h.flush()
    h.deliver_all()
    assert h.broker.phase is Phase.STOPPED
    assert h.broker.stats().segment_deletes_pending == 0  # left for the successor
    assert "segments" not in state(store)
    assert key in store.objects  # stop() does not wait for deletes: the successor's
    successor = Harness.started(store, config(), identity="b")
    assert key not in store.objects
    stats = successor.broker.stats()
    assert (stats.sweeps, stats.swept, stats.segments_deleted) == (1, 1, 1)


# -- this broker's own spills ----------------------------------------------------------


def test_a_spill_nothing_was_attached_from_is_deleted_at_once() -> None:
    h = Harness.started(config=config())
    push_ids(h, 3)
    h.auto = False
    h.broker.submit(Push(h.request_id(), b"the fourth"), h.now)  # picked with the three
    h.flush()
    deliver_state_ops(h)
    [create] = h.pending_of(WriteObject, SEGMENTS)
    key = h.pending[create].key  # type: ignore[union-attr]
    claim_held(h, 4)  # every picked job changes before the create is known
    h.deliver(create)
    [delete] = deletes(h)
    assert h.pending[delete].key == key  # type: ignore[union-attr]
    h.deliver_all()
    assert key not in h.store.objects
    assert "segments" not in state(h.store)
    stats = h.broker.stats()
    assert (stats.spills, stats.segments_deleted) == (0, 1)


def test_an_abandoned_spill_never_deletes_the_object_under_its_key() -> None:
    h = Harness.started(config=config())
    key = f"{SEGMENTS}000001-0000000001.json"
    h.store.put(key, b"somebody else's")
    push_ids(h, 4)
    assert h.broker.stats().spills_abandoned == 1
    claim_all(h)  # the fresh spill's segment is dropped and deleted; the foreign one stays
    assert h.store.get(key) == b"somebody else's"
    assert h.broker.stats().segments_deleted == 1


# -- the sweep -------------------------------------------------------------------------


def plant(store: SimStore, *keys: str) -> None:
    for key in keys:
        store.put(key, b"left behind")


def test_a_takeover_sweeps_its_predecessors_orphans_and_nothing_else() -> None:
    store = SimStore()
    first = Harness.started(store, config())
    push_ids(first, 8)  # two segments of epoch 1, both referenced
    referenced = store.keys(SEGMENTS)
    orphans = [segment_key(SEGMENTS, 1, 90), segment_key(SEGMENTS, 1, 91)]
    kept = [
        segment_key(SEGMENTS, 3, 1),  # above the predecessor's epoch (a later state's)
        f"{SEGMENTS}notes.txt",
        f"{SEGMENTS}000001-0000000092.json.bak",
        f"{SEGMENTS}old/000001-0000000093.json",
        f"{SEGMENTS}1-1.json",
        f"{SEGMENTS}0000001-0000000094.json",  # not the way a key is spelt
        "elsewhere/000001-0000000095.json",
    ]
    plant(store, *orphans, *kept)
    successor = Harness.started(store, config(), identity="b")
    left = [key for key in store.keys("") if not key.startswith("epochs/")]
    assert left == sorted([STATE, *referenced, *kept])
    stats = successor.broker.stats()
    assert (stats.sweeps, stats.swept, stats.segments_deleted) == (1, 2, 2)


def test_the_sweep_leaves_the_segments_of_an_earlier_life_alone() -> None:
    store = SimStore()
    first = Harness.started(store, config())
    ids = push_ids(first, 4)
    [old] = store.keys(SEGMENTS)
    del store.objects[STATE]  # the state is lost; the queue starts a new life
    recreated = Harness.started(store, config(recreate=True), identity="b")
    assert state(store)["segment_floor"] == 2
    recreated.broker.stop(recreated.now)
    recreated.flush()
    plant(store, segment_key(SEGMENTS, 2, 50), segment_key(SEGMENTS, 1, 50))
    Harness.started(store, config(), identity="c")
    assert store.keys(SEGMENTS) == [old, segment_key(SEGMENTS, 1, 50)]
    assert ids  # (the old life's jobs are in ``old``, for whoever restores its state)


def held(store: SimStore, identity: str = "b") -> Harness:
    """A broker started on ``store`` whose effects wait to be delivered one by one."""
    h = Harness(Broker(config(), identity=identity, incarnation=f"{identity}-1"), store)
    h.auto = False
    h.broker.start(h.now)
    h.flush()
    return h


def test_a_new_queue_has_nothing_to_sweep() -> None:
    h = held(SimStore())
    while h.pending:
        assert not isinstance(h.pending[0], ListKeys) or h.pending[0].prefix != SEGMENTS
        h.deliver(0)
    assert h.broker.phase is Phase.RUNNING
    assert h.broker.stats().sweeps == 0


def test_the_sweep_pages_through_a_large_prefix_with_bounded_deletes() -> None:
    store = SimStore()
    first = Harness.started(store, config())
    push_ids(first, 4)
    [referenced] = store.keys(SEGMENTS)
    count = 2 * SWEEP_PAGE + 500
    plant(store, *(segment_key(SEGMENTS, 1, 100 + n) for n in range(count)))
    h = held(store)
    listings, most = 0, 0
    while h.pending:
        most = max(most, len(deletes(h)))
        assert h.broker.stats().segment_deletes_pending <= 2 * SWEEP_PAGE
        effect = h.pending[0]
        listings += isinstance(effect, ListKeys)
        h.deliver(0)
    assert most == MAX_DELETES
    assert listings == 4  # three pages and an empty one
    assert store.keys(SEGMENTS) == [referenced]
    stats = h.broker.stats()
    assert (stats.sweeps, stats.swept, stats.segments_deleted) == (1, count, count)


class IgnoresStartAfter(SimStore):
    """A store whose listing always starts at the beginning."""

    def execute(self, effect: Effect, outcome: Outcome = "ok") -> StorageResult:
        if isinstance(effect, ListKeys):
            effect = ListKeys(effect.op_id, effect.prefix, effect.limit)
        return super().execute(effect, outcome)


def test_a_store_that_ignores_start_after_cannot_make_the_sweep_go_round() -> None:
    store = IgnoresStartAfter()
    Harness.started(store, config())
    plant(store, segment_key(SEGMENTS, 1, 7))
    successor = Harness.started(store, config(), identity="b")
    assert successor.broker.stats().sweeps == 1
    assert store.keys(SEGMENTS) == []


# -- retries, giving up, idling ----------------------------------------------------------


def _advance_to_deadline(h: Harness) -> None:
    deadline = h.broker.next_deadline()
    assert deadline is not None
    assert deadline > h.now  # never in the past: a runtime would spin
    h.now = deadline
    h.broker.tick(h.now)
    h.flush()


def test_a_failed_delete_is_retried_after_a_backoff_then_left_for_the_next_sweep() -> None:
    store = SimStore()
    h = Harness.started(store, config())
    _, key = spilled(h)
    h.auto = False
    h.submit(Claim(h.request_id(), "w", 0.0, ("default",), 4))
    while not deletes(h):  # the segment's read, the claim's write
        h.deliver(0)
    for attempt in range(DELETE_ATTEMPTS):
        [delete] = deletes(h)
        h.deliver(delete, "failed" if attempt % 2 else "unknown_lost")
        if attempt < DELETE_ATTEMPTS - 1:
            assert not deletes(h)  # not at once: after the backoff
            _advance_to_deadline(h)
    h.deliver_all()  # (a busy owner's look at the takeover request)
    assert not deletes(h)
    assert h.broker.next_deadline() == 1000.0 + 30.0  # only the claimed jobs' leases
    stats = h.broker.stats()
    assert (stats.segments_deleted, stats.segment_deletes_abandoned) == (0, 1)
    assert key in store.objects
    Harness.started(store, config(), identity="b")  # the next takeover's sweep
    assert key not in store.objects


def test_a_sweep_whose_listing_keeps_failing_is_left_to_the_next_takeover() -> None:
    store = SimStore()
    Harness.started(store, config())
    plant(store, segment_key(SEGMENTS, 1, 7))
    h = held(store)
    for attempt in range(LIST_ATTEMPTS):
        while not h.pending_of(ListKeys, SEGMENTS):
            h.deliver(0)
        h.deliver(h.pending_of(ListKeys, SEGMENTS)[0], "failed")
        if attempt < LIST_ATTEMPTS - 1:
            _advance_to_deadline(h)
    h.deliver_all()
    assert h.broker.next_deadline() is None
    assert h.broker.stats().sweeps == 0
    assert store.keys(SEGMENTS) == [segment_key(SEGMENTS, 1, 7)]


def test_an_idle_broker_deletes_nothing_and_sets_no_timer() -> None:
    store = SimStore()
    first = Harness.started(store, config())
    push_ids(first, 8)
    h = Harness.started(store, config(), identity="b")
    assert h.broker.stats().sweeps == 1
    assert h.broker.next_deadline() is None
    kept = store.keys(SEGMENTS)
    h.auto = False  # whatever an hour of ticks issues stays pending, to be seen
    h.advance(3600.0)
    assert not h.pending
    assert store.keys(SEGMENTS) == kept


# -- what the sweep may delete -----------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "deleted"),
    [
        ("segments/000002-0000000001.json", True),
        ("segments/000004-0000000001.json", True),
        ("segments/000001-0000000001.json", False),  # below the floor
        ("segments/000005-0000000001.json", False),  # above the predecessor
        ("segments/000003-0000000001.json", False),  # referenced
        ("segments/000002-0000000001.json.tmp", False),
        ("segments/x/000002-0000000001.json", False),
        ("segments/00002-0000000001.json", False),
        ("segments/000002-000000001.json", False),
        ("other/000002-0000000001.json", False),
        ("segments/" + "9" * 40 + "-0000000001.json", False),
    ],
)
def test_orphan_is_exactly_an_unreferenced_segment_key_in_range(key: str, deleted: bool) -> None:
    referenced = frozenset({"segments/000003-0000000001.json"})
    assert orphan("segments/", key, 2, 4, referenced) is deleted
