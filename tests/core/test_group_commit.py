"""Group commit: one write in flight, the next batch gathers behind it, acks only after."""

from __future__ import annotations

from osqueue_core import BrokerConfig, Push, Pushed, WriteObject, decode_state

from .harness import Harness


def test_commands_during_a_write_form_one_next_batch() -> None:
    h = Harness.started()
    h.auto = False
    h.push(b"first")  # goes out alone
    assert len(h.pending_of(WriteObject, "state.json")) == 1
    for i in range(10):
        h.push(bytes([i]))
    assert len(h.pending) == 1, "no second write while one is in flight"
    assert h.replies == {}, "nothing acknowledged before its write lands"
    h.deliver(0)
    assert [r.request_id for r in h.replies.values()] == [1]
    assert len(h.pending_of(WriteObject, "state.json")) == 1, "the ten pushes go out together"
    h.deliver(0)
    assert len(h.replies) == 11
    assert h.writes == 3  # takeover + 2 batches
    assert len(decode_state(h.store.get("state.json")).jobs) == 11  # type: ignore[arg-type]


def test_empty_claims_and_heartbeats_write_nothing() -> None:
    h = Harness.started()
    writes = h.writes
    for _ in range(5):
        assert h.claim() is not None
    assert h.writes == writes
    h.push()
    job = h.claim().result.job_id  # type: ignore[union-attr]
    writes = h.writes
    for _ in range(5):
        h.heartbeat(job)
    assert h.writes == writes
    assert h.reads >= 5  # each heartbeat batch confirmed ownership by a read


def test_batch_cap_on_operations() -> None:
    h = Harness.started(config=BrokerConfig(max_batch_ops=3))
    h.auto = False
    h.push()
    for _ in range(7):
        h.push()
    sizes = []
    while h.pending:
        before = len(h.replies)
        h.deliver(0)
        sizes.append(len(h.replies) - before)
    assert sizes == [1, 3, 3, 1]


def test_batch_cap_on_bytes() -> None:
    h = Harness.started(config=BrokerConfig(max_batch_bytes=100, max_payload_bytes=100))
    h.auto = False
    h.push(b"x")
    for _ in range(4):
        h.push(b"y" * 60)
    sizes = []
    while h.pending:
        before = len(h.replies)
        h.deliver(0)
        sizes.append(len(h.replies) - before)
    assert sizes == [1, 2, 2]


def test_linger_gathers_a_batch_and_sets_a_deadline() -> None:
    h = Harness.started(config=BrokerConfig(linger=0.5))
    h.auto = False
    h.push()
    assert h.pending == []
    assert h.broker.next_deadline() == h.now + 0.5
    h.push()
    h.now += 0.5
    h.broker.tick(h.now)
    h.flush()
    assert len(h.pending_of(WriteObject, "state.json")) == 1
    h.deliver(0)
    assert all(isinstance(r.result, Pushed) for r in h.replies.values())
    assert len(h.replies) == 2


def test_commands_before_takeover_wait_for_it() -> None:
    from osqueue_core import Broker

    from .harness import SimStore

    broker = Broker(identity="a", incarnation="a-1")
    h = Harness(broker, SimStore())
    h.auto = False
    broker.start(h.now)
    broker.submit(Push(1, b"early"), h.now)
    h.flush()
    assert h.replies == {}
    h.auto = True
    while h.pending:
        h.deliver(0)
    assert h.replies[1].result == Pushed("000000000000-1")
