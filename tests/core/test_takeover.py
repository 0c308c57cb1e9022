"""Takeover: epochs that never repeat, a missing state noticed, and a busy owner that
pauses for a challenger (hardening items 5 and 6)."""

from __future__ import annotations

import orjson

from osqueue_core import (
    Broker,
    BrokerConfig,
    BrokerNotRunning,
    BrokerReplaced,
    Phase,
    ReadVersion,
    StateMissing,
    WriteObject,
    decode_state,
)

from .harness import Harness, SimStore

MARKER = "epochs/{:020d}"


def starting(store: SimStore, identity: str, config: BrokerConfig | None = None) -> Harness:
    """A broker that has been started but whose effects wait to be delivered by hand."""
    h = Harness(Broker(config, identity=identity, incarnation=f"{identity}-1"), store)
    h.auto = False
    h.broker.start(h.now)
    h.flush()
    return h


def epoch_of(store: SimStore) -> int:
    return decode_state(store.get("state.json")).header.owner.epoch  # type: ignore[arg-type]


def test_a_new_queue_writes_its_state_first_and_its_epoch_marker_after() -> None:
    h = Harness.started()
    assert epoch_of(h.store) == 1
    keys = h.store.keys()
    assert keys == [MARKER.format(1), "state.json"]
    assert h.store.objects["state.json"][1] < h.store.objects[MARKER.format(1)][1]


def test_each_takeover_reserves_its_epoch_before_writing_it() -> None:
    store = SimStore()
    Harness.started(store, identity="a")
    b = Harness.started(store, identity="b")  # reserves epoch 2, then writes it
    assert epoch_of(store) == 2
    marker = orjson.loads(store.get(MARKER.format(2)))  # type: ignore[arg-type]
    assert (marker["epoch"], marker["identity"]) == (2, "b")
    assert store.objects[MARKER.format(2)][1] < store.objects["state.json"][1]
    assert b.broker.phase is Phase.RUNNING


def test_a_state_restored_from_a_backup_continues_at_an_unused_epoch() -> None:
    """Before: the restored state's epoch + 1 was used again, so job ids and archive keys
    repeated and an archive write took somebody else's object for its own."""
    store = SimStore()
    a = Harness.started(store, identity="a")
    old_ids = [a.push().result.job_id for _ in range(2)]  # type: ignore[union-attr]
    backup = store.get("state.json")
    for name in ("b", "c"):
        newer = Harness.started(store, identity=name)
        old_ids.append(newer.push().result.job_id)  # type: ignore[union-attr]
    assert epoch_of(store) == 3
    store.put("state.json", backup)  # type: ignore[arg-type]  # the operator restores it
    d = Harness.started(store, identity="d")
    assert d.broker.phase is Phase.RUNNING
    assert epoch_of(store) == 4, "above every epoch ever reserved, not 2"
    new_id = d.push().result.job_id  # type: ignore[union-attr]
    assert new_id.endswith("-4")
    assert new_id not in old_ids


def test_an_unknown_outcome_marker_that_landed_is_recognised_as_ours() -> None:
    store = SimStore()
    Harness.started(store, identity="a")
    b = starting(store, "b")
    b.deliver(0)  # read the state
    [i] = b.pending_of(WriteObject, "epochs/")
    b.deliver(i, "unknown_landed")  # the marker landed; we were told "unknown"
    b.auto = True
    b.flush()
    assert b.broker.phase is Phase.RUNNING
    assert epoch_of(store) == 2, "kept its own marker instead of reserving epoch 3"
    assert MARKER.format(3) not in store.objects


def test_a_missing_state_with_history_is_refused() -> None:
    """Before: a deleted state.json silently started a new queue at epoch 1."""
    store = SimStore()
    a = Harness.started(store)
    a.push()
    del store.objects["state.json"]
    b = Harness.started(store, identity="b")
    assert b.broker.phase is Phase.FAILED
    assert isinstance(b.broker.failure, StateMissing)
    assert b.broker.failure.grpc_status == "DATA_LOSS"
    assert "state.json" not in store.objects, "nothing was written"


def test_archives_alone_are_history_too() -> None:
    store = SimStore()
    store.put("archive/2026-01-01T00/000001-0000000003.json", b"{}")
    h = Harness.started(store)
    assert isinstance(h.broker.failure, StateMissing)


def test_recreate_starts_a_new_queue_above_every_used_epoch() -> None:
    store = SimStore()
    Harness.started(store, identity="a")
    Harness.started(store, identity="b")
    del store.objects["state.json"]
    h = Harness.started(store, identity="c", config=BrokerConfig(recreate=True))
    assert h.broker.phase is Phase.RUNNING
    assert epoch_of(store) == 3
    assert decode_state(store.get("state.json")).jobs == []  # type: ignore[arg-type]


def test_two_brokers_creating_a_new_queue_at_once_do_not_call_it_missing() -> None:
    store = SimStore()
    a = starting(store, "a")
    b = starting(store, "b")
    b.deliver(0)  # b reads: no state yet
    a.auto = True
    a.flush()  # a creates the state and its epoch-1 marker
    b.auto = True
    b.flush()  # b lists the markers, sees a's, reads again, and takes over from a
    assert b.broker.phase is Phase.RUNNING, b.broker.failure
    assert epoch_of(store) == 2
    assert isinstance(a.push().error, BrokerReplaced)  # type: ignore[union-attr]


def busy_owner(store: SimStore) -> Harness:
    return Harness.started(
        store, identity="owner", config=BrokerConfig(takeover_check=1.0, takeover_yield_max=5)
    )


def test_a_busy_owner_pauses_for_a_takeover_request_and_is_replaced() -> None:
    """Before: the challenger's conditional write kept losing to the owner's writes
    (re-read, retry, lose again) for as long as the owner stayed busy."""
    store = SimStore()
    owner = busy_owner(store)
    challenger = starting(store, "new")
    challenger.deliver(0)  # reads the state
    challenger.deliver(0)  # reserves epoch 2 (the marker)
    assert challenger.pending_of(WriteObject, "state.json")
    owner.push()  # ... but the owner writes first: the takeover write conflicts
    challenger.deliver(challenger.pending_of(WriteObject, "state.json")[0])
    # The challenger reads again and, beside it, posts its request to the owner.
    [version_read] = challenger.pending_of(ReadVersion, "takeover.json")
    challenger.deliver(version_read)
    [post] = challenger.pending_of(WriteObject, "takeover.json")
    challenger.deliver(post)
    request = orjson.loads(store.get("takeover.json"))  # type: ignore[arg-type]
    assert request["target_epoch"] == 1
    # The owner, busy (two writes in the last interval), reads it within takeover_check.
    owner.push()
    owner.advance(1.0)
    assert owner.broker.stats().yields == 1
    owner.auto = False
    owner.push()  # accepted, but not written while the owner pauses
    assert owner.pending_of(WriteObject, "state.json") == []
    challenger.auto = True
    challenger.flush()  # read again, write: nobody writes in between now
    assert challenger.broker.phase is Phase.RUNNING
    assert epoch_of(store) == 2
    owner.auto = True
    owner.advance(5.0)  # the pause ends; its next write finds the new owner
    assert owner.broker.phase is Phase.FAILED
    assert isinstance(owner.broker.failure, BrokerReplaced)


def test_an_idle_owner_never_reads_the_takeover_request() -> None:
    h = busy_owner(SimStore())
    h.push()  # one write: not busy
    h.advance(1.0)
    h.advance(1.0)
    assert not [e for e in h.pending if getattr(e, "key", "") == "takeover.json"]
    assert h.broker.stats().yields == 0


def test_requests_for_another_epoch_or_seen_before_are_ignored() -> None:
    store = SimStore()
    h = busy_owner(store)

    def busy_second() -> None:
        h.push()
        h.push()
        h.advance(1.0)

    store.put(
        "takeover.json", b'{"target_epoch": 7, "identity": "x", "incarnation": "y", "hold": 1}'
    )
    busy_second()
    assert h.broker.stats().yields == 0, "not addressed to this owner's epoch"
    store.put(
        "takeover.json", b'{"target_epoch": 1, "identity": "x", "incarnation": "y", "hold": 1}'
    )
    busy_second()
    assert h.broker.stats().yields == 1
    busy_second()
    busy_second()
    assert h.broker.stats().yields == 1, "once per request: a dead challenger costs one pause"
    store.put("takeover.json", b"garbage")
    busy_second()
    assert h.broker.stats().yields == 1


def test_a_takeover_that_keeps_losing_gives_up_with_a_clear_error() -> None:
    store = SimStore()
    owner = Harness.started(store, identity="old-owner")
    challenger = starting(store, "new", BrokerConfig(takeover_timeout=10))
    for _ in range(20):  # an owner that never pauses (an older osqueue)
        while challenger.pending and not challenger.pending_of(WriteObject, "state.json"):
            challenger.deliver(0)
        if challenger.broker.phase is Phase.FAILED:
            break
        owner.push()
        challenger.now += 1
        challenger.deliver(challenger.pending_of(WriteObject, "state.json")[0])
        challenger.pending = [
            e for e in challenger.pending if getattr(e, "key", "") != "takeover.json"
        ]
    assert challenger.broker.phase is Phase.FAILED
    assert isinstance(challenger.broker.failure, BrokerNotRunning)
    assert "old-owner" in str(challenger.broker.failure)
    assert owner.broker.phase is Phase.RUNNING


def test_takeover_effects_are_the_four_primitives() -> None:
    h = starting(SimStore(), "a")
    kinds = []
    while h.pending:
        kinds.append(type(h.pending[0]).__name__)
        h.deliver(0)
    # Read the state, look for history (markers, then archives), create the state,
    # then its epoch marker.
    assert kinds == ["ReadObject", "ListKeys", "ListKeys", "WriteObject", "WriteObject"]


def test_recreate_over_an_archive_without_markers_starts_above_its_epochs() -> None:
    """A queue from before epoch markers, or one whose markers were lost with its state:
    the archive keys name the epochs used, and a recreated queue starts above them."""
    store = SimStore()
    store.put("archive/2026-01-01T00/000005-0000000003.json", b"{}")
    store.put("archive/2026-01-01T01/000002-0000000009.json", b"{}")
    h = Harness.started(store, config=BrokerConfig(recreate=True))
    assert h.broker.phase is Phase.RUNNING
    assert epoch_of(store) == 6
    assert h.push().result.job_id.endswith("-6")  # type: ignore[union-attr]
