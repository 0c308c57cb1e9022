"""Core bugs the model test (tests/core/test_model.py) found in segments (stage 1),
each reduced to its smallest example and kept as a regression test.

Both were fixed in the core: a command's segments stay loaded until it is applied
(``SegmentIndex.pinned``), and read-ahead that must wait for room drops its due retry.
The third (due windows, stage 2) too: a waiting claim whose wait ends while its job is
being read becomes a claim without wait at the head of the commands.
"""

from __future__ import annotations

from osqueue_core import (
    BrokerConfig,
    Claim,
    Claimed,
    JobNotDead,
    NewJob,
    Purge,
    PushBatch,
    ReadObject,
    StorageUnavailable,
)

from .harness import Harness


def test_a_command_naming_jobs_in_two_segments_is_applied_with_a_small_cache() -> None:
    """A purge (or redrive) by ids names untouched jobs of two segments, and the cache
    holds fewer than two. The broker reads the first segment, then the second, whose
    room is made by evicting the first, which the purge still needs: it reads the first
    again, evicting the second... The purge is never applied (it is answered
    StorageUnavailable after ``stall_timeout``), and the broker reads segments back to
    back meanwhile. (Likely fix: keep the segments the head command needs loaded until
    it is applied, overfilling the cache for a while as a demanded read already may.)"""
    config = BrokerConfig(spill_jobs=2, segment_jobs=2, segment_cache_bytes=1, read_ahead=0)
    h = Harness.started(config=config)
    first = h.submit(PushBatch(h.request_id(), (b"a", b"b")))
    second = h.submit(PushBatch(h.request_id(), (b"c", b"d")))
    assert first is not None
    assert second is not None
    assert h.broker.stats().segments == 2
    ids = (first.result.job_ids[0], second.result.job_ids[0])  # type: ignore[union-attr]
    h.auto = False
    purge = Purge(h.request_id(), ids)
    reads = 0
    h.submit(purge)
    while h.pending and reads < 10:
        reads += isinstance(h.pending[0], ReadObject)
        h.deliver(0)
    reply = h.replies.get(purge.request_id)
    assert reply is not None, f"not applied after {reads} segment reads"
    assert isinstance(reply.error, JobNotDead)


def test_a_failed_read_that_read_ahead_still_wants_keeps_next_deadline_in_the_future() -> None:
    """A claim needs a segment; its read fails (a backoff is armed); the claim waits
    ``stall_timeout`` and is answered StorageUnavailable, which clears the demand. The
    segment is still wanted by read-ahead, but the cache has no room for it, so the
    reader neither reads it nor drops its backoff: ``next_deadline()`` stays in the past
    and a runtime ticking at it would spin. (Likely fix: drop the backoff of a key the
    pump passes over, or stop wanting what cannot get room.)"""
    config = BrokerConfig(spill_jobs=2, segment_jobs=3, segment_cache_bytes=1, read_ahead=1)
    h = Harness.started(config=config)
    h.submit(PushBatch(h.request_id(), (b"a", b"b")))
    assert h.broker.stats().segments == 1
    h.auto = False
    claim = Claim(h.request_id(), "w1", 0.0)
    h.submit(claim)
    h.deliver(h.pending_of(ReadObject, "segments/")[0], "failed")
    h.advance(config.stall_timeout + 1)
    reply = h.replies.get(claim.request_id)
    assert reply is not None
    assert isinstance(reply.error, StorageUnavailable)
    deadline = h.broker.next_deadline()
    assert deadline is None or deadline > h.now, (deadline, h.now)


def test_a_waiting_claim_whose_wait_ends_as_its_job_falls_due_in_a_segment_gets_it() -> None:
    """Jobs with a run-at spill into a segment this broker attached and never read (the
    cache holds none, no read-ahead). A claim waits 3 s; the jobs fall due at that very
    tick: the waiting claim is woken, must wait for the segment's read, and its wait
    ended in the same input, so it was answered NothingToClaim while a job was due,
    where a broker that never spills hands the job over (found by the long model run).
    (Fixed: it becomes a claim without wait at the head of the commands, applied once
    the read lands.)"""
    config = BrokerConfig(spill_jobs=2, segment_jobs=3, segment_cache_bytes=1, read_ahead=0)
    wall = 1_795_000_000.0
    h = Harness.started(config=config, wall=wall)
    jobs = (NewJob(b"a", run_at=wall + 3.0), NewJob(b"b", run_at=wall + 3.0))
    pushed = h.submit(PushBatch(h.request_id(), jobs))
    assert pushed is not None
    assert h.broker.stats().untouched == 2
    claim = Claim(h.request_id(), "w1", 3.0)
    h.submit(claim)
    assert claim.request_id not in h.replies
    h.advance(3.0)
    reply = h.replies.get(claim.request_id)
    assert reply is not None
    assert isinstance(reply.result, Claimed), reply
    assert reply.result.job_id == pushed.result.job_ids[0]  # type: ignore[union-attr]
