"""Takeover, fencing, ambiguous writes, and state the broker must never overwrite."""

from __future__ import annotations

import pytest

from osqueue_core import (
    Broker,
    BrokerConfig,
    BrokerNotRunning,
    BrokerReplaced,
    CorruptState,
    JobStatus,
    Phase,
    Pushed,
    UnsupportedSchema,
    WriteObject,
    decode_state,
)

from .harness import Harness, SimStore


def stored(h: Harness):  # type: ignore[no-untyped-def]
    return decode_state(h.store.get("state.json"))  # type: ignore[arg-type]


def test_second_broker_takes_over_and_first_fails_fast_naming_it() -> None:
    store = SimStore()
    a = Harness.started(store, identity="a")
    a.push(b"kept")
    b = Harness.started(store, identity="b")
    assert stored(b).header.owner.epoch == 2
    reply = a.push(b"lost")  # a's write conflicts, its re-read shows epoch 2
    assert isinstance(reply.error, BrokerReplaced)  # type: ignore[union-attr]
    assert reply.error.new_identity == "b"  # type: ignore[union-attr]
    assert a.broker.phase is Phase.FAILED
    writes = a.writes
    later = a.push(b"later")
    assert isinstance(later.error, BrokerReplaced)  # type: ignore[union-attr]
    assert a.writes == writes, "a replaced broker never writes again"
    assert [j.payload for j in stored(b).jobs] == [b"kept"]


def test_a_replaced_broker_cannot_extend_leases() -> None:
    store = SimStore()
    a = Harness.started(store, identity="a", config=BrokerConfig(heartbeat_timeout=10))
    a.push()
    job = a.claim("w1").result.job_id  # type: ignore[union-attr]
    b = Harness.started(store, identity="b", config=BrokerConfig(heartbeat_timeout=10))
    # The heartbeat to the old broker is confirmed by a read, which shows epoch 2.
    assert isinstance(a.heartbeat(job, "w1").error, BrokerReplaced)  # type: ignore[union-attr]
    # The successor gave the job a full fresh lease from its takeover.
    assert b.broker.next_deadline() == b.now + 10
    assert b.heartbeat(job, "w1").ok  # type: ignore[union-attr]


def test_takeover_keeps_claims_and_grants_a_fresh_timeout() -> None:
    store = SimStore()
    a = Harness.started(store, identity="a", config=BrokerConfig(heartbeat_timeout=10))
    a.push()
    job = a.claim("w1").result.job_id  # type: ignore[union-attr]
    b = Harness.started(store, identity="b", config=BrokerConfig(heartbeat_timeout=10), now=1009)
    assert b.broker.job(job).status is JobStatus.CLAIMED  # type: ignore[union-attr]
    b.advance(9.9)
    assert b.broker.job(job).status is JobStatus.CLAIMED  # type: ignore[union-attr]
    b.advance(0.1)
    assert b.broker.job(job).status is JobStatus.READY  # type: ignore[union-attr]


@pytest.mark.parametrize("outcome", ["unknown_landed", "unknown_lost", "conflict"])
def test_ambiguous_write_is_resolved_without_applying_twice(outcome) -> None:  # type: ignore[no-untyped-def]
    h = Harness.started()
    h.auto = False
    h.push(b"once")
    h.deliver(0, outcome)  # the write fails ambiguously (or a spurious conflict)
    h.deliver(0)  # the read that finds out whether it landed
    if outcome != "unknown_landed":
        assert h.pending == [], "the same bytes are sent again, after a backoff"
        deadline = h.broker.next_deadline()
        assert deadline is not None
        h.advance(deadline - h.now)
    while h.pending:
        h.deliver(0)
    assert isinstance(h.replies[1].result, Pushed)
    jobs = stored(h).jobs
    assert [j.payload for j in jobs] == [b"once"], "exactly one job, never a duplicate"


def test_known_failure_is_retried_after_backoff() -> None:
    h = Harness.started(config=BrokerConfig(retry_initial=0.5, retry_max=2))
    h.auto = False
    h.push()
    h.deliver(0, "failed")
    assert h.pending == []
    assert h.broker.next_deadline() == h.now + 0.5
    h.advance(0.5)
    assert len(h.pending_of(WriteObject, "state.json")) == 1
    h.deliver(0)
    assert h.replies[1].ok


def test_repeated_ambiguous_writes_back_off_and_never_busy_loop() -> None:
    h = Harness.started(config=BrokerConfig(retry_initial=0.5, retry_max=4, stall_timeout=60))
    h.auto = False
    h.push()
    delays = []
    for _ in range(5):
        h.deliver(0, "unknown_lost")  # the write: outcome unknown
        h.deliver(0)  # the read: it did not land
        deadline = h.broker.next_deadline()
        assert deadline is not None
        assert deadline > h.now, "a deadline in the past would make a runtime spin"
        delays.append(deadline - h.now)
        h.advance(deadline - h.now)
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0]
    h.deliver(0)
    assert h.replies[1].ok


def test_wrong_answer_kind_is_a_typed_error_and_changes_nothing() -> None:
    from osqueue_core import InvalidArgument, ObjectRead, ObjectWritten

    h = Harness.started()
    h.auto = False
    h.push()
    write = h.pending[0]
    with pytest.raises(InvalidArgument):
        h.broker.receive(ObjectRead(write.op_id, None, None), h.now)  # type: ignore[union-attr]
    assert h.broker.take_effects() == []
    h.broker.receive(ObjectWritten(write.op_id, 99), h.now)  # type: ignore[union-attr]
    h.flush()
    assert h.replies[1].ok


def test_unreachable_storage_at_start_fails_with_a_clear_error() -> None:
    broker = Broker(BrokerConfig(start_attempts=3), identity="a", incarnation="a-1")
    h = Harness(broker, SimStore())
    h.auto = False
    broker.start(h.now)
    h.flush()
    for _ in range(3):
        h.deliver(0, "failed")
        h.advance(10)
    assert broker.phase is Phase.FAILED
    assert isinstance(broker.failure, BrokerNotRunning)
    assert "3 attempts" in str(broker.failure)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"{not json", CorruptState),
        (b'{"schema_version":99,"whatever":true}', UnsupportedSchema),
        (b'{"schema_version":1,"revision":1,"jobs":[]}', CorruptState),
    ],
)
def test_unreadable_state_is_never_overwritten(data, error) -> None:  # type: ignore[no-untyped-def]
    store = SimStore()
    store.objects["state.json"] = (data, 1)
    h = Harness.started(store)
    assert h.broker.phase is Phase.FAILED
    assert isinstance(h.broker.failure, error)
    assert h.writes == 0
    assert store.objects["state.json"] == (data, 1)
    reply = h.push()
    assert isinstance(reply.error, error)  # type: ignore[union-attr]


def test_restart_recovers_everything_acknowledged() -> None:
    store = SimStore()
    a = Harness.started(store, identity="a")
    ids = [a.push(bytes([i])).result.job_id for i in range(3)]  # type: ignore[union-attr]
    claimed = a.claim("w1").result.job_id  # type: ignore[union-attr]
    b = Harness.started(store, identity="a", incarnation="a-2")
    assert b.complete(claimed, "w1").ok  # type: ignore[union-attr]
    assert [b.claim("w2").result.job_id for _ in range(2)] == ids[1:]  # type: ignore[union-attr]


def test_stop_finishes_in_flight_work_and_releases_ownership() -> None:
    h = Harness.started()
    h.auto = False
    h.push(b"a")
    h.push(b"b")  # waits behind the first write
    h.broker.stop(h.now)
    h.flush()
    assert isinstance(h.push(b"c").error, Exception)  # type: ignore[union-attr]
    while h.pending:
        h.deliver(0)
    assert h.broker.phase is Phase.STOPPED
    assert h.replies[1].ok
    assert h.replies[2].ok
    assert stored(h).header.owner.released is True
    assert [j.payload for j in stored(h).jobs] == [b"a", b"b"]


def test_idle_broker_with_ownership_check_notices_a_takeover() -> None:
    store = SimStore()
    config = BrokerConfig(ownership_check=5)
    a = Harness.started(store, identity="a", config=config)
    assert a.broker.next_deadline() == a.now + 5
    reads = a.reads
    a.advance(5)
    assert a.reads == reads + 1, "one read per interval while idle"
    assert a.broker.phase is Phase.RUNNING
    Harness.started(store, identity="b", now=a.now)
    a.advance(5)
    assert a.broker.phase is Phase.FAILED
    assert isinstance(a.broker.failure, BrokerReplaced)
    assert a.broker.next_deadline() is None


def test_without_ownership_check_an_idle_broker_stays_silent() -> None:
    h = Harness.started()
    reads, writes = h.reads, h.writes
    h.advance(3600)
    assert (h.reads, h.writes) == (reads, writes)


def test_a_newer_osqueue_taking_over_is_reported_as_a_replacement() -> None:
    import orjson

    store = SimStore()
    a = Harness.started(store, identity="old", config=BrokerConfig(heartbeat_timeout=10))
    a.push()
    job = a.claim("w1").result.job_id  # type: ignore[union-attr]
    # A newer osqueue (schema 2) takes the state over during a rolling upgrade.
    state = orjson.loads(store.get("state.json"))  # type: ignore[arg-type]
    state["schema_version"] = 2
    state["owner"] = {"identity": "new", "incarnation": "n-1", "epoch": 2, "address": "h:1"}
    store.objects["state.json"] = (orjson.dumps(state), store.counter + 1)
    reply = a.heartbeat(job, "w1")  # confirmed by a read of the newer state
    assert isinstance(reply.error, BrokerReplaced)  # type: ignore[union-attr]
    assert (reply.error.new_identity, reply.error.new_epoch) == ("new", 2)  # type: ignore[union-attr]
    assert reply.error.retryable  # type: ignore[union-attr]


def test_a_newer_schema_without_a_newer_owner_is_unsupported_and_untouched() -> None:
    store = SimStore()
    a = Harness.started(store, identity="old")
    data = store.get("state.json").replace(b'"schema_version":4', b'"schema_version":5')  # type: ignore[union-attr]
    store.objects["state.json"] = (data, store.counter + 1)
    a.advance(1)
    a.push()
    assert isinstance(a.broker.failure, UnsupportedSchema)
    assert a.broker.failure.grpc_status == "UNAVAILABLE"
    assert store.get("state.json") == data
