"""Storage that keeps failing makes the broker answer ``StorageUnavailable`` instead of
nothing (hardening item 11: a full disk showed clients only timeouts while the broker
logged ENOSPC), and confirmations cost a version check, not a download (item 11)."""

from __future__ import annotations

from osqueue_core import (
    BrokerConfig,
    Claim,
    JobStatus,
    ObjectRead,
    Pushed,
    ReadObject,
    ReadVersion,
    StorageUnavailable,
)

from .harness import Harness

CONFIG = BrokerConfig(stall_timeout=5, retry_initial=1, retry_max=1, heartbeat_timeout=60)


def fail_every_write_for(h: Harness, seconds: float) -> None:
    end = h.now + seconds
    while h.now < end:
        while h.pending:
            h.deliver(0, "failed")
        h.advance(1)


def test_held_and_new_requests_get_storage_unavailable_then_recover() -> None:
    h = Harness.started(config=CONFIG)
    h.push(b"before")
    h.auto = False
    held = h.push(b"during")
    assert held is None
    claim = Claim(h.request_id(), "w1")
    h.submit(claim)  # grants the first job, in the same unwritten batch
    fail_every_write_for(h, 5)
    error = h.replies[2].error
    assert isinstance(error, StorageUnavailable)
    assert error.retryable
    assert "injected" in str(error), "it says what storage said"
    assert isinstance(h.replies[claim.request_id].error, StorageUnavailable)
    assert h.broker.stats().stalled
    assert h.broker.stats().stalls == 1
    refused = h.push(b"while stalled")
    assert isinstance(refused.error, StorageUnavailable)  # type: ignore[union-attr]
    # Storage comes back: the batch is written, the claim's grant was taken back.
    h.auto = True
    h.advance(1)
    assert not h.broker.stats().stalled
    first = h.broker.job("000000000000-1")
    assert first.status is JobStatus.READY  # type: ignore[union-attr]
    assert first.attempts == 0  # type: ignore[union-attr]
    assert isinstance(h.push(b"after").result, Pushed)  # type: ignore[union-attr]


def test_a_hung_operation_counts_as_a_stall_too() -> None:
    h = Harness.started(config=CONFIG)
    h.auto = False
    h.push(b"never answered")
    h.advance(5)  # the write is still in flight: no answer at all
    assert isinstance(h.replies[1].error, StorageUnavailable)


def test_a_batch_of_heartbeats_is_confirmed_by_a_version_check() -> None:
    """Before: confirming ownership downloaded the whole state object."""
    h = Harness.started()
    h.push()
    job = h.claim().result.job_id  # type: ignore[union-attr]
    h.auto = False
    h.heartbeat(job)
    assert [type(e) for e in h.pending] == [ReadVersion]
    h.deliver(0)
    assert h.replies[3].ok


def test_a_changed_version_is_looked_into_before_a_heartbeat_is_confirmed() -> None:
    h = Harness.started()
    h.push()
    job = h.claim().result.job_id  # type: ignore[union-attr]
    data = h.store.get("state.json")
    h.store.put("state.json", data)  # type: ignore[arg-type]  # same bytes, new version
    h.auto = False
    h.heartbeat(job)
    h.deliver(0)  # the version differs ...
    assert [type(e) for e in h.pending] == [ReadObject]
    result = h.deliver(0)  # ... so the state is read: still ours, same revision
    assert isinstance(result, ObjectRead)
    assert h.replies[3].ok
    h.auto = True
    assert h.push().ok  # type: ignore[union-attr]  # and the next write uses the new version
    assert [type(e) for e in h.pending] == []


def test_a_stall_from_a_hung_operation_says_so() -> None:
    h = Harness.started(config=CONFIG)
    h.auto = False
    h.push()
    h.advance(5)
    message = str(h.replies[1].error)
    assert "no answer for 5.0s" in message
    assert "write revision" in message
    assert "no answer" in h.broker.stats().last_storage_error
