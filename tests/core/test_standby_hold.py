"""``Broker.hold_takeover``: a held standby watches, but does not take over.

A scale-out group member that owns its share of the queues holds its other standbys,
so that a member below its share takes a lapsed or released queue instead. A hold
delays a takeover by one more lease at most: a queue is never left without an owner.
"""

from __future__ import annotations

import pytest

from osqueue_core import Broker, BrokerConfig, InvalidArgument, Phase

from .harness import Harness, SimStore
from .test_standby import LEASE, OWNER, STANDBY, owner_of, run


def held_standby(store: SimStore, name: str, now: float = 1000.0) -> Harness:
    """A standby held from before its start (as a group member starts those it holds)."""
    broker = Broker(STANDBY, identity=name, incarnation=name + "-1")
    broker.hold_takeover(True, now)
    assert broker.takeover_held
    harness = Harness(broker, store, now=now)
    broker.start(now)
    harness.flush()
    return harness


def stop_cleanly(owner: Harness) -> None:
    """The owner stops: its last write releases the state."""
    owner.broker.stop(owner.now)
    owner.flush()
    assert owner.broker.phase is Phase.STOPPED


def until_running(h: Harness, limit: float) -> float:
    """Advance ``h`` until it runs; the seconds that took (fails past ``limit``)."""
    started = h.now
    while h.broker.phase is not Phase.RUNNING:
        h.advance(0.25)
        assert h.now - started <= limit, f"still {h.broker.phase} after {limit:g}s"
    return h.now - started


def test_a_held_standby_of_a_dead_owner_waits_one_more_lease_then_takes_over() -> None:
    store = SimStore()
    owner = Harness.started(store, OWNER, identity="a")
    b = held_standby(store, "b")
    owner.push(b"acknowledged")  # the owner's last write; then it dies
    took = until_running(b, 2 * LEASE + 2)
    assert took >= 2 * LEASE, "a hold delays the takeover by one lease after the lapse"
    assert owner_of(store) == ("b", 2)
    assert b.claim().result.payload == b"acknowledged"  # type: ignore[union-attr]


def test_letting_go_of_a_lapse_already_seen_takes_over_at_once() -> None:
    store = SimStore()
    Harness.started(store, OWNER, identity="a")  # dies at once
    b = held_standby(store, "b")
    run(LEASE + 2, b)
    assert b.broker.phase is Phase.STANDBY, "held past the lapse"
    b.broker.hold_takeover(False, b.now)
    b.flush()
    assert b.broker.phase is Phase.RUNNING, "let go: no poll to wait for"
    assert owner_of(store) == ("b", 2)


def test_a_released_state_waits_while_held_and_is_taken_when_let_go() -> None:
    store = SimStore()
    owner = Harness.started(store, OWNER, identity="a")
    b = held_standby(store, "b")
    run(1, owner, b)
    stop_cleanly(owner)
    run(LEASE / 2, b)
    assert b.broker.phase is Phase.STANDBY
    reads = b.broker.stats().standby_reads
    run(LEASE / 4, b)
    assert b.broker.stats().standby_reads == reads, "a released version is read once"
    b.broker.hold_takeover(False, b.now)
    b.flush()
    assert b.broker.phase is Phase.RUNNING
    # Held again and released again: the hold keeps it back once more, then a lease
    # after it saw the release, it takes the queue anyway.
    c = held_standby(store, "c", now=b.now)
    stop_cleanly(b)
    took = until_running(c, LEASE + 2)
    assert took >= LEASE


def test_a_held_standby_with_no_state_creates_none_until_let_go() -> None:
    b = held_standby(SimStore(), "b")
    run(LEASE / 2, b)
    assert b.store.get("state.json") is None
    b.broker.hold_takeover(False, b.now)
    b.flush()
    assert owner_of(b.store) == ("b", 1)


def test_an_owner_that_writes_again_restarts_the_count_of_a_held_lapse() -> None:
    store = SimStore()
    owner = Harness.started(store, OWNER, identity="a")
    b = held_standby(store, "b")
    # The owner is silent (paused) for a lease and a half: b finds the lapse, holds it.
    run(1.5 * LEASE, b)
    assert b.broker.phase is Phase.STANDBY
    owner.push()  # it was alive after all: b's held lapse ends
    run(1.5 * LEASE, b)  # silent again: a new lapse, counted from the start
    assert b.broker.phase is Phase.STANDBY
    run(LEASE, b)
    assert b.broker.phase is Phase.RUNNING


def test_holding_a_broker_that_is_not_a_standby_changes_nothing() -> None:
    h = Harness.started(config=BrokerConfig())
    h.broker.hold_takeover(True, h.now)
    assert not h.broker.takeover_held
    assert h.push().ok  # type: ignore[union-attr]
    with pytest.raises(InvalidArgument, match="bool"):
        h.broker.hold_takeover("yes", h.now)  # type: ignore[arg-type]
