"""Group commit: one write in flight, the next batch gathers behind it, acks only after."""

from __future__ import annotations

import pytest

from osqueue_core import BrokerConfig, InvalidArgument, Push, Pushed, WriteObject, decode_state

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


def test_commands_submitted_together_share_one_write() -> None:
    h = Harness.started()
    h.auto = False
    writes = h.writes
    commands = [Push(h.request_id(), bytes([i])) for i in range(5)]
    h.broker.submit_many(commands, h.now)
    h.flush()
    assert len(h.pending_of(WriteObject, "state.json")) == 1, "one write carries all five"
    h.deliver(0)
    assert [r.request_id for r in h.replies.values()] == [c.request_id for c in commands]
    assert all(isinstance(r.result, Pushed) for r in h.replies.values())
    assert h.writes == writes + 1


def test_commands_submitted_together_beyond_the_cap_fill_the_next_batch() -> None:
    h = Harness.started(config=BrokerConfig(max_batch_ops=3))
    h.auto = False
    h.broker.submit_many([Push(h.request_id(), b"x") for _ in range(7)], h.now)
    h.flush()
    answered = []
    while h.pending:
        h.deliver(0)
        answered.append(len(h.replies))
    assert answered == [3, 6, 7]


def test_submit_many_refuses_them_all_for_one_bad_request_id() -> None:
    h = Harness.started()
    good = Push(h.request_id(), b"x")
    with pytest.raises(InvalidArgument):
        h.broker.submit_many([good, Push([1], b"y")], h.now)  # type: ignore[arg-type]
    h.flush()
    assert h.replies == {}, "nothing was done"
