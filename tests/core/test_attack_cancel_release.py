"""Attack: a claim granted in the batch that the final (release) write commits, and
cancelled while that write is on its way, is answered NothingToClaim but never handed
back: ``_landed`` returns before the abandoned grants when the write releases
ownership. The job is stored claimed by a worker that never received it, and counts
the attempt (with max_attempts=1 the successor dead-letters a job nobody ran)."""

from __future__ import annotations

import orjson

from osqueue_core import (
    BrokerConfig,
    Claim,
    JobStatus,
    NothingToClaim,
    Phase,
    RetryPolicy,
    decode_state,
)

from .harness import Harness

CONFIG = BrokerConfig(heartbeat_timeout=10, retry=RetryPolicy(base=0, max_attempts=1))


def test_a_claim_cancelled_during_the_release_write_is_handed_back() -> None:
    h = Harness.started(config=CONFIG)
    a = h.push(b"a").result.job_id  # type: ignore[union-attr]
    h.auto = False
    h.push(b"b")  # a write in flight
    claim = Claim(h.request_id(), "w1")
    h.submit(claim)  # grants a in the open batch
    h.broker.stop(h.now)
    h.flush()
    h.deliver(0)  # the push lands; the open batch goes out as the release write
    assert len(h.pending) == 1
    h.broker.cancel_claim(claim.request_id, h.now)  # the caller left
    h.flush()
    assert h.replies[claim.request_id].result == NothingToClaim()
    h.deliver_all()  # the release write lands, and one more carries the hand-back
    assert h.broker.phase is Phase.STOPPED
    stored = {j.id: j for j in decode_state(h.store.get("state.json")).jobs}  # type: ignore[arg-type]
    assert stored[a].status is JobStatus.READY, (
        f"{a} stored {stored[a].status.value} by {stored[a].claimed_by!r}, "
        f"attempts={stored[a].attempts}, though its claim was answered NothingToClaim"
    )


def test_the_successor_does_not_dead_letter_a_job_nobody_received() -> None:
    h = Harness.started(config=CONFIG)
    a = h.push(b"a").result.job_id  # type: ignore[union-attr]
    h.auto = False
    h.push(b"b")
    claim = Claim(h.request_id(), "w1")
    h.submit(claim)
    h.broker.stop(h.now)
    h.flush()
    h.deliver(0)
    h.broker.cancel_claim(claim.request_id, h.now)
    h.flush()
    h.deliver_all()
    successor = Harness.started(h.store, config=CONFIG, identity="successor")
    successor.advance(11)  # the inherited lease runs out: attempts (1) >= max_attempts
    archived = [
        job
        for key in successor.store.keys("archive/")
        for job in orjson.loads(successor.store.get(key))["jobs"]  # type: ignore[arg-type]
    ]
    dead = [job for job in archived if job["id"] == a]
    assert not dead, f"dead-lettered without ever reaching a worker: {dead}"
