"""Owner leases and standby brokers (docs/high-availability.md), driven in the core.

Every broker here has its own clock, and they are never compared: a standby decides
from what it saw, when, by its own clock.
"""

from __future__ import annotations

import orjson
import pytest

from osqueue_core import (
    Broker,
    BrokerConfig,
    BrokerReplaced,
    CorruptState,
    NotOwner,
    Phase,
    ReadObject,
    ReadVersion,
    WriteObject,
    decode_state,
)

from .harness import Harness, SimStore

LEASE = 6.0
OWNER = BrokerConfig(owner_lease=LEASE)
STANDBY = BrokerConfig(owner_lease=LEASE, standby=True, standby_poll=0.5)


def standby(store: SimStore, name: str, config: BrokerConfig = STANDBY, now: float = 1000.0):  # type: ignore[no-untyped-def]
    return Harness.started(store, config, identity=name, now=now)


def owner_of(store: SimStore) -> tuple[str, int]:
    header = decode_state(store.get("state.json")).header  # type: ignore[arg-type]
    return header.owner.identity, header.owner.epoch


def run(seconds: float, *harnesses: Harness, step: float = 0.25) -> None:
    """Let ``seconds`` pass for each of ``harnesses``, in small steps, interleaved."""
    for _ in range(round(seconds / step)):
        for h in harnesses:
            h.advance(step)


def test_an_idle_owner_with_a_lease_renews_it_and_one_without_writes_nothing() -> None:
    leased = Harness.started(config=OWNER)
    plain = Harness.started(config=BrokerConfig())
    before = leased.writes, plain.writes
    run(60, leased, plain)
    renewals = leased.writes - before[0]
    assert 60 / (LEASE / 3) - 1 <= renewals <= 60 / (LEASE / 3)
    assert plain.writes == before[1], "no lease, no idle writes"
    assert leased.broker.stats().renewals == renewals
    stored = orjson.loads(leased.store.get("state.json"))  # type: ignore[arg-type]
    assert stored["owner"]["lease"] == LEASE


def test_a_busy_owner_needs_no_renewal_writes() -> None:
    h = Harness.started(config=OWNER)
    for _ in range(40):
        h.push()
        h.advance(0.5)
    assert h.broker.stats().renewals == 0


def test_a_standby_never_takes_over_from_an_owner_that_renews() -> None:
    store = SimStore()
    owner = Harness.started(store, OWNER, identity="a")
    b = standby(store, "b")
    run(10 * LEASE, owner, b)
    assert b.broker.phase is Phase.STANDBY
    assert owner_of(store) == ("a", 1)
    reply = b.push()
    assert reply is not None
    assert isinstance(reply.error, NotOwner)
    assert (reply.error.new_identity, reply.error.new_epoch) == ("a", 1)
    # An idle, renewing owner costs the standby HEADs plus one read per renewal.
    stats = b.broker.stats()
    assert stats.standby_checks >= 10 * LEASE / 0.5 - 2
    assert stats.standby_reads <= 10 * 3 + 2


def test_a_standby_takes_over_a_lease_after_the_owner_last_changed_the_state() -> None:
    store = SimStore()
    owner = Harness.started(store, OWNER, identity="a")
    b = standby(store, "b")
    run(LEASE, owner, b)
    owner.push(b"acknowledged")  # the owner's last write; then it dies (never advanced)
    died_at = b.now
    while b.broker.phase is Phase.STANDBY:
        b.advance(0.25)
        assert b.now - died_at <= LEASE + 1.0, "took too long"
    assert b.now - died_at >= LEASE, "took over before the lease ran out"
    assert b.broker.phase is Phase.RUNNING
    assert owner_of(store) == ("b", 2)
    claimed = b.claim()
    assert claimed is not None
    assert claimed.result.payload == b"acknowledged"


def test_the_owners_published_lease_decides_not_the_standbys() -> None:
    store = SimStore()
    owner = Harness.started(store, BrokerConfig(owner_lease=30.0), identity="a")
    b = standby(store, "b")  # its own lease is 6 s
    run(LEASE * 3, b)  # the owner is silent (it renews only every 10 s)
    assert b.broker.phase is Phase.STANDBY
    run(30, b)
    assert b.broker.phase is Phase.RUNNING
    assert owner.broker.phase is Phase.RUNNING  # it has not noticed yet
    owner.push()
    assert isinstance(owner.broker.failure, BrokerReplaced)


def test_a_released_state_is_taken_over_within_a_few_polls() -> None:
    store = SimStore()
    owner = Harness.started(store, OWNER, identity="a")
    b = standby(store, "b")
    run(2, owner, b)
    owner.broker.stop(owner.now)
    owner.flush()
    assert owner.broker.phase is Phase.STOPPED
    run(1.5, b)
    assert b.broker.phase is Phase.RUNNING


def test_a_standby_without_a_state_creates_it() -> None:
    b = standby(SimStore(), "b")
    assert b.broker.phase is Phase.RUNNING
    assert owner_of(b.store) == ("b", 1)


def test_failed_checks_prove_nothing() -> None:
    store = SimStore()
    owner = Harness.started(store, OWNER, identity="a")
    b = standby(store, "b")
    b.auto = False
    for _ in range(int(3 * LEASE / 0.25)):  # storage fails for the standby only
        owner.advance(0.25)
        b.now += 0.25
        b.broker.tick(b.now)
        b.flush()
        while b.pending:
            b.deliver(0, "failed")
    assert b.broker.phase is Phase.STANDBY
    b.auto = True
    run(2, owner, b)
    assert b.broker.phase is Phase.STANDBY, "the owner renewed meanwhile: alive"


def test_two_standbys_on_a_dead_owner_one_takes_over_the_other_keeps_watching() -> None:
    store = SimStore()
    dead = Harness.started(store, OWNER, identity="a")
    b = standby(store, "b")
    c = standby(store, "c")
    b.auto = c.auto = False
    # Both watch in lockstep, so both find the lease lapsed in the same poll, and their
    # takeovers interleave effect by effect.
    for _ in range(400):
        for h in (b, c):
            h.now += 0.25
            h.broker.tick(h.now)
            h._collect()
        while b.pending or c.pending:
            for h in (b, c):
                if h.pending:
                    h.deliver(0)
        if Phase.RUNNING in (b.broker.phase, c.broker.phase) and not (b.pending or c.pending):
            break
    phases = sorted(h.broker.phase.value for h in (b, c))
    assert phases == ["running", "standby"]
    winner, loser = (b, c) if b.broker.phase is Phase.RUNNING else (c, b)
    assert owner_of(store)[0] == winner.broker.identity
    assert dead.broker.phase is Phase.RUNNING  # never advanced: dead
    winner.auto = loser.auto = True
    run(5 * LEASE, winner, loser)
    assert loser.broker.phase is Phase.STANDBY, "the new owner renews: keep watching"
    reply = loser.push()
    assert reply is not None
    assert isinstance(reply.error, NotOwner)
    assert reply.error.new_identity == winner.broker.identity


def test_a_paused_owner_resumed_after_the_takeover_never_writes_again() -> None:
    store = SimStore()
    old = Harness.started(store, OWNER, identity="a")
    b = standby(store, "b")
    run(LEASE, old, b)
    run(LEASE + 1, b)  # `old` is paused (SIGSTOP): its clock and effects stand still
    assert b.broker.phase is Phase.RUNNING
    state_before = store.objects["state.json"]
    old.advance(LEASE + 1)  # resumed: its renewal write conflicts and finds the new owner
    reply = old.push()
    assert old.broker.phase is Phase.FAILED
    assert isinstance(old.broker.failure, BrokerReplaced)
    assert reply is not None
    assert isinstance(reply.error, BrokerReplaced)
    assert owner_of(store) == ("b", 2)
    assert store.objects["state.json"] == state_before, "the old owner wrote nothing"


def test_a_takeover_that_finds_the_owner_wrote_after_all_steps_back() -> None:
    store = SimStore()
    owner = Harness.started(store, OWNER, identity="a")
    b = standby(store, "b")
    b.auto = False
    while b.broker.phase is Phase.STANDBY:  # the owner is silent for a lease ...
        b.now += 0.25
        b.broker.tick(b.now)
        b._collect()
        while b.pending and b.broker.phase is Phase.STANDBY:
            b.deliver(0)
        assert b.now < 1000 + LEASE + 2
    assert b.broker.phase is Phase.STARTING
    assert b.pending_of(ReadObject), "the takeover reads the state"
    owner.push()  # ... and writes just now: alive after all
    queued = b.push()  # queued while b takes over
    assert queued is None
    while b.pending:
        b.deliver(0)
    assert b.broker.phase is Phase.STANDBY
    answered = b.replies[b._next_request]
    assert isinstance(answered.error, NotOwner), "what it queued is answered, not kept"
    assert owner_of(store) == ("a", 1)
    assert not any(isinstance(e, WriteObject) for e in b.pending)


def test_stopping_a_standby_writes_nothing() -> None:
    store = SimStore()
    Harness.started(store, OWNER, identity="a")
    b = standby(store, "b")
    version = store.objects["state.json"][1]
    b.broker.stop(b.now)
    b.flush()
    assert b.broker.phase is Phase.STOPPED
    assert store.objects["state.json"][1] == version
    assert b.broker.next_deadline() is None


def test_a_corrupt_state_fails_a_standby_without_writing() -> None:
    store = SimStore()
    store.put("state.json", b"{not json")
    b = standby(store, "b")
    assert b.broker.phase is Phase.FAILED
    assert isinstance(b.broker.failure, CorruptState)
    assert store.get("state.json") == b"{not json"


def test_a_standby_checks_by_version_only_while_the_owner_is_busy() -> None:
    store = SimStore()
    owner = Harness.started(store, OWNER, identity="a")
    b = standby(store, "b")
    b.auto = False
    reads = versions = 0
    for _ in range(40):
        owner.push()
        owner.advance(0.5)
        b.now += 0.5
        b.broker.tick(b.now)
        b._collect()
        while b.pending:
            effect = b.pending[0]
            reads += isinstance(effect, ReadObject)
            versions += isinstance(effect, ReadVersion)
            b.deliver(0)
    assert versions >= 38
    assert reads == 0


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"owner_lease": 0.5}, "owner_lease must lie"),
        ({"owner_lease": 4000.0}, "owner_lease must lie"),
        ({"standby": True}, "a standby needs an owner_lease"),
        ({"owner_lease": 2.0, "standby": True, "standby_poll": 1.5}, "standby_poll"),
    ],
)
def test_bad_lease_settings_are_refused(config: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BrokerConfig(**config)  # type: ignore[arg-type]


def test_a_lease_in_an_older_schema_is_corrupt() -> None:
    h = Harness.started(config=OWNER)
    data = h.store.get("state.json")
    assert data is not None
    with pytest.raises(CorruptState, match="lease"):
        decode_state(data.replace(b'"schema_version":4', b'"schema_version":3'))
    with pytest.raises(CorruptState, match="lease"):
        decode_state(data.replace(b'"lease":6.0', b'"lease":0.01'))


def test_notowner_before_the_first_read_names_nobody() -> None:
    broker = Broker(STANDBY, identity="b", incarnation="b-1")
    broker.start(0.0)
    broker.submit(_push(1), 0.0)
    replies = [e for e in broker.take_effects() if not isinstance(e, ReadObject)]
    assert len(replies) == 1
    assert isinstance(replies[0].error, NotOwner)
    assert "not read the state yet" in str(replies[0].error)  # type: ignore[union-attr]


def _push(request_id: int):  # type: ignore[no-untyped-def]
    from osqueue_core import Push

    return Push(request_id, b"x")
