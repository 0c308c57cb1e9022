"""Bounded queues in the core: commands waiting for room and claims waiting for a job
(hardening item 9). Before: both were unbounded, so a flood grew the broker's memory
without limit."""

from __future__ import annotations

from osqueue_core import BrokerConfig, Claim, Overloaded, Push, Pushed

from .harness import Harness


def test_commands_beyond_the_queue_limit_are_refused_and_the_rest_committed() -> None:
    h = Harness.started(config=BrokerConfig(max_batch_ops=1, max_queued_commands=2))
    h.auto = False
    ids = [h.request_id() for _ in range(6)]
    for rid in ids:
        h.broker.submit(Push(rid, b"x"), h.now)
    h.flush()
    # One in the write on its way, one in the open batch, two queued: the rest refused.
    refused = [rid for rid in ids if rid in h.replies]
    assert refused == ids[4:]
    for rid in refused:
        error = h.replies[rid].error
        assert isinstance(error, Overloaded)
        assert error.retryable
        assert error.grpc_status == "RESOURCE_EXHAUSTED"
    h.deliver_all()
    assert all(isinstance(h.replies[rid].result, Pushed) for rid in ids[:4])


def test_queued_payload_bytes_are_bounded_too() -> None:
    h = Harness.started(config=BrokerConfig(max_batch_ops=1, max_queued_bytes=100))
    h.auto = False
    for _ in range(3):
        h.push(b"x" * 60)  # in flight, open batch, queued
    reply = h.push(b"y" * 60)  # 120 bytes queued would pass the limit
    assert isinstance(reply.error, Overloaded)  # type: ignore[union-attr]


def test_waiting_claims_beyond_the_limit_are_refused() -> None:
    h = Harness.started(config=BrokerConfig(max_waiting_claims=2))
    for _ in range(2):
        assert h.submit(Claim(h.request_id(), "w", wait=30)) is None  # waiting
    reply = h.submit(Claim(h.request_id(), "w", wait=30))
    assert isinstance(reply.error, Overloaded)  # type: ignore[union-attr]
    assert h.broker.stats().waiting_claims == 2
