"""Gather after release: a dirty batch waits for the callers the last write released."""

from __future__ import annotations

import pytest

from osqueue_core import BrokerConfig, WriteObject

from .harness import Harness

WRITE = 0.05  # seconds every state write takes in these tests


def state_writes(h: Harness) -> list[int]:
    return h.pending_of(WriteObject, "state.json")


def closed_loop(config: BrokerConfig, callers: int, rounds: int) -> list[int]:
    """``callers`` pushers that push again as soon as their push is acknowledged, over a
    store whose writes take ``WRITE`` seconds; returns the pushes acknowledged per write."""
    h = Harness.started(config=config)
    h.auto = False
    for _ in range(callers):
        h.push()
    sizes = []
    for _ in range(rounds):
        if not state_writes(h):  # the batch is gathering: let its wait run out
            deadline = h.broker.next_deadline()
            assert deadline is not None, "a dirty batch with no write and no deadline"
            h.advance(deadline - h.now)
        [index] = state_writes(h)
        h.advance(WRITE)
        before = set(h.replies)
        h.deliver(index)
        released = [rid for rid in h.replies if rid not in before]
        sizes.append(len(released))
        for _ in released:  # every caller comes straight back
            h.push()
    return sizes


def test_a_closed_loop_fills_every_write_with_every_caller() -> None:
    sizes = closed_loop(BrokerConfig(), callers=64, rounds=8)
    assert sizes == [1] + [64] * 7


def test_without_gathering_a_closed_loop_writes_half_batches() -> None:
    # The problem gathering solves: the callers one write released always miss the next.
    sizes = closed_loop(BrokerConfig(gather=0), callers=64, rounds=8)
    assert sizes == [1, 63, 1, 63, 1, 63, 1, 63]


def test_a_caller_that_does_not_come_back_costs_a_share_of_the_write_latency() -> None:
    h = Harness.started(config=BrokerConfig(gather=0.5, gather_max=1.0))
    h.auto = False
    h.push()  # goes out alone
    h.push()  # arrives during the write
    h.advance(WRITE)
    h.deliver(state_writes(h)[0])  # releases the first push's caller
    landed = h.now
    # The second push waits for that caller, at most half the measured write latency.
    assert state_writes(h) == []
    assert h.broker.next_deadline() == pytest.approx(landed + 0.5 * WRITE)
    h.advance(0.5 * WRITE - 0.001)
    assert state_writes(h) == []
    h.advance(0.001)
    assert len(state_writes(h)) == 1
    h.advance(WRITE)
    h.deliver(state_writes(h)[0])
    assert len(h.replies) == 2


def test_a_caller_coming_back_ends_the_wait_at_once() -> None:
    h = Harness.started()
    h.auto = False
    h.push()
    h.push()
    h.advance(WRITE)
    h.deliver(state_writes(h)[0])
    assert state_writes(h) == []
    h.push()  # the released caller is back: nothing more to wait for
    assert len(state_writes(h)) == 1


def test_an_idle_queue_writes_a_push_at_once() -> None:
    h = Harness.started()
    h.auto = False
    h.push()
    h.advance(WRITE)
    h.deliver(state_writes(h)[0])
    h.advance(1.0)  # idle for longer than any wait
    h.push()
    assert len(state_writes(h)) == 1


def test_a_full_batch_does_not_wait() -> None:
    h = Harness.started(config=BrokerConfig(max_batch_ops=4))
    h.auto = False
    for _ in range(5):
        h.push()  # 1 goes out, 4 fill the next batch
    h.advance(WRITE)
    h.deliver(state_writes(h)[0])  # releases 1: the full batch of 4 goes at once
    assert len(state_writes(h)) == 1
    h.advance(WRITE)
    h.deliver(state_writes(h)[0])  # releases 4
    for _ in range(4):
        h.push()
    assert len(state_writes(h)) == 1, "four came back and the batch is full"


def test_the_wait_is_capped() -> None:
    h = Harness.started(config=BrokerConfig(gather=10, gather_max=0.02))
    h.auto = False
    h.push()
    h.push()
    h.advance(1.0)  # a slow write: 10 x 1 s would be a long wait
    h.deliver(state_writes(h)[0])
    assert h.broker.next_deadline() == pytest.approx(h.now + 0.02)


@pytest.mark.parametrize("bad", [{"gather": -1}, {"gather_max": -0.1}, {"gather": float("nan")}])
def test_bad_gather_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="gather"):
        BrokerConfig(**bad)  # type: ignore[arg-type]
